"""The settings and the words every layer shares: params (every knob, validated once when params.yaml is
loaded), the one-line user errors, the devices a run may use. Everything else imports from here; this imports
nothing of the project's."""

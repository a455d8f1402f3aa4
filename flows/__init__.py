"""Prefect flows: one per DVC stage (run by `dvc repro`), plus `pipeline` for the whole DAG.

Our domain loggers (`mvcaug.*`) are forwarded to Prefect at INFO, so they show in the console and
the UI with each run.
"""

import logging
import os

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "mvcaug")
# Offline by design: no telemetry calls from the ephemeral server.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
logging.getLogger("mvcaug").setLevel(logging.INFO)

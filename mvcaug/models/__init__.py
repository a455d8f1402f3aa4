"""mvcaug.models."""

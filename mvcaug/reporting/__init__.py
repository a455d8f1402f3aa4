"""mvcaug.reporting."""

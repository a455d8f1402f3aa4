"""mvcaug.core."""

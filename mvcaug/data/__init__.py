"""mvcaug.data."""

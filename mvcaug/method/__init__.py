"""mvcaug.method."""

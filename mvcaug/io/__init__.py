"""mvcaug.io."""

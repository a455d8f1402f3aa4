"""mvcaug.judging."""

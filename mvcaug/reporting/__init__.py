"""What a person reads: the report (one list of sections, two renderings through templates/), charts and
the train stage's plots."""

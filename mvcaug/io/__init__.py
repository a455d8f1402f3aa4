"""The one layer of the domain that touches files: atomic writes, stored tables and checkpoints, the content
cache, stage locks, code and file digests, stage times, and the catalog of the files' names (catalog.py); and
every read and write of the domain's own files: the params file, a user's image folders and caption file, a
prepared dataset's manifest and splits (images.py: the one split loader), synthetic sets, model weights
(models.py, classifiers.py, scorer_models.py, model_sources.py), fonts, the train plots. Elsewhere the domain
takes and returns data (tests/unit/test_layout.py holds the rule and its one exception)."""

"""The file names of the pretrain stage's output folder (<paths.pretrain>), defined once for the stages that
write them (pretrain) and read them (train's corpus cells, report), so none of the readers imports the training
code to know a name."""

__all__ = ["CORPUS", "CORPUS_GRID", "CURVE", "CURVE_TIMES", "METRICS", "MODEL_PARTS", "SAMPLES_GRID"]

CORPUS = "corpus.parquet"
"""The corpus's manifest (glyph, face, transform, caption, split) with each image's pixels."""
CURVE = "self_check.csv"
"""The self-check against training steps (step, sample_accuracy, heldout_accuracy, ratio)."""
CURVE_TIMES = "pretrain-self-check-times.csv"
"""In <paths.run>, not in the stage's output: the seconds of training at each self-check (step, seconds). Wall
time differs from run to run, and an output that held it would change with every rerun of identical weights and
rerun every stage after it."""
METRICS = "metrics.json"
CORPUS_GRID = "corpus_grid.png"
SAMPLES_GRID = "samples_grid.png"
MODEL_PARTS = ("unet", "scheduler", "codec.json", CORPUS, CURVE, CORPUS_GRID, SAMPLES_GRID)
"""What a pretraining run writes besides metrics.json and README.md (removed when pretrain.source is none)."""

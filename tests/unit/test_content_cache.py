"""The content-addressed cache, and incremental captioning/embedding through it on real data."""

from __future__ import annotations

import numpy as np
import pytest

from mvcaug.method.caption import (
    AttributeCaptioner, cache_namespace, caption_bodies, captioner_config, shard_rows, training_rows, uncached_rows,
)
from mvcaug.io.content_cache import ContentCache, config_digest, folder_listing, open_cache, text_key
from mvcaug.method.embed import encoder_config
from mvcaug.core.params import CaptionParams, EmbedParams, Params, PathsParams
from tasks.caption import caption_shard, plan_captions
from mvcaug.method.embed import embed_texts


def test_put_get_namespaces_and_first_value_wins(tmp_path):
    cache = ContentCache(tmp_path / "c" / "content.sqlite")
    assert cache.get_many("a", ["k1"]) == {}
    assert cache.put_many("a", {"k1": b"one", "k2": b"two"}) == 2
    cache.put_many("a", {"k1": b"changed"})
    cache.put_many("b", [("k1", b"other model")])
    assert cache.get_many("a", ["k1", "k2", "k3", "k1"]) == {"k1": b"one", "k2": b"two"}
    assert cache.get_many("b", ["k1", "k2"]) == {"k1": b"other model"}
    assert (cache.count("a"), cache.count()) == (2, 3)
    # a second handle (another process) sees the committed entries
    assert ContentCache(tmp_path / "c" / "content.sqlite").get_many("b", ["k1"]) == {"k1": b"other model"}


def test_many_keys_are_looked_up_in_chunks(tmp_path):
    cache = ContentCache(tmp_path / "content.sqlite")
    items = {f"key{k}": str(k).encode() for k in range(1500)}
    cache.put_many("n", items)
    assert cache.get_many("n", list(items)) == items


def test_a_failed_write_commits_nothing(tmp_path):
    cache = ContentCache(tmp_path / "content.sqlite")
    with pytest.raises(TypeError, match="'bad' holds NoneType"):
        cache.put_many("n", [("good", b"1"), ("bad", None)])  # fails mid-transaction: "good" rolls back
    assert cache.count() == 0


def test_config_digests_change_with_the_model(tmp_path):
    assert config_digest({"a": 1, "b": 2}) == config_digest({"b": 2, "a": 1}) != config_digest({"a": 1, "b": 3})
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.safetensors").write_bytes(b"x" * 10)
    before = folder_listing(model)
    (model / "weights.safetensors").write_bytes(b"y" * 11)
    assert folder_listing(model) != before
    assert folder_listing("org/hub-model") == "org/hub-model"
    assert text_key("a") != text_key("b")
    base = EmbedParams(device="cpu")
    assert encoder_config(base) != encoder_config(EmbedParams(device="cpu", max_length=16))
    assert captioner_config(CaptionParams(backend="file")) is None
    assert captioner_config(CaptionParams()) == {"id": AttributeCaptioner.id}


def test_embedding_with_a_cache_encodes_only_new_texts_and_equals_from_scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = EmbedParams(device="cpu", max_length=16)
    texts = [f"This is an image of {k % 3}. A thin, slanted stroke number {k}." for k in range(12)]
    old, new = texts[:10], texts[10:] + [texts[0]]  # two new texts and a repeated old one
    cache = ContentCache(tmp_path / "content.sqlite")
    first, encoded_first = embed_texts(old, params, cache)
    assert encoded_first == 10 and first.shape == (10, 16, 384)
    second, encoded_second = embed_texts(old + new, params, cache)
    assert encoded_second == 2
    scratch, _ = embed_texts(old + new, params, None)
    np.testing.assert_array_equal(second, scratch)
    np.testing.assert_array_equal(second[:10], first)
    again, encoded_again = embed_texts(old + new, params, cache)
    assert encoded_again == 0  # nothing new: the encoder is not even loaded
    np.testing.assert_array_equal(again, scratch)
    other, encoded_other = embed_texts(old, EmbedParams(device="cpu", max_length=12), cache)
    assert encoded_other == 10 and other.shape == (10, 12, 384)  # another configuration shares nothing


def test_caption_bodies_are_reused_by_image_content(digits_prepared):
    folder, manifest = digits_prepared
    rows = training_rows(manifest, folder)
    config = captioner_config(CaptionParams())
    namespace = cache_namespace(config)
    known = dict(zip([r["sha256"] for r in rows[:40]], caption_bodies(rows[:40], folder, AttributeCaptioner(), 8)))
    todo = uncached_rows(rows, known)
    assert [r["id"] for r in todo] == [r["id"] for r in rows[40:]]
    assert uncached_rows(rows + rows[45:47], known) == todo  # one entry per distinct image
    assert [len(s) for s in shard_rows(todo, 7)] == [7, 7, 6] and sum(shard_rows(todo, 7), []) == todo
    fresh = dict(zip([r["sha256"] for r in todo], caption_bodies(todo, folder, AttributeCaptioner(), 8)))
    scratch = caption_bodies(rows, folder, AttributeCaptioner(), 64)
    assert [{**known, **fresh}[r["sha256"]] for r in rows] == scratch
    assert namespace.startswith("caption:") and namespace != cache_namespace({"id": "blip2:x"})


class FailingCaptioner(AttributeCaptioner):
    """The offline captioner, failing on the third shard: a late failure in a long captioning run."""

    calls = 0

    def describe(self, images, sources):
        FailingCaptioner.calls += 1
        if FailingCaptioner.calls == 3:
            raise RuntimeError("the captioner died")
        return super().describe(images, sources)


def test_finished_shards_stay_in_the_cache_when_a_later_shard_fails(digits_prepared, tmp_path, monkeypatch):
    folder, _ = digits_prepared
    params = Params(paths=PathsParams(prepared=str(folder), cache=str(tmp_path / "cache")),
                    caption=CaptionParams(shard_size=20, batch_size=20))
    plan = plan_captions.fn(params)
    assert [len(shard) for shard in plan.shards] == [20, 20, 20] and plan.known == {}
    monkeypatch.setattr("tasks.caption.worker_captioner", lambda *args: FailingCaptioner())
    for index, shard in enumerate(plan.shards):
        if index < 2:
            caption_shard.fn(shard, index, params.caption, params.prepare, plan.prepared_dir, plan.cache_file,
                             plan.namespace)
        else:
            with pytest.raises(RuntimeError, match="died"):
                caption_shard.fn(shard, index, params.caption, params.prepare, plan.prepared_dir, plan.cache_file,
                                 plan.namespace)
    rerun = plan_captions.fn(params)
    assert len(rerun.known) == 40 and [len(shard) for shard in rerun.shards] == [20]  # only the failed shard is left


def test_embeddings_are_stored_batch_by_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = EmbedParams(device="cpu", max_length=8, batch_size=4)
    texts = [f"This is an image of {k}." for k in range(10)]
    cache = ContentCache(tmp_path / "content.sqlite")
    encode = __import__("mvcaug.method.embed", fromlist=["encode_texts"]).encode_texts
    calls = []

    def failing_third_batch(encoder, batch, batch_size):
        calls.append(len(batch))
        if len(calls) == 3:
            raise RuntimeError("the encoder died")
        return encode(encoder, batch, batch_size)

    monkeypatch.setattr("mvcaug.method.embed.encode_texts", failing_third_batch)
    with pytest.raises(RuntimeError, match="died"):
        embed_texts(texts, params, cache)
    monkeypatch.setattr("mvcaug.method.embed.encode_texts", encode)
    _, encoded = embed_texts(texts, params, cache)
    assert calls == [4, 4, 2] and encoded == 2  # the two finished batches were kept


def test_an_unusable_cache_folder_is_skipped_with_a_warning(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    assert open_cache(blocker / "cache") is None
    assert "paths.cache" in caplog.text and "running without the cache" in caplog.text
    assert open_cache("") is None  # off
    assert open_cache(tmp_path / "fine") is not None


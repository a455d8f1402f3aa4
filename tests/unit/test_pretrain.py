"""The pretrain stage on tiny params: a text-to-image model from the glyph corpus, loaded by finetune as it
loads Stable Diffusion; the target text condition; the self-check's arithmetic; source none."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mvcaug.core.devices import autocast_precision
from mvcaug.models.denoiser import takes_image_condition
from mvcaug.io.models import load_denoiser
from mvcaug.method.finetune import ClassConditions, ConditionSampler, build_denoiser
from mvcaug.method.mix import draw_plan
from mvcaug.core.params import FinetuneParams, MixParams, Params, ParamsError, PathsParams, PretrainParams, params_from_dict
from mvcaug.method.pretrain import SelfCheck, corpus_conditions, glyph_corpus

TINY = PretrainParams(glyphs="17K", per_glyph=4, check_per_glyph=2, block_out_channels=(8, 16), attention_head_dim=4,
                      steps=3, batch_size=4, lr_warmup_steps=1, check_every=2, check_steps=2)


def tiny_params(tmp_path, **pretrain) -> Params:
    paths = PathsParams(pretrain=str(tmp_path / "pretrain"), run=str(tmp_path / ".mvcaug-run"), cache=str(tmp_path / "cache"))
    return dataclasses.replace(Params(), paths=paths, pretrain=dataclasses.replace(TINY, **pretrain))


def test_target_condition_starts_from_the_target_image_own_caption():
    rng = np.random.default_rng(0)
    captions = rng.normal(size=(5, 6, 4)).astype(np.float32)
    # image k of the class has caption 4 - k: the sampler must follow caption_of_image, not the row order
    classes = {"a": ClassConditions(np.arange(10, 15), captions, captions[:0], caption_of_image=np.array([4, 3, 2, 1, 0]))}
    unmixed = ConditionSampler(classes, MixParams(coarse_steps=0, fine_steps=0), "target", seed=1)
    for _ in range(20):
        targets, _, texts = unmixed.batch(3)
        for target, text in zip(targets, texts):
            assert np.array_equal(text, captions[4 - (target - 10)])
    mixed = ConditionSampler(classes, MixParams(coarse_steps=0, fine_steps=2), "target", seed=1)
    targets, _, texts = mixed.batch(8)
    for target, text in zip(targets, texts):
        own = captions[4 - (target - 10)]
        assert (text == own).mean() > 0.5 and not np.array_equal(text, own) or np.array_equal(text, own)
    assert any(not np.array_equal(t, captions[4 - (g - 10)]) for g, t in zip(targets, texts))  # edits happen


def test_draw_plan_with_a_start_draws_only_the_edits():
    plan = draw_plan(np.random.default_rng(0), 5, 6, 4, coarse=1, fine=3, start=2)
    assert plan.start == 2 and len(plan.edits) == 4 and all(e.source != 2 for e in plan.edits)


def test_corpus_conditions_give_each_image_its_own_caption():
    corpus = glyph_corpus("17", 3, seed=0, resolution=16, channels=1, prefix="{label}", split="train")
    embeddings = np.arange(len(corpus.ids), dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    classes = corpus_conditions(corpus, embeddings)
    for conditions in classes.values():
        own = conditions.caption_embeddings[conditions.caption_of_image][:, 0, 0]
        assert np.array_equal(own, conditions.image_indices.astype(np.float32))


def test_self_check_samples_in_bf16_leave_the_float32_weights_untouched():
    from mvcaug.method.pretrain import build_text_to_image, sample_text_to_image

    denoiser = build_text_to_image(TINY, channels=1, resolution=16, text_dim=128, device=torch.device("cpu"))
    before = {name: tensor.clone() for name, tensor in denoiser.unet.state_dict().items()}
    texts = np.random.default_rng(0).standard_normal((3, 5, 128)).astype(np.float32)
    null = np.zeros((5, 128), np.float32)
    full = sample_text_to_image(denoiser, texts, null, guidance=1.5, steps=3, seed=0)
    half = sample_text_to_image(denoiser, texts, null, guidance=1.5, steps=3, seed=0, precision="bf16")
    assert full.dtype == half.dtype == torch.float32 and full.shape == half.shape == (3, 1, 16, 16)
    # the same samples to bf16's precision, computed in it (not a float32 run under another name)
    assert not torch.equal(full, half) and torch.allclose(full, half, atol=0.1)
    after = denoiser.unet.state_dict()
    assert all(after[name].dtype == torch.float32 and torch.equal(after[name], tensor) for name, tensor in before.items())


def test_negligible_text_values_change_no_weight_of_a_training_run():
    """Why the embed stage stores values below NEGLIGIBLE as 0 (they only slow a CPU's backward pass): a few
    pretrain steps with and without them end in the same bytes."""
    from mvcaug.method.embed import NEGLIGIBLE
    from mvcaug.method.finetune import train_denoiser
    from mvcaug.method.pretrain import NO_MIX, build_text_to_image, training_params

    corpus = glyph_corpus("17", 4, seed=0, resolution=16, channels=1, prefix="{label}", split="train")
    rng = np.random.default_rng(0)
    texts = rng.standard_normal((len(corpus.ids), 5, 128)).astype(np.float32)
    texts[:, :, [7, 100]] = rng.uniform(1e-33, 1e-31, (len(corpus.ids), 5, 2)).astype(np.float32)
    assert ((texts != 0) & (np.abs(texts) < NEGLIGIBLE)).any()
    settings = dataclasses.replace(training_params(TINY), steps=4)
    weights = []
    for text in (texts, np.where(np.abs(texts) < NEGLIGIBLE, np.float32(0), texts)):
        denoiser = build_text_to_image(TINY, channels=1, resolution=16, text_dim=128, device=torch.device("cpu"))
        sampler = ConditionSampler(corpus_conditions(corpus, text), NO_MIX, "target", seed=0)
        train_denoiser(denoiser, corpus.pixels, sampler, np.zeros((5, 128), np.float32), settings)
        weights.append(denoiser.unet.state_dict())
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_self_check_ratio_and_pass():
    assert SelfCheck(10, 1.0, 0.8, 0.72, 0.9).passed
    assert not SelfCheck(10, 1.0, 0.8, 0.71, 0.9).passed
    assert SelfCheck(10, 1.0, 0.0, 0.0, 0.9).ratio == 0.0


@pytest.mark.slow
def test_pretrain_writes_a_model_finetune_loads_as_it_loads_stable_diffusion(tmp_path):
    from tasks.pretrain import pretrain

    params = tiny_params(tmp_path)
    metrics = pretrain.fn(params)
    out = tmp_path / "pretrain"
    assert metrics["steps"] == 3 and metrics["images"] == 12
    check = metrics["self_check"]
    assert 0 <= check["sample_accuracy"] <= 1 and 0 <= check["heldout_accuracy"] <= 1
    assert check["precision"] == autocast_precision("auto", torch.device("cpu"))  # check_precision auto, as resolved
    assert json.loads((out / "metrics.json").read_text()) == metrics
    curve = (out / "self_check.csv").read_text().splitlines()
    assert curve[0] == "step,sample_accuracy,heldout_accuracy,ratio"
    assert [line.split(",")[0] for line in curve[1:]] == ["2", "3"]
    times = (tmp_path / ".mvcaug-run" / "pretrain-self-check-times.csv").read_text().splitlines()
    assert times[0] == "step,seconds" and [line.split(",")[0] for line in times[1:]] == ["2", "3"]
    # the same inputs write the same bytes (the seconds are kept out of the output)
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    pretrain.fn(params)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == first
    corpus = pq.read_table(out / "corpus.parquet")
    assert corpus.num_rows == 12 and set(corpus.column("glyph").to_pylist()) == set("17K")
    assert all(len(b) == 16 * 16 for b in corpus.column("pixels").to_pylist())
    # text-to-image, as Stable Diffusion's U-Net: no image channels
    model = load_denoiser(out, torch.device("cpu"))
    assert not takes_image_condition(model) and model.unet.config.in_channels == 1
    # finetune.init: pretrained loads it through the Stable Diffusion loader: conv_in widened, weights kept
    finetune = FinetuneParams(init="pretrained", pretrained=str(out), codec="pixel")
    widened = build_denoiser(finetune, channels=1, resolution=16, text_dim=384, device=torch.device("cpu"))
    assert takes_image_condition(widened) and widened.unet.config.in_channels == 2
    assert torch.equal(widened.unet.conv_in.weight[:, :1], model.unet.conv_in.weight)
    assert torch.count_nonzero(widened.unet.conv_in.weight[:, 1:]) == 0
    # check_every 0: no curve on the way, the final weights are checked all the same
    assert pretrain.fn(tiny_params(tmp_path, check_every=0))["steps"] == 3
    assert [line.split(",")[0] for line in (out / "self_check.csv").read_text().splitlines()[1:]] == ["3"]
    # rerun with source none: the old model is gone, only the card and metrics stay
    assert pretrain.fn(tiny_params(tmp_path, source="none")) == {"source": "none"}
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "metrics.json"]


def test_finetune_from_the_pretrain_output_needs_a_pretrain_source():
    raw = {"pretrain": {"source": "none"}, "finetune": {"init": "pretrained", "pretrained": "data/04_pretrain"}}
    with pytest.raises(ParamsError, match="pretrain.source' is none"):
        params_from_dict(raw)
    raw["pretrain"]["source"] = "glyphs"
    assert params_from_dict(raw).finetune.pretrained == "data/04_pretrain"
    with pytest.raises(ParamsError, match="pretrain.glyphs"):
        params_from_dict({"pretrain": {"glyphs": "3 3"}})


def test_own_captions_follow_image_ids_not_row_order():
    from mvcaug.core.errors import MissingInputError
    from mvcaug.method.finetune import own_captions

    image_ids = ["a0", "b0", "a1", "a2"]
    indices = np.array([0, 2, 3])  # class a's rows of the training images
    assert own_captions(indices, image_ids, ["a2", "a0", "a1"]).tolist() == [1, 2, 0]
    with pytest.raises(MissingInputError, match="a2"):
        own_captions(indices, image_ids, ["a0", "a1"])


def test_min_snr_weights_cap_the_easy_timesteps():
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    from mvcaug.method.finetune import min_snr_weights

    t = torch.tensor([1, 100, 500, 999])
    for kind in ("epsilon", "v_prediction"):
        scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=kind)
        snr = compute_snr(scheduler, t)
        weights = min_snr_weights(scheduler, t, 5.0)
        expected = torch.clamp(snr, max=5.0) / (snr + 1 if kind == "v_prediction" else snr)
        assert torch.allclose(weights, expected)
        assert weights[0] < weights[-1] or kind == "v_prediction"  # low noise (high SNR) counts less for epsilon
    eps = min_snr_weights(DDPMScheduler(beta_schedule="squaredcos_cap_v2"), t, 5.0)
    assert eps[-1] == pytest.approx(1.0)  # SNR below gamma: the plain loss


def unlabeled_folder(root, make_imagefolder):
    """root/a/ and root/b/nested/ with random images, a README and a hidden file (neither read)."""
    make_imagefolder(root, {"a": 3, "b/nested": 2}, size=(20, 12))
    (root / "README.md").write_text("# unlabeled")
    (root / "a" / ".hidden.png").write_bytes(b"not an image")
    return root


def test_a_folder_corpus_is_every_image_below_it_captioned_without_a_class_prefix(make_imagefolder, tmp_path):
    from mvcaug.method.caption import AttributeCaptioner
    from mvcaug.method.pretrain import folder_corpus

    root = unlabeled_folder(tmp_path / "unlabeled", make_imagefolder)
    corpus = folder_corpus(root, 16, 3, "center_crop", AttributeCaptioner(), batch_size=2)
    sources = [row["source"] for row in corpus.rows]
    assert sources == ["a/img00.png", "a/img01.png", "a/img02.png", "b/nested/img00.png", "b/nested/img01.png"]
    assert corpus.pixels.shape == (5, 3, 16, 16) and corpus.labels == [""] * 5
    assert all(caption and "image of" not in caption for caption in corpus.captions)
    assert [row["caption"] for row in corpus.rows] == corpus.captions
    again = folder_corpus(root, 16, 3, "center_crop", AttributeCaptioner(), batch_size=64)
    assert again.captions == corpus.captions and torch.equal(again.pixels, corpus.pixels)


def test_a_missing_or_empty_pretraining_folder_is_one_line(tmp_path):
    from mvcaug.data.prepare import DatasetError
    from mvcaug.io.image_folders import folder_files

    with pytest.raises(DatasetError, match="no such folder for pretrain.source: folder"):
        folder_files(tmp_path / "missing")
    (tmp_path / "README.md").write_text("# only this")
    with pytest.raises(DatasetError, match=f"^{tmp_path}: no images for pretrain.source: folder"):
        folder_files(tmp_path)


def test_finetune_refuses_a_pretraining_corpus_that_holds_a_task_image(digits_prepared, make_imagefolder, tmp_path):
    import shutil

    from mvcaug.io.atomic import write_parquet
    from mvcaug.method.caption import AttributeCaptioner
    from mvcaug.core.errors import UserError
    from mvcaug.method.pretrain import folder_corpus
    from tasks.finetune import check_corpus_disjoint
    from tasks.pretrain import corpus_table

    prepared, manifest = digits_prepared
    root = unlabeled_folder(tmp_path / "unlabeled", make_imagefolder)
    model = tmp_path / "pretrain"
    params = dataclasses.replace(Params(), paths=PathsParams(prepared=str(prepared), pretrain=str(model)),
                                 finetune=FinetuneParams(init="pretrained", pretrained=str(model)))
    write_parquet(model / "corpus.parquet", corpus_table(folder_corpus(root, 16, 1, "center_crop", AttributeCaptioner())))
    check_corpus_disjoint(params)  # random images: none is a digit
    row = next(r for r in manifest.to_pylist() if r["split"] == "test")
    shutil.copy(prepared / row["path"], root / "a" / "leaked.png")
    write_parquet(model / "corpus.parquet", corpus_table(folder_corpus(root, 16, 1, "center_crop", AttributeCaptioner())))
    with pytest.raises(UserError, match=rf"1 pretraining image\(s\) equal images of the task's test split, e.g. "
                                        rf"folder-000003 \(a/leaked.png\) = {row['id']}; remove them"):
        check_corpus_disjoint(params)


@pytest.mark.slow
def test_pretrain_on_an_unlabeled_folder_writes_a_model_without_a_self_check(make_imagefolder, tmp_path):
    from mvcaug.reporting.report import ReportData, pretrain_table
    from tasks.pretrain import pretrain

    root = unlabeled_folder(tmp_path / "unlabeled", make_imagefolder)
    params = tiny_params(tmp_path, source="folder", folder=str(root))
    metrics = pretrain.fn(params)
    out = tmp_path / "pretrain"
    assert metrics["source"] == "folder" and metrics["images"] == 5 and metrics["self_check"] is None
    assert not (out / "self_check.csv").exists() and (out / "samples_grid.png").is_file()
    corpus = pq.read_table(out / "corpus.parquet")
    assert corpus.column("source").to_pylist()[0] == "a/img00.png"
    assert "self-check: none (an unlabeled corpus" in (out / "README.md").read_text().lower()
    model = load_denoiser(out, torch.device("cpu"))
    assert not takes_image_condition(model)
    _, rows = pretrain_table(ReportData(metrics={}, results=[], pretrain=metrics))
    assert rows[-1][-1].startswith("no self-check")

"""Sharded generation: the plan, per-image specs, digests, resume without duplicates, stale shards, and
batches filled across shards, classes and sets (byte-identical to one shard at a time)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mvcaug.method.generate import (
    GenerationInputs, Shard, ShardJob, WorkUnit, denoise_items, image_specs, plan_shards, plan_work,
    shard_digest, synthetic_manifest, tune_denoiser,
)
from mvcaug.data.images import ImageSet
from mvcaug.core.params import GenerateParams
from mvcaug.method.sampling import sample
from mvcaug.io.catalog import FILES
from tasks.generate import remove_stale_shards, store_shard as generate_shard, store_shards
from tests.tiny_denoiser import TINY_RES, TINY_TEXT_DIM, TINY_TOKENS, tiny_denoiser

RES, M, TEXT_DIM = TINY_RES, TINY_TOKENS, TINY_TEXT_DIM


@pytest.fixture(scope="module")
def denoiser():
    return tiny_denoiser()


@pytest.fixture
def inputs(denoiser) -> GenerationInputs:
    g = torch.Generator().manual_seed(0)
    labels = ["a", "a", "a", "b", "b"]
    ids = [f"{label}{i}" for i, label in enumerate(labels)]
    cond = ImageSet(ids, labels, [f"sha-{i}" for i in ids], torch.rand(5, 1, RES, RES, generator=g) * 2 - 1)
    rng = np.random.default_rng(0)
    mixed_ids = {label: [f"{label}-mix{k:05d}" for k in range(4)] for label in "ab"}
    mixed = {label: rng.normal(size=(4, M, TEXT_DIM)).astype(np.float32) for label in "ab"}
    return GenerationInputs(
        denoiser=denoiser, model_digest="model-1", cond_images=cond, mixed_ids=mixed_ids, mixed=mixed,
        null_text=np.zeros((M, TEXT_DIM), np.float32), resolution=RES,
        params=GenerateParams(images_per_class=5, shard_size=3, steps=2, batch_size=2, seed=0),
    )


def with_params(inputs: GenerationInputs, **changes) -> GenerationInputs:
    return dataclasses.replace(inputs, params=dataclasses.replace(inputs.params, **changes))


def pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.mark.parametrize(("per_class", "size"), [(20, 10), (25, 10), (7, 3), (1, 5), (6, 1)])
def test_plan_covers_every_image_once_in_blocks(per_class, size):
    labels = ["dog", "cat", "dog", "ant"]
    shards = plan_shards(labels, GenerateParams(images_per_class=per_class, shard_size=size))
    assert len({s.name for s in shards}) == len(shards)
    for label in ("ant", "cat", "dog"):
        mine = [s for s in shards if s.label == label]
        assert [s.block for s in mine] == list(range(len(mine)))
        covered = [i for s in mine for i in range(s.start, s.stop)]
        assert covered == list(range(per_class))
        assert all(s.stop - s.start == size for s in mine[:-1])
        assert 0 < mine[-1].stop - mine[-1].start <= size
    assert {s.label for s in shards} == {"ant", "cat", "dog"}


def test_raising_images_per_class_keeps_earlier_shards():
    labels = ["a", "b"]
    before = plan_shards(labels, GenerateParams(images_per_class=20, shard_size=10))
    after = plan_shards(labels, GenerateParams(images_per_class=35, shard_size=10))
    assert set(before) <= set(after)  # same names, same ranges
    assert len(after) == 2 * 4
    # a partial last block keeps its name and start and only grows
    partial = plan_shards(labels, GenerateParams(images_per_class=15, shard_size=10))
    grown = {s.name: s for s in after}
    for shard in partial:
        assert grown[shard.name].start == shard.start and grown[shard.name].stop >= shard.stop
    assert Shard("a", 3, 30, 35).name == "shard-a-0003"


def test_image_specs_draw_from_the_class(inputs):
    specs = image_specs(Shard("a", 0, 0, 5), inputs)
    assert [s.index for s in specs] == list(range(5))
    assert all(s.cond_id.startswith("a") for s in specs)
    assert [s.mixed_id for s in specs] == [inputs.mixed_ids["a"][i % 4] for i in range(5)]
    assert len({s.seed for s in specs}) == 5
    # an image's spec does not depend on how the indices are cut into shards
    pieces = image_specs(Shard("a", 0, 0, 2), inputs) + image_specs(Shard("a", 1, 2, 5), inputs)
    assert pieces == specs
    assert image_specs(Shard("b", 0, 0, 5), inputs) != specs
    with pytest.raises(ValueError, match="'c'"):
        image_specs(Shard("c", 0, 0, 1), dataclasses.replace(inputs, mixed_ids={**inputs.mixed_ids, "c": []}))


def test_digest_follows_every_input(inputs):
    shard = Shard("a", 0, 0, 3)
    specs = image_specs(shard, inputs)
    base = shard_digest(shard, specs, inputs)
    assert shard_digest(shard, specs, inputs) == base
    changed = [
        with_params(inputs, guidance_scale=3.0),
        with_params(inputs, steps=3),
        with_params(inputs, scheduler="unipc"),
        with_params(inputs, image_guidance_scale=1.5),
        with_params(inputs, compile=True),
        with_params(inputs, channels_last=True),
        with_params(inputs, fuse_qkv=True),
        dataclasses.replace(inputs, model_digest="model-2"),
        dataclasses.replace(inputs, null_text=inputs.null_text + 1),
        dataclasses.replace(inputs, mixed={**inputs.mixed, "a": inputs.mixed["a"] * 2}),
        dataclasses.replace(inputs, cond_images=dataclasses.replace(
            inputs.cond_images, sha256=[s + "x" for s in inputs.cond_images.sha256])),
    ]
    for other in changed:
        assert shard_digest(shard, image_specs(shard, other), other) != base
    # the batch size and the other class's embeddings do not change what a shard holds
    same = [with_params(inputs, batch_size=7), with_params(inputs, task_batches=3),
            dataclasses.replace(inputs, mixed={**inputs.mixed, "b": inputs.mixed["b"] + 1})]
    for other in same:
        assert shard_digest(shard, image_specs(shard, other), other) == base


def test_generate_shard_writes_images_and_record(tmp_path, inputs):
    shard = plan_shards(["a", "b"], inputs.params)[0]
    rows, generated = generate_shard(shard, inputs, tmp_path)
    assert generated is True
    folder = tmp_path / shard.name
    assert sorted(p.name for p in folder.iterdir()) == [
        "a-00000.png", "a-00001.png", "a-00002.png", FILES.shard_record]
    for name, pixels in pngs(folder).items():
        assert pixels.shape == (RES, RES) and pixels.dtype == np.uint8
    with Image.open(folder / "a-00000.png") as image:
        assert image.mode == "L" and image.size == (RES, RES)
    record = json.loads((folder / FILES.shard_record).read_text())
    assert record["rows"] == rows
    assert record["digest"] == shard_digest(shard, image_specs(shard, inputs), inputs)
    assert [r["path"] for r in rows] == [f"{shard.name}/a-0000{i}.png" for i in range(3)]
    assert all(r["label"] == "a" and r["shard"] == shard.name for r in rows)
    manifest = synthetic_manifest(rows)
    assert manifest.column_names == ["path", "label", "shard", "index", "seed", "mixed_id", "cond_id"]
    assert manifest["index"].to_pylist() == [0, 1, 2]


def test_finished_shard_is_kept(tmp_path, inputs):
    shard = Shard("a", 0, 0, 3)
    rows, _ = generate_shard(shard, inputs, tmp_path)
    folder = tmp_path / shard.name
    before = mtimes(folder)
    again, generated = generate_shard(shard, inputs, tmp_path)
    assert generated is False
    assert again == rows
    assert mtimes(folder) == before
    # raising images_per_class adds shards but keeps this one
    more = with_params(inputs, images_per_class=9)
    assert shard in plan_shards(["a"], more.params)
    assert generate_shard(shard, more, tmp_path)[1] is False
    assert mtimes(folder) == before


def test_changed_guidance_regenerates(tmp_path, inputs):
    shard = Shard("a", 0, 0, 3)
    generate_shard(shard, inputs, tmp_path)
    folder = tmp_path / shard.name
    first = json.loads((folder / FILES.shard_record).read_text())["digest"]
    first_pixels = pngs(folder)
    rows, generated = generate_shard(shard, with_params(inputs, guidance_scale=4.0), tmp_path)
    assert generated is True
    record = json.loads((folder / FILES.shard_record).read_text())
    assert record["digest"] != first
    assert record["rows"] == rows
    second_pixels = pngs(folder)
    assert second_pixels.keys() == first_pixels.keys()
    assert any(not np.array_equal(first_pixels[k], second_pixels[k]) for k in first_pixels)


def test_interrupted_shard_is_rewritten_without_duplicates(tmp_path, inputs):
    shard = Shard("b", 1, 3, 5)
    rows, _ = generate_shard(shard, inputs, tmp_path)
    folder = tmp_path / shard.name
    complete = pngs(folder)
    names = sorted(p.name for p in folder.iterdir())
    # an interruption while the shard was written: its temporary folder is left over ...
    leftover = tmp_path / f".tmp-{shard.name}-12345"
    leftover.mkdir()
    (leftover / "b-00003.png").write_bytes(b"partial")
    # ... and a shard folder from an older layout lost its record and an image, with a temp file left over
    (folder / FILES.shard_record).unlink()
    (folder / "b-00004.png").unlink()
    (folder / ".b-00004.png.abc.tmp").write_bytes(b"partial")
    assert remove_stale_shards(tmp_path, [shard]) == [] and not leftover.exists()
    again, generated = generate_shard(shard, inputs, tmp_path)
    assert generated is True
    assert again == rows
    assert sorted(p.name for p in folder.iterdir()) == names
    redone = pngs(folder)
    assert redone.keys() == complete.keys()
    for name in complete:
        assert np.array_equal(redone[name], complete[name]), name
    # a record whose images went missing is not trusted either
    (folder / "b-00003.png").unlink()
    assert generate_shard(shard, inputs, tmp_path)[1] is True
    assert np.array_equal(pngs(folder)["b-00003.png"], complete["b-00003.png"])


def test_remove_stale_shards(tmp_path, inputs):
    for name in ("shard-a-0000", "shard-a-0001", "shard-a-0002", "shard-c-0000"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(b"x")
    (tmp_path / "manifest.parquet").write_bytes(b"keep")
    (tmp_path / "shard-file").write_text("a file, not a shard folder")
    (tmp_path / "other").mkdir()
    plan = plan_shards(["a", "b"], GenerateParams(images_per_class=5, shard_size=3))
    removed = remove_stale_shards(tmp_path, plan)
    assert sorted(removed) == ["shard-a-0002", "shard-c-0000"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.parquet", "other", "shard-a-0000", "shard-a-0001", "shard-file"]
    assert (tmp_path / "shard-a-0000" / "x.png").is_file()
    assert remove_stale_shards(tmp_path, plan) == []


def test_plan_work_groups_whole_shards_of_one_model_block_by_block_across_sets():
    params = GenerateParams(images_per_class=20, shard_size=6, batch_size=8, task_batches=2)  # 16 images a task
    shards = plan_shards(["a", "b"], params)  # 6, 6, 6, 2 images per class
    sets = {"mvc": shards, "unmixed": shards, "pretrained": shards}
    units = plan_work(sets, {"mvc": "finetuned", "unmixed": "finetuned", "pretrained": "pretrained"}, params)
    items = [item for unit in units for item in unit.items]
    assert sorted(items, key=str) == sorted(((name, s) for name in sets for s in shards), key=str)  # each once
    for unit in units:
        assert len({name == "pretrained" for name, _ in unit.items}) == 1  # one model per task
        assert unit.images <= 16 or len(unit.items) == 1
    finetuned = [item for unit in units for item in unit.items if item[0] != "pretrained"]
    assert finetuned[:4] == [("mvc", shards[0]), ("unmixed", shards[0]), ("mvc", shards[1]), ("unmixed", shards[1])]
    assert units[0].name == "mvc-shard-a-0000+1" and units[0].images == 12
    assert WorkUnit((("mvc", shards[3]),)).name == "mvc-shard-a-0003"
    # shards of one class and block that fit a task are never split across tasks (greedy filling would split the second pair here)
    params = GenerateParams(images_per_class=20, shard_size=10, batch_size=8, task_batches=4)  # 32 a task
    shards = plan_shards(["a", "b"], params)
    units = plan_work({"mvc": shards, "unmixed": shards}, {"mvc": "finetuned", "unmixed": "finetuned"}, params)
    assert [unit.images for unit in units] == [20] * 4
    for unit in units:
        assert {shard for _, shard in unit.items} == {shard for name, shard in unit.items if name == "unmixed"}


class BatchSizes:
    """Records the batch size of every U-Net call (a forward hook on the real U-Net)."""

    def __init__(self, unet):
        self.sizes: list[int] = []
        self.handle = unet.register_forward_hook(lambda module, args, out: self.sizes.append(args[0].shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def mvc_and_unmixed(inputs: GenerationInputs, **params) -> dict[str, GenerationInputs]:
    """The MVC set and an unmixed (P = Q = 0) set: same model, seeds and conditioning images, other text embeddings."""
    mvc = with_params(inputs, **params)
    unmixed = dataclasses.replace(mvc, mixed={label: -emb[::-1].copy() for label, emb in mvc.mixed.items()})
    return {"mvc": mvc, "unmixed": unmixed}


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_batches_across_shards_classes_and_sets_are_full_and_byte_identical_to_one_shard_at_a_time(tmp_path, inputs):
    sets = mvc_and_unmixed(inputs, images_per_class=24, shard_size=8, steps=2)
    shards = plan_shards(["a", "b"], sets["mvc"].params)  # 3 shards of 8 images per class, 96 images in all
    # today's path: each shard alone, in one batch of its 8 images
    for name, set_inputs in sets.items():
        for shard in shards:
            generate_shard(shard, with_params(set_inputs, batch_size=8), tmp_path / "alone" / name)
    # one task: batches of 20 across classes and both sets (the last one, 16 images, padded)
    packed = {name: with_params(set_inputs, batch_size=20) for name, set_inputs in sets.items()}
    unit = plan_work({name: shards for name in packed}, {name: "finetuned" for name in packed}, packed["mvc"].params)
    assert len(unit) == 1 and unit[0].images == 96
    entries = [(shard, packed[name], tmp_path / "packed" / name) for name, shard in unit[0].items]
    with BatchSizes(inputs.denoiser.unet) as calls:
        results = store_shards(entries)
    assert all(generated for _, generated in results)
    assert calls.sizes == [2 * 20] * (2 * 5)  # 2 steps x 5 batches, each holding 20 images (x 2 guidance branches)
    assert folder_bytes(tmp_path / "packed") == folder_bytes(tmp_path / "alone")  # PNGs and shard.json alike
    assert not np.array_equal(pngs(tmp_path / "packed" / "mvc" / shards[0].name)["a-00000.png"],
                              pngs(tmp_path / "packed" / "unmixed" / shards[0].name)["a-00000.png"])


def test_a_task_regenerates_only_its_missing_shards_in_full_batches(tmp_path, inputs):
    sets = mvc_and_unmixed(inputs, images_per_class=11, shard_size=8, batch_size=16, steps=2)  # shards of 8 and 3
    shards = plan_shards(["a", "b"], sets["mvc"].params)
    entries = [(shard, sets[name], tmp_path / name) for name in sets for shard in shards]
    store_shards(entries)
    before = folder_bytes(tmp_path)
    shutil.rmtree(tmp_path / "mvc" / "shard-a-0001")
    (tmp_path / "unmixed" / "shard-b-0000" / FILES.shard_record).unlink()
    with BatchSizes(inputs.denoiser.unet) as calls:
        results = store_shards(entries)
    generated = [f"{out.name}/{shard.name}" for (shard, _, out), (_, made) in zip(entries, results) if made]
    assert generated == ["mvc/shard-a-0001", "unmixed/shard-b-0000"]
    assert calls.sizes == [2 * 16] * 2  # the 3 + 8 images in one batch of 16 per step
    assert folder_bytes(tmp_path) == before


def test_an_image_does_not_depend_on_what_shares_its_batch(inputs):
    """Batches are padded to batch_size: on the CPU some kernels switch at small batch sizes, which moves the
    last bits of an image denoised with few others (e.g. a shard regenerated alone)."""
    params = dataclasses.replace(inputs.params, steps=2)
    sets = mvc_and_unmixed(inputs, steps=2)
    jobs = [ShardJob(shard, image_specs(shard, sets[name]), sets[name])
            for name in sets for shard in plan_shards(["a", "b"], params)]
    items = [(job, spec) for job in jobs for spec in job.specs]  # 20 images
    alone = denoise_items(items[:3], 16)
    together = denoise_items(items[5:18] + items[:3], 16)
    assert alone.shape[0] == 3 and torch.equal(alone, together[13:])


def tuned_sample(denoiser, **options) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    cond = torch.rand(4, 1, RES, RES, generator=g) * 2 - 1
    text = torch.randn(4, M, TEXT_DIM, generator=g)
    noise = torch.randn(4, 1, RES, RES, generator=g)
    return sample(tune_denoiser(denoiser, GenerateParams(**options)), cond, text, torch.zeros(1, M, TEXT_DIM), noise,
                  "ddim", 3, 2.0)


def test_fused_qkv_and_channels_last_keep_the_images():
    reference = tuned_sample(tiny_denoiser())
    fused = tiny_denoiser()
    assert torch.allclose(tuned_sample(fused, fuse_qkv=True), reference, atol=1e-4)
    assert any(type(p).__name__ == "FusedAttnProcessor2_0" for p in fused.unet.attn_processors.values())
    last = tiny_denoiser()
    assert torch.allclose(tuned_sample(last, channels_last=True), reference, atol=1e-4)
    assert last.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow  # a cold compile cache (CI's) takes minutes on 2 cores; make test still runs it
def test_compiled_unet_keeps_the_images():
    """torch.compile on the CPU (inductor, C++ codegen): about 100 s the first time on a cold compile cache."""
    reference = tuned_sample(tiny_denoiser())
    denoiser = tiny_denoiser()
    compiled = tune_denoiser(denoiser, GenerateParams(compile=True))
    assert isinstance(compiled.unet, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.unet.config.sample_size == RES  # the wrapper keeps the config generation reads
    assert torch.allclose(tuned_sample(denoiser, compile=True), reference, atol=1e-4)


def test_stale_shards_outlive_planning_until_the_new_manifest_is_written(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    from tasks.generate import plan_set, remove_stale, write_manifest

    pq.write_table(pa.table({"label": ["a", "a"]}), tmp_path / "mixed.parquet")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "paths": {"mixed": "mixed.parquet", "synthetic": "synthetic"},
        "generate": {"images_per_class": 3, "shard_size": 3}}))
    stale = tmp_path / "synthetic" / "shard-a-0001"  # from a run with more images per class
    stale.mkdir(parents=True)
    (stale / "a-00003.png").write_bytes(b"named by the last manifest")
    shards = plan_set.fn(str(tmp_path), "params.yaml", "mvc")
    assert [s.name for s in shards] == ["shard-a-0000"]
    assert stale.is_dir()  # a run that fails from here on leaves the last manifest's files in place
    write_manifest.fn(str(tmp_path), "params.yaml", "mvc", [])
    assert remove_stale.fn(str(tmp_path), "params.yaml", "mvc", shards) == ["shard-a-0001"] and not stale.exists()

"""Code digests: every cached or persisted result is keyed by the code that computes it, and only by it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mvcaug.judging import train
from mvcaug.method import caption, embed, generate
from mvcaug.io.checkpoints import CODE_ENTRIES as FINETUNE_ENTRIES
from mvcaug.io.digests import PROJECT_PACKAGES, PROJECT_ROOT, code_digest, digest_files, file_sha256, import_closure

RESULTS = {  # what each cached or persisted result is keyed by
    "generate shard": generate.CODE_ENTRIES,
    "train cell": train.CODE_ENTRIES,
    "caption cache": caption.CODE_ENTRIES,
    "embed cache": embed.CODE_ENTRIES,
    "finetune checkpoint": FINETUNE_ENTRIES,
}


def copy_project(tmp_path: Path) -> Path:
    """The project's packages in a temporary folder, to edit without touching the checkout."""
    root = tmp_path / "project"
    for package in PROJECT_PACKAGES:
        shutil.copytree(PROJECT_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def digests(root: Path) -> dict[str, str]:
    return {name: code_digest(entries, root=root) for name, entries in RESULTS.items()}


def edit(root: Path, module: str, old: str, new: str) -> None:
    path = root / module
    text = path.read_text()
    assert old in text, f"{module} no longer contains {old!r}: update the test"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path)


def test_a_copy_digests_like_the_checkout(project):
    assert digests(project) == digests(PROJECT_ROOT)


def test_changing_the_sampler_recomputes_shards_and_checkpoints_only(project):
    before = digests(project)
    edit(project, "mvcaug/method/sampling.py", "return guidance * full + (1 - guidance) * text_free",
         "return guidance * full + (1.0 - guidance) * text_free + 0.0")
    after = digests(project)
    changed = {name for name in before if before[name] != after[name]}
    # the sampler is in generation's closure, and in fine-tuning's (its validation grids sample)
    assert changed == {"generate shard", "finetune checkpoint"}


def test_changing_the_trainer_recomputes_cells_only(project):
    before = digests(project)
    edit(project, "mvcaug/judging/strategies.py", "included = torch.rand(len(real), generator=generator) < p",
         "included = torch.rand(len(real), generator=generator) <= p")
    after = digests(project)
    assert {name for name in before if before[name] != after[name]} == {"train cell"}


def test_an_unrelated_module_or_a_comment_recomputes_nothing(project):
    before = digests(project)
    edit(project, "mvcaug/reporting/report.py", "def render_markdown(", "def render_markdown_renamed(")  # no result imports it
    edit(project, "mvcaug/judging/train.py", "# 1. Inputs at the model's size", "# 1. Inputs, resized to the model's size")
    edit(project, "mvcaug/method/generate.py", "\n\n\ndef plan_shards", "\n\n\n\ndef plan_shards")
    assert digests(project) == before


def test_the_closure_follows_lazy_imports(project):
    closure = {p.relative_to(project).as_posix() for p in import_closure(["mvcaug.method.caption"], project)}
    assert {"mvcaug/method/caption.py", "mvcaug/method/image_attributes.py", "mvcaug/method/blip2.py"} <= closure  # blip2: lazy
    assert "mvcaug/judging/train.py" not in closure


def test_library_versions_count(project):
    assert code_digest(["mvcaug.method.mix"], ["numpy"], root=project) != code_digest(["mvcaug.method.mix"], [], root=project)
    assert code_digest(["mvcaug.method.mix"], ["numpy", "numpy"], root=project) == code_digest(["mvcaug.method.mix"], ["numpy"],
                                                                                            root=project)


def test_file_digests(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert digest_files([a, b]) != digest_files([b, a])  # order matters
    assert file_sha256(a) == "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"  # sha256(b"one")
    with pytest.raises(ValueError, match="not a module"):
        code_digest(["numpy"])

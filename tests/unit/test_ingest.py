"""Ingesting new images: content-deduplicated, every copy inside the dataset folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mvcaug.data.ingest import Candidate, IngestError, contained_target, plan_copies
from tasks.ingest import ingest_images


def png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (4, 4), value).save(path)
    return path


def test_known_content_is_skipped_and_taken_names_get_the_hash(tmp_path):
    dataset = tmp_path / "set"
    (dataset / "a").mkdir(parents=True)
    taken = {dataset / "a" / "x.png"}
    candidates = [Candidate(Path("in/a/x.png"), "a", "1" * 64), Candidate(Path("in/a/y.png"), "a", "2" * 64),
                  Candidate(Path("in/a/z.png"), "a", "2" * 64)]
    copies, skipped = plan_copies(candidates, {"3" * 64}, dataset, taken)
    assert [c.target.name for c in copies] == [f"x-{'1' * 12}.png", "y.png"]
    assert [c.path.name for c in skipped] == ["z.png"]  # the same content twice: copied once
    assert plan_copies([Candidate(Path("in/a/w.png"), "a", "3" * 64)], {"3" * 64}, dataset, set())[0] == []


def test_a_class_folder_linking_outside_the_dataset_is_refused(tmp_path):
    dataset, outside = tmp_path / "set", tmp_path / "elsewhere"
    (dataset).mkdir()
    outside.mkdir()
    (dataset / "cat").symlink_to(outside, target_is_directory=True)
    with pytest.raises(IngestError, match="outside the dataset folder"):
        contained_target(dataset, "cat", "new.png")
    with pytest.raises(IngestError):
        contained_target(dataset, "..", "new.png")
    incoming = tmp_path / "incoming"
    png(incoming / "cat" / "new.png", 90)
    with pytest.raises(IngestError, match="remove the link"):
        ingest_images.fn(str(incoming), str(dataset))
    assert list(outside.iterdir()) == []  # nothing was written outside


def test_ingest_copies_new_images_and_skips_hidden_and_known_ones(tmp_path):
    dataset, incoming = tmp_path / "set", tmp_path / "incoming"
    png(dataset / "cat" / "old.png", 10)
    png(incoming / "cat" / "same.png", 10)  # the content is already there
    png(incoming / "cat" / "new.png", 20)
    (incoming / "cat" / "._new.png").write_bytes(b"AppleDouble")
    png(incoming / "dog" / "first.png", 30)
    assert ingest_images.fn(str(incoming), str(dataset)) == {"cat": 1, "dog": 1}
    assert sorted(p.name for p in (dataset / "cat").iterdir()) == ["new.png", "old.png"]
    assert (dataset / "dog" / "first.png").read_bytes() == (incoming / "dog" / "first.png").read_bytes()
    assert ingest_images.fn(str(incoming), str(dataset)) == {}  # again: nothing new

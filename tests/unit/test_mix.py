"""Mixing Visual Concepts (Algorithm 1): starts, edit ranges, provenance, replay, seeds, errors."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest

from mvcaug.io.embedding_table import read_embeddings, write_embeddings
from mvcaug.method.mix import (
    MixError, unmixed_params, apply_plan, class_stream, draw_plan, mix_class, mix_embeddings, replay_row,
)
from mvcaug.core.params import MixParams

M, D = 6, 10


@pytest.fixture
def dataset(provenance):
    """Three classes with 4, 3 and 5 captions, interleaved, every value unique: (ids, labels, emb)."""
    labels = ["b", "a", "c", "a", "b", "c", "a", "c", "b", "a", "c", "c"]
    ids = [f"{label}-img{i:02d}" for i, label in enumerate(labels)]
    return ids, labels, provenance(len(labels), M, D)


def owner(values: np.ndarray) -> np.ndarray:
    """Which embedding each value of a provenance array came from."""
    return (values.astype(np.int64) // (M * D)).astype(np.int64)


def position_of(values: np.ndarray) -> np.ndarray:
    """The (row * D + col) each value was copied from."""
    return values.astype(np.int64) % (M * D)


def test_no_steps_gives_plain_caption_embeddings(dataset):
    ids, labels, emb = dataset
    columns, mixed = mix_embeddings(ids, labels, emb, MixParams(per_class=7, coarse_steps=0, fine_steps=0))
    assert mixed.shape == (3 * 7, M, D)
    for k, (start_id, edits) in enumerate(zip(columns["start_id"], columns["edits"].to_pylist())):
        assert edits == []
        assert np.array_equal(mixed[k], emb[ids.index(start_id)])
        assert any(np.array_equal(mixed[k], e) for e in emb)


def test_table_columns_ids_and_labels(dataset):
    ids, labels, emb = dataset
    columns, mixed = mix_embeddings(ids, labels, emb, MixParams(per_class=4, coarse_steps=1, fine_steps=2))
    assert columns["label"] == ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    assert columns["index"] == [0, 1, 2, 3] * 3
    assert columns["id"][:2] == ["a-mix00000", "a-mix00001"]
    assert len(set(columns["id"])) == 12
    assert mixed.dtype == emb.dtype


@pytest.mark.parametrize(("coarse", "fine"), [(1, 8), (3, 0), (0, 5), (2, 20)])
def test_edit_sources_ranges_and_element_provenance(dataset, coarse, fine):
    ids, labels, emb = dataset
    params = MixParams(per_class=25, coarse_steps=coarse, fine_steps=fine, seed=3)
    columns, mixed = mix_embeddings(ids, labels, emb, params)
    label_of = dict(zip(ids, labels))
    for k, (label, start_id, edits) in enumerate(
        zip(columns["label"], columns["start_id"], columns["edits"].to_pylist())
    ):
        assert label_of[start_id] == label
        assert [e["kind"] for e in edits] == ["coarse"] * coarse + ["fine"] * fine
        start = ids.index(start_id)
        sources = {start}
        expected_owner = np.full((M, D), start)
        for edit in edits:
            # the source is another caption of the same class, never the start
            assert label_of[edit["source"]] == label
            assert edit["source"] != start_id
            if edit["kind"] == "coarse":
                assert 0 <= edit["row_start"] < edit["row_stop"] <= M
                assert (edit["col_start"], edit["col_stop"]) == (0, D)
            else:
                assert 0 <= edit["row_start"] < M and edit["row_stop"] == edit["row_start"] + 1
                assert 0 <= edit["col_start"] < edit["col_stop"] <= D
            source = ids.index(edit["source"])
            sources.add(source)
            expected_owner[edit["row_start"]:edit["row_stop"], edit["col_start"]:edit["col_stop"]] = source
        got_owner = owner(mixed[k])
        # every element comes from the start or from one of the edits' sources ...
        assert set(np.unique(got_owner)) <= sources
        # ... at the same position (copies never move values) ...
        assert np.array_equal(position_of(mixed[k]), np.arange(M * D).reshape(M, D))
        # ... and from exactly the last edit covering that position, in order
        assert np.array_equal(got_owner, expected_owner)
        if coarse + fine > 0:
            assert (got_owner != start).any(), "edits must change the start embedding"


def test_replay_rebuilds_every_stored_mix(tmp_path, dataset):
    ids, labels, emb = dataset
    columns, mixed = mix_embeddings(ids, labels, emb, MixParams(per_class=10, coarse_steps=2, fine_steps=6))
    path = tmp_path / "mixed.parquet"
    write_embeddings(path, columns, mixed, {"seed": 0})
    table, stored, _ = read_embeddings(path)
    assert np.array_equal(stored, mixed)
    rows = table.to_pylist()
    assert len(rows) == 30
    for row, expected in zip(rows, stored):
        assert np.array_equal(replay_row(row, ids, emb), expected)


def test_apply_plan_does_not_modify_its_input(dataset):
    _, _, emb = dataset
    before = emb.copy()
    plan = draw_plan(np.random.default_rng(0), len(emb), M, D, 2, 4)
    apply_plan(plan, emb)
    assert np.array_equal(emb, before)


def test_same_seed_identical_other_seed_different(dataset):
    ids, labels, emb = dataset
    params = MixParams(per_class=8, coarse_steps=1, fine_steps=4, seed=11)
    cols1, mix1 = mix_embeddings(ids, labels, emb, params)
    cols2, mix2 = mix_embeddings(ids, labels, emb, params)
    assert np.array_equal(mix1, mix2)
    assert cols1["start_id"] == cols2["start_id"]
    assert cols1["edits"].equals(cols2["edits"])
    cols3, mix3 = mix_embeddings(ids, labels, emb, MixParams(per_class=8, coarse_steps=1, fine_steps=4, seed=12))
    assert not np.array_equal(mix1, mix3)
    assert cols1["edits"].to_pylist() != cols3["edits"].to_pylist()


def test_raising_per_class_keeps_earlier_mixes(dataset):
    ids, labels, emb = dataset
    small_cols, small = mix_embeddings(ids, labels, emb, MixParams(per_class=5, seed=2))
    big_cols, big = mix_embeddings(ids, labels, emb, MixParams(per_class=9, seed=2))
    for label in "abc":
        s = [i for i, lab in enumerate(small_cols["label"]) if lab == label]
        b = [i for i, lab in enumerate(big_cols["label"]) if lab == label][:5]
        assert np.array_equal(small[s], big[b])
        assert [small_cols["start_id"][i] for i in s] == [big_cols["start_id"][i] for i in b]
        assert [small_cols["edits"][i].as_py() for i in s] == [big_cols["edits"][i].as_py() for i in b]


def test_adding_a_class_keeps_other_classes_mixes(dataset, provenance):
    ids, labels, emb = dataset
    params = MixParams(per_class=6, seed=5)
    cols, mixed = mix_embeddings(ids, labels, emb, params)
    more = provenance(len(ids) + 2, M, D)
    cols2, mixed2 = mix_embeddings(ids + ["z-0", "z-1"], labels + ["z", "z"], more, params)
    assert np.array_equal(mixed2[: len(mixed)], mixed)
    assert cols2["start_id"][: len(mixed)] == cols["start_id"]


def test_single_caption_class_raises_naming_the_class(dataset):
    ids, labels, emb = dataset
    ids = ids + ["lonely-0"]
    labels = labels + ["lonely"]
    emb = np.concatenate([emb, emb[:1]])
    with pytest.raises(MixError, match=r"class 'lonely' \(1 captions\)"):
        mix_embeddings(ids, labels, emb, MixParams(per_class=3, coarse_steps=0, fine_steps=1))
    # without mixing steps a single caption is fine: the mixes are that caption
    cols, mixed = mix_embeddings(ids, labels, emb, MixParams(per_class=3, coarse_steps=0, fine_steps=0))
    assert cols["start_id"][-3:] == ["lonely-0"] * 3


def test_draw_plan_with_no_embeddings_raises():
    with pytest.raises(MixError):
        draw_plan(np.random.default_rng(0), 0, M, D, 1, 1)


def test_mix_class_uses_one_stream_per_index(dataset):
    _, _, emb = dataset
    params = MixParams(per_class=4, coarse_steps=1, fine_steps=3, seed=9)
    results = mix_class(emb[:4], "a", params)
    for index, (plan, mixed) in enumerate(results):
        expected = draw_plan(class_stream(9, "a", index), 4, M, D, 1, 3)
        assert plan == expected
        assert np.array_equal(mixed, apply_plan(expected, emb[:4]))
    other_label = mix_class(emb[:4], "b", params)
    assert [p for p, _ in other_label] != [p for p, _ in results]


def test_ranges_and_sources_are_uniform():
    rng = np.random.default_rng(0)
    count, m, d = 4, 5, 7
    draws = 12000
    starts = collections.Counter()
    sources = collections.Counter()
    row_pairs = collections.Counter()
    col_pairs = collections.Counter()
    fine_rows = collections.Counter()
    for _ in range(draws):
        plan = draw_plan(rng, count, m, d, 1, 1)
        coarse, fine = plan.edits
        starts[plan.start] += 1
        sources[(plan.start, coarse.source)] += 1
        row_pairs[(coarse.row_start, coarse.row_stop)] += 1
        col_pairs[(fine.col_start, fine.col_stop)] += 1
        fine_rows[fine.row_start] += 1
    # r takes values from both ends of its range: r = 1 (row_start 0) and r = m - 1 (row_start m - 2),
    # s from s = 2 up to s = m; likewise for the columns
    assert min(r for r, _ in row_pairs) == 0 and max(r for r, _ in row_pairs) == m - 2
    assert min(s for _, s in row_pairs) == 2 and max(s for _, s in row_pairs) == m
    assert min(u for u, _ in col_pairs) == 0 and max(u for u, _ in col_pairs) == d - 2
    assert max(v for _, v in col_pairs) == d
    # every ordered pair 1 <= r < s <= size is possible and about equally likely
    all_row_pairs = {(r - 1, s) for r, s in itertools.combinations(range(1, m + 1), 2)}
    assert set(row_pairs) == all_row_pairs
    expected = draws / len(all_row_pairs)
    assert all(abs(c - expected) < 0.2 * expected for c in row_pairs.values()), row_pairs
    all_col_pairs = {(u - 1, v) for u, v in itertools.combinations(range(1, d + 1), 2)}
    assert set(col_pairs) == all_col_pairs
    expected = draws / len(all_col_pairs)
    assert all(abs(c - expected) < 0.2 * expected for c in col_pairs.values()), col_pairs
    # starts, fine rows and (start, source) pairs are uniform too
    assert all(abs(c - draws / count) < 0.1 * draws / count for c in starts.values())
    assert set(fine_rows) == set(range(m))
    assert all(abs(c - draws / m) < 0.1 * draws / m for c in fine_rows.values())
    assert set(sources) == {(a, b) for a in range(count) for b in range(count) if a != b}
    per_pair = draws / (count * (count - 1))
    assert all(abs(c - per_pair) < 0.2 * per_pair for c in sources.values())


def test_mix_task_writes_the_unmixed_table_with_p_q_zero(tmp_path, dataset):
    from tasks.mix import mix

    ids, labels, emb = dataset
    write_embeddings(tmp_path / "embeddings.parquet", {"id": ids, "label": labels}, emb, {"encoder": "x"})
    params = MixParams(per_class=9, coarse_steps=1, fine_steps=3, seed=4)
    out, unmixed_file = tmp_path / "mixed.parquet", tmp_path / "unmixed.parquet"
    assert mix.fn(params, str(tmp_path), str(out), str(unmixed_file)) == 3 * 9
    mvc_table, mvc, mvc_info = read_embeddings(out)
    table, unmixed, info = read_embeddings(unmixed_file)
    assert (info["coarse_steps"], info["fine_steps"], info["seed"]) == (0, 0, 4)
    assert (mvc_info["coarse_steps"], mvc_info["fine_steps"]) == (1, 3)
    assert table["id"].to_pylist() == mvc_table["id"].to_pylist() and unmixed.shape == mvc.shape
    label_of = dict(zip(ids, labels))
    for row, embedding in zip(table.to_pylist(), unmixed):
        # an unedited caption embedding of the same class, exactly ...
        assert row["edits"] == []
        assert label_of[row["start_id"]] == row["label"]
        assert np.array_equal(embedding, emb[ids.index(row["start_id"])])
        assert np.array_equal(owner(embedding), np.full((M, D), ids.index(row["start_id"])))
    # ... the very start embedding of the MVC mix with the same index, which the edits then changed
    assert table["start_id"].to_pylist() == mvc_table["start_id"].to_pylist()
    assert not any(np.array_equal(a, b) for a, b in zip(unmixed, mvc))
    assert unmixed_params(params) == MixParams(per_class=9, coarse_steps=0, fine_steps=0, seed=4)

"""generate.replicates: each extra generator's params (its own folder, shifted seeds, the MVC set alone), the
cells it repeats, and a params file that loads back to the same params."""

from __future__ import annotations

import pytest
import yaml

from mvcaug.judging.cells import Cell
from mvcaug.core.params import Params
from mvcaug.io.params_file import load_params
from mvcaug.method.replicates import REPEATED_PATHS, params_document, repeated_cells, replicate_params


def test_a_generator_writes_into_its_own_folder_with_shifted_seeds():
    params = Params()
    own = replicate_params(params, 2)
    for name in REPEATED_PATHS:
        assert getattr(own.paths, name).startswith("data/11_replicates/r2/")
    assert own.paths.mixed == "data/11_replicates/r2/mixed.parquet" and own.paths.model == "data/11_replicates/r2/model"
    assert len({getattr(own.paths, name) for name in REPEATED_PATHS}) == len(REPEATED_PATHS)
    assert own.paths.prepared == params.paths.prepared and own.paths.pretrain == params.paths.pretrain  # shared
    assert (own.mix.seed, own.finetune.seed, own.generate.seed) == (2, 2, 2)
    assert not own.generate.ablation and not own.generate.compare_pretrained and own.generate.replicates == 1
    assert own.train == params.train  # the same classifier seeds and settings: nested, not new ones
    with pytest.raises(ValueError, match="main run is generator 0"):
        replicate_params(params, 0)


def test_only_the_cells_on_the_mvc_set_are_repeated():
    cells = [Cell("small_cnn", "default", strategy, 0, synthetic_set=s, added_per_class=k)
             for strategy, s, k in (("real", "mvc", 0), ("combined", "mvc", 0), ("rsp", "mvc", 0),
                                    ("combined", "unmixed", 0), ("combined", "mvc", 5), ("more_real", "mvc", 5),
                                    ("corpus", "mvc", 5), ("real_two_phase", "mvc", 0), ("two_phase", "mvc", 0))]
    assert [c.name for c in repeated_cells(cells)] == [
        "small_cnn-default-combined-seed0", "small_cnn-default-rsp-seed0", "small_cnn-default-combined-n5-seed0",
        "small_cnn-default-two_phase-seed0"]


def test_a_replicate_params_file_loads_back_to_the_same_params(tmp_path):
    own = replicate_params(load_params("params.yaml"), 1)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params_document(own), sort_keys=False))
    assert load_params(path) == own

"""The generator sweep's choice on validation (sweeps/diversity.py): ties keep the defaults, except that the amount
of training (pretraining and fine-tuning steps) goes to the least work tied with the top."""

from __future__ import annotations

import importlib.util
import json

from mvcaug.judging.stats import rank_with_ties
from tests.workspace import ROOT, commit_all, run

spec = importlib.util.spec_from_file_location("sweep_diversity", ROOT / "sweeps" / "diversity.py")
assert spec is not None and spec.loader is not None
sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep)


def test_ties_keep_the_defaults_except_that_the_fewest_fine_tuning_steps_win():
    names = {"defaults": "defaults", "s100": "fine-tuning steps 100", "s200": "fine-tuning steps 200",
             "g3": "guidance 3", "g15": "guidance 1.5"}
    defaults = {"pretrain.steps": 1400, "pretrain.batch_size": 64, "finetune.steps": 800, "finetune.batch_size": 32}

    def rank(**means: float):
        """Five seeds each with a spread of 1 pp: differences under about 1.5 pp are ties."""
        return rank_with_ties({names[key]: (mean, 0.01, 5) for key, mean in means.items()})
    # all tied: the least work among the defaults and the steps-only settings
    assert sweep.choose(rank(defaults=0.953, s200=0.954, s100=0.950), defaults) == "fine-tuning steps 100"
    # fewer steps measurably worse: it is not tied, so more steps stay
    assert sweep.choose(rank(defaults=0.953, s200=0.952, s100=0.900), defaults) == "fine-tuning steps 200"
    # a tied knob that changes what is learned never wins a tie against the defaults
    assert sweep.choose(rank(g15=0.956, defaults=0.953), defaults) == "defaults"
    # a top that is measurably better than every steps-only setting is chosen
    assert sweep.choose(rank(g15=0.990, defaults=0.900, s100=0.890), defaults) == "guidance 1.5"
    assert sweep.work("guidance 3", defaults) is None
    assert sweep.work("defaults", defaults) == 1400 * 64 + 800 * 32
    assert sweep.work("fine-tuning steps 100", defaults) == 1400 * 64 + 100 * 32


def test_fewer_pretraining_steps_win_a_tie_as_the_least_training_samples():
    def rank(**means: float):
        names = {"defaults": "defaults", "p1050": "pretraining steps 1050", "s100": "fine-tuning steps 100"}
        return rank_with_ties({names[key]: (mean, 0.01, 5) for key, mean in means.items()})
    defaults = {"pretrain.steps": 1400, "pretrain.batch_size": 64, "finetune.steps": 400, "finetune.batch_size": 32}
    # 350 fewer pretraining steps of batch 64 (22,400 samples) are less work than 300 fewer fine-tuning steps of 32
    assert sweep.choose(rank(defaults=0.953, p1050=0.951, s100=0.952), defaults) == "pretraining steps 1050"
    # measurably worse on validation: the defaults' pretraining stays
    assert sweep.choose(rank(defaults=0.953, p1050=0.900), defaults) == "defaults"
    assert sweep.work("pretraining steps 1050", defaults) == 1050 * 64 + 400 * 32


def test_the_defaults_are_the_workspaces_committed_params_not_an_experiments_overrides(tmp_path):
    (tmp_path / "params.yaml").write_text("pretrain:\n  steps: 1400\nfinetune:\n  steps: 100\n  batch_size: 16\n")
    run(["git", "init", "-q"], tmp_path)
    commit_all(tmp_path, "workspace")
    (tmp_path / "params.yaml").write_text("pretrain:\n  steps: 700\n")  # what `dvc exp run -S` leaves behind
    work = sweep.default_work(tmp_path)
    assert work == {"pretrain.steps": 1400, "pretrain.batch_size": 64, "finetune.steps": 100, "finetune.batch_size": 16}


def test_a_pretrained_model_that_fails_its_self_check_is_no_candidate(tmp_path):
    (tmp_path / "params.yaml").write_text("paths:\n  pretrain: data/04_pretrain\n")
    metrics = tmp_path / "data" / "04_pretrain" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    check = {"heldout_accuracy": 1.0, "passed": False, "ratio": 0.8813, "ratio_needed": 0.9, "sample_accuracy": 0.8813}
    metrics.write_text(json.dumps({"source": "glyphs", "self_check": check}))
    assert sweep.failed_self_check(tmp_path) == "the pretrained model failed its self-check (ratio 0.88 < 0.9)"
    metrics.write_text(json.dumps({"source": "glyphs", "self_check": {**check, "passed": True, "ratio": 0.95}}))
    assert sweep.failed_self_check(tmp_path) is None
    metrics.write_text(json.dumps({"source": "none"}))  # no corpus of named glyphs, no self-check to fail
    assert sweep.failed_self_check(tmp_path) is None


def test_a_resumed_sweep_runs_only_the_settings_without_an_experiment():
    asked = ["defaults", "pretraining steps 1050", "guidance 3"]
    assert sweep.settings_to_run(asked, {"pretraining-steps-1050", "fine-tuning-steps-200"}) == ["defaults", "guidance 3"]
    assert sweep.settings_to_run(asked, []) == asked

"""The generator sweep's choice on validation (sweeps/diversity.py): ties keep the defaults, except that the amount
of fine-tuning goes to the fewest steps tied with the top."""

from __future__ import annotations

import importlib.util

from mvcaug.judging.stats import rank_with_ties
from tests.workspace import ROOT

spec = importlib.util.spec_from_file_location("sweep_diversity", ROOT / "sweeps" / "diversity.py")
assert spec is not None and spec.loader is not None
sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep)


def test_ties_keep_the_defaults_except_that_the_fewest_fine_tuning_steps_win():
    names = {"defaults": "defaults", "s100": "fine-tuning steps 100", "s200": "fine-tuning steps 200",
             "g3": "guidance 3", "g15": "guidance 1.5"}

    def rank(**means: float):
        """Five seeds each with a spread of 1 pp: differences under about 1.5 pp are ties."""
        return rank_with_ties({names[key]: (mean, 0.01, 5) for key, mean in means.items()})
    # all tied: the least work among the defaults and the steps-only settings
    assert sweep.choose(rank(defaults=0.953, s200=0.954, s100=0.950), 800) == "fine-tuning steps 100"
    # fewer steps measurably worse: it is not tied, so more steps stay
    assert sweep.choose(rank(defaults=0.953, s200=0.952, s100=0.900), 800) == "fine-tuning steps 200"
    # a tied knob that changes what is learned never wins a tie against the defaults
    assert sweep.choose(rank(g15=0.956, defaults=0.953), 800) == "defaults"
    # a top that is measurably better than every steps-only setting is chosen
    assert sweep.choose(rank(g15=0.990, defaults=0.900, s100=0.890), 800) == "guidance 1.5"
    assert sweep.work("guidance 3", 800) is None and sweep.work("defaults", 800) == 800

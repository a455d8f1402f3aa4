"""The synthetic sets a configuration generates, and where their files are."""

from __future__ import annotations

import pytest

from mvcaug.core.params import GenerateParams, ParamsError, PathsParams, params_from_dict
from mvcaug.data.synthetic_sets import SyntheticSet, synthetic_sets


def test_the_sets_follow_the_switches():
    paths = PathsParams()
    names = lambda **g: [s.name for s in synthetic_sets(paths, GenerateParams(**g))]  # noqa: E731
    assert names() == ["mvc", "unmixed"]
    assert names(ablation=False) == ["mvc"]
    assert names(compare_pretrained=True) == ["mvc", "unmixed", "pretrained"]
    pretrained = SyntheticSet.named("pretrained", paths)
    assert pretrained.pretrained_only and pretrained.folder == paths.synthetic_pretrained and pretrained.mixed == paths.mixed
    assert not SyntheticSet.named("mvc", paths).pretrained_only
    with pytest.raises(ValueError, match="unknown synthetic set 'other'"):
        SyntheticSet.named("other", paths)


def test_the_comparison_needs_a_pretrained_checkpoint_and_a_fine_tuned_generator():
    with pytest.raises(ParamsError, match="'generate.compare_pretrained'.*finetune.pretrained"):
        params_from_dict({"generate": {"compare_pretrained": True}})
    with pytest.raises(ParamsError, match="generate.mode: finetuned"):
        params_from_dict({"generate": {"compare_pretrained": True, "mode": "pretrained"},
                          "finetune": {"pretrained": "org/sd"}})
    assert params_from_dict({"generate": {"compare_pretrained": True}, "finetune": {"pretrained": "org/sd"}})

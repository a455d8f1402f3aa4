"""Classifier factory: built-ins, timm names, Wide-ResNet sizes and safetensors weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from mvcaug.models.classifiers import ClassifierError, builtin_names, create_classifier
from mvcaug.core.errors import MissingInputError
from mvcaug.models.wide_resnet import wide_resnet28



def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def head_of(model: torch.nn.Module) -> torch.nn.Module:
    """The final linear layer, for built-ins and timm models alike."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]


def test_wide_resnet_sizes_match_the_paper():
    assert n_params(wide_resnet28(10, 10)) == pytest.approx(36.48e6, rel=0.005)
    assert n_params(wide_resnet28(2, 10)) == pytest.approx(1.47e6, rel=0.005)


@pytest.mark.parametrize("in_chans", [1, 3])
def test_wide_resnet_forward(in_chans):
    model = wide_resnet28(2, 7, in_chans=in_chans, drop_rate=0.3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, in_chans, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize(
    "name", ["resnet50", "efficientnet_b0", "efficientnet_b3", "vit_small_patch16_224", "wide_resnet50_2",
             "small_cnn", "wrn28_2"]
)
def test_builds_with_the_right_head(name):
    model = create_classifier(name, num_classes=7, in_chans=3)
    assert head_of(model).out_features == 7


@pytest.mark.parametrize(("name", "kwargs"), [("small_cnn", {}), ("wrn28_2", {}), ("efficientnet_b0", {}),
                                              ("vit_small_patch16_224", {"img_size": 32})])
def test_small_models_run_at_32px_on_grayscale(name, kwargs):
    model = create_classifier(name, num_classes=5, in_chans=1, **kwargs).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)


def test_timm_weights_round_trip_drops_a_head_of_another_size(tmp_path, monkeypatch):
    source = create_classifier("resnet10t", num_classes=10, in_chans=1)
    path = tmp_path / "resnet10t.safetensors"
    save_file(source.state_dict(), str(path))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("weights must not be unpickled"))

    torch.manual_seed(0)
    fresh = create_classifier("resnet10t", num_classes=4, in_chans=1)
    torch.manual_seed(0)
    loaded = create_classifier("resnet10t", num_classes=4, in_chans=1, pretrained_path=str(path))

    expected, got, init = source.state_dict(), loaded.state_dict(), fresh.state_dict()
    backbone = [k for k in got if not k.startswith("fc.")]
    assert backbone and all(torch.equal(got[k], expected[k]) for k in backbone)
    assert got["fc.weight"].shape == (4, expected["fc.weight"].shape[1])
    assert torch.equal(got["fc.weight"], init["fc.weight"])  # freshly initialised, not copied


def test_timm_weights_keep_a_head_of_the_same_size(tmp_path):
    source = create_classifier("resnet10t", num_classes=6, in_chans=3)
    path = tmp_path / "w.safetensors"
    save_file(source.state_dict(), str(path))
    loaded = create_classifier("resnet10t", num_classes=6, in_chans=3, pretrained_path=str(path))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_rgb_weights_adapt_to_grayscale(tmp_path):
    source = create_classifier("resnet10t", num_classes=6, in_chans=3)
    path = tmp_path / "rgb.safetensors"
    save_file(source.state_dict(), str(path))
    loaded = create_classifier("resnet10t", num_classes=6, in_chans=1, pretrained_path=str(path))
    stem = "conv1.0.weight"
    # timm folds the RGB filters into one channel by summing them
    assert torch.allclose(loaded.state_dict()[stem], source.state_dict()[stem].sum(1, keepdim=True))


def test_builtin_weights_round_trip(tmp_path):
    source = create_classifier("small_cnn", num_classes=10, in_chans=1)
    path = tmp_path / "small.safetensors"
    save_file(source.state_dict(), str(path))
    loaded = create_classifier("small_cnn", num_classes=3, in_chans=1, pretrained_path=str(path))
    expected = source.state_dict()
    for key, value in loaded.state_dict().items():
        if key.startswith("head."):
            assert value.shape[0] == 3
        else:
            assert torch.equal(value, expected[key]), key
    with pytest.raises(ClassifierError, match="does not fit"):
        create_classifier("wrn28_2", num_classes=3, in_chans=1, pretrained_path=str(path))


def test_weights_must_be_local_safetensors(tmp_path):
    with pytest.raises(ClassifierError, match="must be a .safetensors file"):
        create_classifier("small_cnn", 3, 1, pretrained_path=str(tmp_path / "w.pt"))
    with pytest.raises(MissingInputError, match="no such classifier weights file"):
        create_classifier("small_cnn", 3, 1, pretrained_path=str(tmp_path / "missing.safetensors"))


def test_unknown_name_lists_the_choices():
    with pytest.raises(ClassifierError) as error:  # a user error: the stage prints it as one line
        create_classifier("no_such_net", 3, 3)
    message = str(error.value)
    assert message.startswith("train.models: unknown classifier 'no_such_net'") and "timm model name" in message
    assert all(name in message for name in builtin_names())

"""Classifier factory: the project's models registered with timm, timm names, Wide-ResNet sizes and
safetensors weights."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from mvcaug.core.errors import MissingInputError
from mvcaug.core.params import ModelSettings, Params, PathsParams, PrepareParams, TrainParams
from mvcaug.judging.cells import Cell
from mvcaug.judging.train import fit_cell
from mvcaug.models.classifiers import ClassifierError, builtin_names, classifier_kwargs
from mvcaug.io.classifiers import create_classifier, load_classifier
from mvcaug.models.registry import ModelNameClash, register_project_model
from mvcaug.models.small_cnn import SmallCNN
from mvcaug.models.wide_resnet import wide_resnet28
from tests.train_cells import digits_data

PROJECT_MODELS = ("small_cnn", "wrn28_2", "wrn28_10")
# how each was built before it was registered with timm: (num_classes, in_chans, **kwargs) -> module
OLD_WAY = {
    "small_cnn": lambda num_classes, in_chans, **kw: SmallCNN(in_chans, num_classes, **kw),
    "wrn28_2": lambda num_classes, in_chans, **kw: wide_resnet28(2, num_classes, in_chans, **kw),
    "wrn28_10": lambda num_classes, in_chans, **kw: wide_resnet28(10, num_classes, in_chans, **kw),
}
# settings whose width a Wide-ResNet must not receive (its width is in its name)
SETTINGS = ModelSettings(epochs=1, batch_size=32, width=4)
EXPECTED_KWARGS = {"small_cnn": {"width": 4}, "wrn28_2": {}, "wrn28_10": {}}
# training WRN-28-10 on the CPU takes a minute: its path is wrn28_2's, so make test-fast skips it
TRAINED_MODELS = ("small_cnn", "wrn28_2", pytest.param("wrn28_10", marks=pytest.mark.slow))


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


@pytest.mark.parametrize(("name", "kwargs"), [("small_cnn", {}), ("small_cnn", {"width": 8}), ("wrn28_2", {}),
                                              ("wrn28_2", {"drop_rate": 0.3}), ("wrn28_10", {})])
@pytest.mark.parametrize(("num_classes", "in_chans"), [(10, 1), (7, 3)])
def test_timm_builds_the_project_models_bit_identical_to_before(name, kwargs, num_classes, in_chans):
    """Same modules, parameters in the same creation order: the same seed gives the same initial weights and
    leaves the generator in the same state (dropout and shuffling draw from it next)."""
    torch.manual_seed(0)
    old = OLD_WAY[name](num_classes, in_chans, **kwargs)
    old_rng = torch.get_rng_state()
    torch.manual_seed(0)
    new = timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    assert type(new) is type(old) and repr(new) == repr(old)
    expected, got = old.state_dict(), new.state_dict()
    assert list(got) == list(expected)
    assert all(torch.equal(got[key], expected[key]) for key in expected)
    assert torch.equal(torch.get_rng_state(), old_rng)


def test_timm_lists_the_project_models_without_pretrained_weights():
    assert set(PROJECT_MODELS) <= set(timm.list_models()) and builtin_names() == sorted(PROJECT_MODELS)
    assert not set(PROJECT_MODELS) & set(timm.list_pretrained())
    cfg = timm.get_pretrained_cfg("wrn28_2")
    assert (cfg.first_conv, cfg.classifier, cfg.input_size) == ("stem", "head", (3, 32, 32))
    assert timm.get_pretrained_cfg("small_cnn").classifier == "head.1"


def test_a_name_timm_already_has_is_refused_not_replaced():
    timm_resnet18 = timm.models.model_entrypoint("resnet18")

    def resnet18(pretrained: bool = False, **kwargs):
        return SmallCNN(3, 10)

    with pytest.raises(ModelNameClash, match=r"timm already has a model named 'resnet18' \(timm\.models\.resnet\)"):
        register_project_model(resnet18)
    assert timm.models.model_entrypoint("resnet18") is timm_resnet18 and "resnet18" not in builtin_names()


@pytest.mark.parametrize("name", PROJECT_MODELS)
def test_a_models_settings_reach_it_through_its_entrypoint_not_its_name(name):
    assert classifier_kwargs(name, SETTINGS) == EXPECTED_KWARGS[name]
    assert classifier_kwargs("resnet10t", SETTINGS) == {} and classifier_kwargs("no_such_net", SETTINGS) == {}


@pytest.mark.parametrize("name", TRAINED_MODELS)
def test_the_train_stage_builds_each_model_from_its_settings(name):
    """fit_cell, the train stage's builder: small_cnn gets its width, a Wide-ResNet none (it would refuse one)."""
    data = digits_data(n_train=20, n_val=10, n_test=10)
    grid = TrainParams(models=(name,), strategies=("real",), seeds=(0,), model_settings={name: SETTINGS})
    _, model = fit_cell(Cell(name, "default", "real", 0), data, grid)
    reference = create_classifier(name, len(data.classes), 1, **EXPECTED_KWARGS[name])
    assert type(model) is type(reference)
    assert [p.shape for p in model.parameters()] == [p.shape for p in reference.parameters()]


@pytest.mark.parametrize("name", TRAINED_MODELS)
def test_the_filter_saves_a_classifier_that_rebuilds_from_its_config(name, digits_prepared, tmp_path):
    """The filter's real-only classifier: its config's kwargs come from its settings, and load_classifier
    rebuilds the same model from them (every saved tensor fits)."""
    from tasks.filter import classifier_folder, train_real_classifier

    folder, _ = digits_prepared
    params = Params(paths=PathsParams(prepared=str(folder), filter=str(tmp_path / "filter")),
                    prepare=PrepareParams(resolution=16, channels=1),
                    train=TrainParams(models=(name,), model_settings={name: SETTINGS}))
    config = train_real_classifier.fn(params)
    assert config["model"] == name and config["kwargs"] == EXPECTED_KWARGS[name]
    model, _ = load_classifier(classifier_folder(params))
    assert type(model) is type(create_classifier(name, 10, 1, **EXPECTED_KWARGS[name]))

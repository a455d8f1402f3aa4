"""Downstream classifiers by name: the project's built-ins, or any timm architecture.

One string names the classifier in params and results, so a run can be repeated with another
network without code changes. Weights only ever come from a local ``.safetensors`` file (no pickle,
no download); a head whose class count differs from the checkpoint's is dropped and re-initialised,
so ImageNet-style backbones can be fine-tuned on a small dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
import torch
from safetensors import safe_open
from timm.models import get_pretrained_cfg

from mvcaug.core.errors import MissingInputError, UserError
from mvcaug.models.small_cnn import SmallCNN
from mvcaug.models.wide_resnet import wide_resnet28

log = logging.getLogger(__name__)

Builder = Callable[..., torch.nn.Module]


class ClassifierError(UserError, ValueError):
    """A classifier name or weights file in train.models / train.model_settings cannot be used."""

# name -> builder(num_classes, in_chans, **kwargs)
_BUILTINS: dict[str, Builder] = {
    "small_cnn": lambda num_classes, in_chans, **kw: SmallCNN(in_chans, num_classes, **kw),
    "wrn28_2": lambda num_classes, in_chans, **kw: wide_resnet28(2, num_classes, in_chans, **kw),
    "wrn28_10": lambda num_classes, in_chans, **kw: wide_resnet28(10, num_classes, in_chans, **kw),
}
# The built-ins' classifier heads: parameters under this prefix are re-initialised on a class-count change.
_BUILTIN_HEAD = "head."

def builtin_names() -> list[str]:
    """The names create_classifier builds itself, without timm."""
    return sorted(_BUILTINS)


def create_classifier(
    name: str, num_classes: int, in_chans: int, pretrained_path: str = "", **kwargs: Any
) -> torch.nn.Module:
    """Build a classifier by name, optionally starting from local safetensors weights.

    Args:
        name: "small_cnn", "wrn28_2", "wrn28_10", or any timm model name (e.g. "resnet50").
        num_classes: Outputs of the classifier head.
        in_chans: Input channels (1 grayscale, 3 RGB).
        pretrained_path: A local ``.safetensors`` state dict; "" for random initialisation. A head of
            another class count is dropped and re-initialised; timm also adapts the stem to `in_chans`.
        **kwargs: Passed to the model's constructor (timm: e.g. ``img_size=32``, ``drop_rate``;
            small_cnn: ``width``; Wide-ResNets: ``drop_rate``).

    Raises:
        ClassifierError: For a name that is neither a built-in nor a timm model, or a weights file that
            is not ``.safetensors`` or does not fit the model.
        MissingInputError: When `pretrained_path` does not exist.
    """
    path = _checked_weights_path(pretrained_path) if pretrained_path else None
    if name in _BUILTINS:
        model = _BUILTINS[name](num_classes, in_chans, **kwargs)
        if path is not None:
            _load_builtin(model, path)
        return model
    if not timm.is_model(name):
        raise ClassifierError(
            f"train.models: unknown classifier {name!r}; use one of {', '.join(builtin_names())} "
            "or a timm model name (python -c 'import timm; print(timm.list_models())')"
        )
    if path is None:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    overlay = _checkpoint_overlay(name, path)
    model = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=num_classes, in_chans=in_chans, **kwargs
    )
    kept = overlay["num_classes"] == num_classes
    log.info("%s: loaded %s (%s)", name, path, "head kept" if kept else "head re-initialised")
    return model


def check_pretrained_files(models: Sequence[str], model_settings: Mapping[str, Any]) -> None:
    """Every `train.model_settings.<model>.pretrained` of a model in train.models names a .safetensors
    file that exists: checked before any cell trains, so a missing file stops the stage at once, naming
    the key, rather than after hours of other cells."""
    for model in models:
        if model_settings[model].pretrained:
            _checked_weights_path(model_settings[model].pretrained, f"train.model_settings.{model}.pretrained")


def _checked_weights_path(pretrained_path: str, key: str = "train.model_settings.<model>.pretrained") -> Path:
    """Only safetensors: other formats would go through pickle (torch.load)."""
    path = Path(pretrained_path)
    if path.suffix != ".safetensors":
        raise ClassifierError(f"{path}: classifier weights ({key}) must be a .safetensors file: other formats "
                              "would need pickle")
    if not path.is_file():
        raise MissingInputError(f"{path}: no such classifier weights file; fix {key} (README: pretrained classifiers "
                                "shows how to make it) or set it to \"\" to train from scratch")
    return path


def _checkpoint_overlay(name: str, path: Path) -> dict[str, Any]:
    """A pretrained_cfg overlay describing the checkpoint file, read from its header only.

    timm decides whether to drop the head by comparing the model's num_classes with the cfg's, and how
    to adapt the stem from the cfg's input channels; both must describe this file, not ImageNet.
    """
    cfg = get_pretrained_cfg(name)
    heads = _as_tuple(cfg.classifier)
    stems = _as_tuple(cfg.first_conv)
    with safe_open(str(path), framework="pt") as weights:
        shapes = {key: weights.get_slice(key).get_shape() for key in weights.keys()}
    # a checkpoint without a head (num_classes=0) never matches a real head: 0 makes timm load non-strictly
    head_rows = next((shapes[f"{h}.weight"][0] for h in heads if f"{h}.weight" in shapes), 0)
    overlay: dict[str, Any] = {"file": str(path), "num_classes": head_rows}
    stem = next((shapes[f"{s}.weight"] for s in stems if f"{s}.weight" in shapes), None)
    if stem is not None and len(stem) == 4 and cfg.input_size:
        overlay["input_size"] = (stem[1], *cfg.input_size[1:])
    return overlay


def _as_tuple(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _load_builtin(model: torch.nn.Module, path: Path) -> None:
    """Load a built-in's weights; head tensors of another shape are skipped, anything else must match."""
    state = safetensors.torch.load_file(str(path))
    own = model.state_dict()
    dropped = [k for k in state if k.startswith(_BUILTIN_HEAD) and k in own and state[k].shape != own[k].shape]
    for key in dropped:
        del state[key]
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in dropped]
    if missing or result.unexpected_keys:
        raise ClassifierError(
            f"{path} does not fit this model: missing {missing}, unexpected {result.unexpected_keys}"
        )
    if dropped:
        log.info("loaded %s; head re-initialised (%s)", path, ", ".join(dropped))
    else:
        log.info("loaded %s", path)


CLASSIFIER_WEIGHTS = "model.safetensors"
CLASSIFIER_CONFIG = "config.json"


def save_classifier(model: torch.nn.Module, folder: str | Path, config: dict[str, Any]) -> None:
    """The weights (safetensors) and what rebuilds the model (name, classes, channels, constructor kwargs)."""
    from mvcaug.io.atomic import atomic_path, write_json

    folder = Path(folder)
    with atomic_path(folder / CLASSIFIER_WEIGHTS) as tmp:
        safetensors.torch.save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_json(folder / CLASSIFIER_CONFIG, config)


def load_classifier(folder: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(the model in eval mode, its config) as save_classifier wrote them."""
    import json

    folder = Path(folder)
    if not (folder / CLASSIFIER_CONFIG).is_file():
        raise MissingInputError(f"{folder}: no saved classifier ({CLASSIFIER_CONFIG}); run the stage that writes it")
    config = json.loads((folder / CLASSIFIER_CONFIG).read_text())
    model = create_classifier(config["model"], len(config["classes"]), config["channels"], **config.get("kwargs", {}))
    model.load_state_dict(safetensors.torch.load_file(str(folder / CLASSIFIER_WEIGHTS)))
    return model.eval(), config

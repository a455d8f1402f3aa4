"""Classifier weights in and out of files: a classifier started from a local ``.safetensors`` file
(train.model_settings.<model>.pretrained), and the filter stage's real-only classifier saved for the quality
stage. The networks are built by name in mvcaug.models.classifiers; weights only ever come from safetensors
(no pickle, no download).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvcaug.core.errors import MissingInputError
from mvcaug.io.atomic import atomic_path, write_json

if TYPE_CHECKING:
    import torch

__all__ = ["create_classifier", "check_pretrained_files", "save_classifier", "load_classifier"]

log = logging.getLogger(__name__)


CLASSIFIER_WEIGHTS = "model.safetensors"
CLASSIFIER_CONFIG = "config.json"


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
        **kwargs: Passed to the model's constructor through timm (e.g. ``img_size=32``, ``drop_rate``;
            small_cnn: ``width``; Wide-ResNets: ``drop_rate``); `classifier_kwargs` turns a model's
            settings into these.

    Raises:
        ClassifierError: For a name that is not a timm model (the project's own are registered ones),
            or a weights file that is not ``.safetensors`` or does not fit the model.
        MissingInputError: When `pretrained_path` does not exist.
    """
    import safetensors.torch
    import timm
    from safetensors import safe_open
    from mvcaug.models.classifiers import (
        build_classifier, builtin_names, check_known, checkpoint_overlay, load_builtin_state,
    )

    path = checked_weights_path(pretrained_path) if pretrained_path else None
    if path is None or name in builtin_names():
        model = build_classifier(name, num_classes, in_chans, **kwargs)
        if path is not None:
            load_builtin_state(model, safetensors.torch.load_file(str(path)), path)
        return model
    check_known(name)
    with safe_open(str(path), framework="pt") as weights:
        shapes = {key: weights.get_slice(key).get_shape() for key in weights.keys()}
    overlay = checkpoint_overlay(name, shapes, str(path))
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
            checked_weights_path(model_settings[model].pretrained, f"train.model_settings.{model}.pretrained")


def checked_weights_path(pretrained_path: str, key: str = "train.model_settings.<model>.pretrained") -> Path:
    """Only safetensors: other formats would go through pickle (torch.load)."""
    path = Path(pretrained_path)
    if path.suffix != ".safetensors":
        from mvcaug.models.classifiers import ClassifierError  # timm and torch: only for the error
        raise ClassifierError(f"{path}: classifier weights ({key}) must be a .safetensors file: other formats "
                              "would need pickle")
    if not path.is_file():
        raise MissingInputError(f"{path}: no such classifier weights file; fix {key} (README: pretrained classifiers "
                                "shows how to make it) or set it to \"\" to train from scratch")
    return path


def save_classifier(model: torch.nn.Module, folder: str | Path, config: dict[str, Any]) -> None:
    """The weights (safetensors) and what rebuilds the model (name, classes, channels, constructor kwargs)."""
    import safetensors.torch

    folder = Path(folder)
    with atomic_path(folder / CLASSIFIER_WEIGHTS) as tmp:
        safetensors.torch.save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_json(folder / CLASSIFIER_CONFIG, config)


def load_classifier(folder: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(the model in eval mode, its config) as save_classifier wrote them."""
    import safetensors.torch

    folder = Path(folder)
    if not (folder / CLASSIFIER_CONFIG).is_file():
        raise MissingInputError(f"{folder}: no saved classifier ({CLASSIFIER_CONFIG}); run the stage that writes it")
    config = json.loads((folder / CLASSIFIER_CONFIG).read_text())
    model = create_classifier(config["model"], len(config["classes"]), config["channels"], **config.get("kwargs", {}))
    model.load_state_dict(safetensors.torch.load_file(str(folder / CLASSIFIER_WEIGHTS)))
    return model.eval(), config

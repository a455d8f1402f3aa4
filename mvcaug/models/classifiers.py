"""Downstream classifiers by name: any timm architecture, the project's own included.

One string names the classifier in params and results, so a run can be repeated with another
network without code changes. The project's own classifiers (small_cnn, wrn28_2, wrn28_10) are
registered with timm when this module imports their modules, so `timm.create_model` builds every one;
a model's settings reach its constructor through `classifier_kwargs`, never a test of its name.
Weights only ever come from a local ``.safetensors`` file (no pickle, no download; mvcaug.io.classifiers reads
and writes them); a head whose class count differs from the checkpoint's is dropped and re-initialised, so
ImageNet-style backbones can be fine-tuned on a small dataset.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import get_pretrained_cfg, model_entrypoint

import mvcaug.models.small_cnn  # noqa: F401  (registers small_cnn with timm)
import mvcaug.models.wide_resnet  # noqa: F401  (registers wrn28_2, wrn28_10 with timm)
from mvcaug.core.errors import UserError
from mvcaug.core.params import ModelSettings
from mvcaug.models.registry import project_model_names

__all__ = ["ClassifierError", "builtin_names", "classifier_kwargs", "check_known", "build_classifier",
    "checkpoint_overlay", "load_builtin_state"]

log = logging.getLogger(__name__)


class ClassifierError(UserError, ValueError):
    """A classifier name or weights file in train.models / train.model_settings cannot be used."""

# The built-ins' classifier heads: parameters under this prefix are re-initialised on a class-count change.
_BUILTIN_HEAD = "head."
# ModelSettings fields that are constructor arguments, passed to a model whose timm entrypoint names them.
_SETTINGS_ARGUMENTS = ("width",)


def builtin_names() -> list[str]:
    """The project's own classifiers, registered with timm by this package."""
    return project_model_names()


def classifier_kwargs(name: str, settings: ModelSettings) -> dict[str, Any]:
    """The create_model kwargs a model's settings give: each ModelSettings field of _SETTINGS_ARGUMENTS that
    the model's timm entrypoint declares as a parameter (small_cnn: width); none for other models."""
    if not timm.is_model(name):
        return {}  # create_classifier refuses the name, listing the choices
    parameters = inspect.signature(model_entrypoint(name)).parameters
    return {field: getattr(settings, field) for field in _SETTINGS_ARGUMENTS if field in parameters}


def check_known(name: str) -> None:
    """Refuse a name that is not a timm model (the project's own are registered ones), listing the choices."""
    if not timm.is_model(name):
        raise ClassifierError(
            f"train.models: unknown classifier {name!r}; use one of {', '.join(builtin_names())} "
            "or a timm model name (python -c 'import timm; print(timm.list_models())')"
        )


def build_classifier(name: str, num_classes: int, in_chans: int, **kwargs: Any) -> torch.nn.Module:
    """A classifier by name, randomly initialised (mvcaug.io.classifiers.create_classifier also starts one from a
    weights file); kwargs go to its constructor through timm (`classifier_kwargs` turns settings into them)."""
    check_known(name)
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def checkpoint_overlay(name: str, shapes: Mapping[str, Sequence[int]], file: str) -> dict[str, Any]:
    """A pretrained_cfg overlay describing a checkpoint file from its tensors' shapes (its header).

    timm decides whether to drop the head by comparing the model's num_classes with the cfg's, and how
    to adapt the stem from the cfg's input channels; both must describe this file, not ImageNet.
    """
    cfg = get_pretrained_cfg(name)
    assert cfg is not None, f"{name}: timm has no pretrained cfg for it"  # callers check_known(name) first
    heads = _as_tuple(cfg.classifier)
    stems = _as_tuple(cfg.first_conv)
    # a checkpoint without a head (num_classes=0) never matches a real head: 0 makes timm load non-strictly
    head_rows = next((shapes[f"{h}.weight"][0] for h in heads if f"{h}.weight" in shapes), 0)
    overlay: dict[str, Any] = {"file": file, "num_classes": head_rows}
    stem = next((shapes[f"{s}.weight"] for s in stems if f"{s}.weight" in shapes), None)
    if stem is not None and len(stem) == 4 and cfg.input_size:
        overlay["input_size"] = (stem[1], *cfg.input_size[1:])
    return overlay


def _as_tuple(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def load_builtin_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load a built-in's weights (`state`, read from `path`); head tensors of another shape are skipped, anything
    else must match. Not timm's loader: once it drops a head it loads non-strictly, so a file of another model
    would pass."""
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

"""The project's own classifiers in timm's model registry, so one string factory builds every classifier.

`timm.create_model(name, num_classes=..., in_chans=..., **kwargs)` then builds small_cnn, wrn28_2 and
wrn28_10 as it builds resnet50. timm's `register_model` replaces a model of the same name with only a
warning; `register_project_model` refuses instead, so a timm release that adds one of these names stops
the import with a message rather than silently changing what a params.yaml name trains.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

from timm.models import is_model, model_entrypoint, register_model
from torch import nn

__all__ = ["ModelNameClash", "register_project_model", "project_model_names"]

Entrypoint = TypeVar("Entrypoint", bound=Callable[..., nn.Module])

_PROJECT_MODELS: set[str] = set()


class ModelNameClash(RuntimeError):
    """A project model's name is already a timm model's: registering it would replace timm's."""


def register_project_model(fn: Entrypoint) -> Entrypoint:
    """Register a timm entrypoint under its function name, refusing a name timm already has.

    The entrypoint's module must define `default_cfgs` (timm's `generate_default_cfgs`) before it, so that
    timm records the model's pretrained_cfg (input size, first conv, classifier) with it.

    Raises:
        ModelNameClash: When another module already registered the name.
    """
    name = fn.__name__
    if is_model(name):
        current = model_entrypoint(name)
        if (current.__module__, current.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ModelNameClash(
                f"{fn.__module__}.{name}: timm already has a model named {name!r} ({current.__module__}); "
                "registering the project's would replace it: rename the project's model"
            )
        with warnings.catch_warnings():  # this module imported again (importlib.reload): our own entry
            warnings.simplefilter("ignore")
            register_model(fn)
    else:
        register_model(fn)
    _PROJECT_MODELS.add(name)
    return fn


def project_model_names() -> list[str]:
    """The classifiers this package registered with timm (those of the imported modules)."""
    return sorted(_PROJECT_MODELS)

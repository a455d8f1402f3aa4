"""The params file (params.yaml, or a profile) read from disk; parsing and validating it is mvcaug.core.params."""

from __future__ import annotations

from pathlib import Path

from mvcaug.core.params import Params, ParamsError, params_from_yaml

__all__ = ["load_params"]


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; every problem names the file, the key and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found; run from the project root or pass its path")
    return params_from_yaml(path.read_text(), str(path))

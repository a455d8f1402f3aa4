"""Run a stage flow from the command line: `python -m flows.<stage> [--params params.yaml]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from mvcaug.errors import USER_ERRORS


def run_stage(flow: Callable[..., object]) -> None:
    """Parse --params, run the flow; a user error prints one clear line and exits 1, no traceback."""
    parser = argparse.ArgumentParser(description=flow.__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args()
    try:
        flow(params_file=args.params)
    except USER_ERRORS as err:
        sys.exit(f"error: {err}")

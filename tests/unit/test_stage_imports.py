"""A stage process imports no heavy library before its first line of work (issue 22: at most 3 s of start-up):
torch, diffusers and the rest are imported by the task that uses them, so a stage with nothing to do never loads
them. The time itself is measured by benchmarks/stage_startup.py, not here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
STAGES = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate", "timm", "torchvision", "dvclive", "sklearn",
         "matplotlib", "dask", "safetensors", "scipy.stats")


@pytest.mark.parametrize("stage", STAGES)
def test_importing_a_stage_loads_no_heavy_library(stage: str) -> None:
    code = f"import sys, json, flows.{stage}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out.splitlines()[-1]))
    assert f"flows.{stage}" in loaded
    assert not [name for name in HEAVY if name in loaded], f"flows.{stage} imports {sorted(set(HEAVY) & loaded)}"

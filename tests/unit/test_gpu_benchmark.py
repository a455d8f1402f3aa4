"""benchmarks/gpu.py, the GPU check, runs end to end: on a tiny checkpoint on the CPU (--tiny)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_benchmark_runs_every_check_on_a_tiny_checkpoint(tmp_path):
    out = tmp_path / "gpu.json"
    result = subprocess.run([sys.executable, "benchmarks/gpu.py", "--tiny", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    cases = {case["case"]: case for case in figures["finetune"]}
    assert len(cases) == 6 and all(case["loss_finite"] and case["samples_per_s"] > 0 for case in cases.values())
    assert cases["LoRA r=8, no EMA"]["trained_parameters"] < cases["full, no EMA"]["trained_parameters"]
    assert cases["full, EMA on CPU"]["estimate_gib"] < cases["full, EMA on GPU"]["estimate_gib"]
    generation = figures["generation"]
    assert generation["max_abs_difference"] < 1e-5 and math.isfinite(generation["ratio"])
    assert figures["finite"] == {"bfloat16": True}
    assert figures["resume"]["equal"] and figures["resume"]["resumed_from_step"] == 3
    assert "| fine-tuning case" in result.stderr and "generation: ours" in result.stderr

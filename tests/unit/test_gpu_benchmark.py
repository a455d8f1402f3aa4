"""benchmarks/gpu.py, the GPU check, runs end to end: on a tiny checkpoint on the CPU (--tiny), in fp32 and
in half precision (bf16, which the CPU runs), so a dtype mismatch shows here and not on a user's GPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(*args: str) -> subprocess.CompletedProcess:
    """benchmarks/gpu.py in its own process, as a user runs it (Accelerate's precision is process-wide)."""
    return subprocess.run([sys.executable, "benchmarks/gpu.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_the_gpu_benchmark_runs_every_check_on_a_tiny_checkpoint(tmp_path):
    out = tmp_path / "gpu.json"
    result = run_benchmark("--tiny", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    cases = {case["case"]: case for case in figures["finetune"]}
    assert len(cases) == 8 and all(case["loss_finite"] and case["samples_per_s"] > 0 for case in cases.values())
    assert cases["LoRA r=8, no EMA"]["trained_parameters"] < cases["full, no EMA"]["trained_parameters"]
    assert cases["full, EMA on CPU"]["estimate_gib"] < cases["full, EMA on GPU"]["estimate_gib"]
    assert cases["full, no EMA, 32 px"]["estimate_gib"] > cases["full, no EMA"]["estimate_gib"]  # larger activations
    generation = figures["generation"]
    assert set(generation) == {"profile (Eq. 6)", "InstructPix2Pix"}
    assert generation["profile (Eq. 6)"]["guidance"] == [7.5, 1.0] and generation["InstructPix2Pix"]["guidance"] == [7.5, 1.5]
    for setting in generation.values():  # ours equals the stock pipeline at both guidance settings
        assert setting["max_abs_difference"] < 1e-5 and math.isfinite(setting["ratio"])
        assert setting["channels_last_max_abs_difference"] < 1e-4 and "compiled_images_per_s" not in setting
    assert figures["finite"] == {"bfloat16": True}
    assert figures["resume"]["equal"] and figures["resume"]["resumed_from_step"] == 3
    assert set(figures["targets"].values()) <= {True, False, None} and len(figures["targets"]) == 3
    assert "| fine-tuning case" in result.stderr and "generation (float32, profile (Eq. 6)" in result.stderr


def test_the_half_precision_configuration_runs_on_the_cpu_in_bf16(tmp_path):
    """--dtype bf16: our sampler and the stock pipeline (its text encoder too) in one dtype. With the
    pipeline's text encoder left in fp32, it casts the prompt embeddings to fp32 and feeds fp32 image
    latents to the bf16 VAE, which fails as fp16 does on CUDA."""
    out = tmp_path / "gpu.json"
    result = run_benchmark("--tiny", "--dtype", "bf16", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    for generation in json.loads(out.read_text())["generation"].values():
        assert generation["dtype"] == "bfloat16" and math.isfinite(generation["ratio"])
        assert generation["max_abs_difference"] < 0.05  # the same maths in bf16 on both sides
    assert "generation (bfloat16, profile (Eq. 6)" in result.stderr
    refused = run_benchmark("--tiny", "--dtype", "fp16")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "--dtype fp16 needs CUDA: the CPU runs bf16 (--dtype bf16)"

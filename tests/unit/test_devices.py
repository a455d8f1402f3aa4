"""Which dtype and classifier precision `auto` picks, by what the device computes natively."""

from __future__ import annotations

import pytest
import torch

from mvcaug.core.devices import auto_dtype, autocast_precision, native_bf16, resolve_dtype

CPU, CUDA, META = torch.device("cpu"), torch.device("cuda"), torch.device("meta")


@pytest.mark.parametrize(("device", "bf16", "expected"), [
    (CPU, True, torch.bfloat16),  # a CPU with AMX
    (CPU, False, torch.float32),  # bf16 would be emulated: slower than float32
    (CUDA, True, torch.bfloat16),  # Ampere on
    (CUDA, False, torch.float16),  # older GPUs
])
def test_auto_dtype_is_bf16_only_where_the_device_computes_it_natively(device, bf16, expected):
    assert auto_dtype(device, bf16) == expected


def test_auto_dtype_asks_the_device_when_not_told():
    assert auto_dtype(CPU) == (torch.bfloat16 if native_bf16(CPU) else torch.float32)
    assert resolve_dtype("auto", CPU) == auto_dtype(CPU)
    assert resolve_dtype("float32", CPU) == torch.float32  # an explicit dtype is taken as it is


def test_native_bf16_follows_the_cpu_amx_check_and_no_other_device_has_it():
    assert native_bf16(CPU) == torch.cpu._is_amx_tile_supported()
    assert not native_bf16(META)


@pytest.mark.parametrize(("setting", "bf16", "expected"), [
    ("auto", True, "bf16"), ("auto", False, "no"), ("no", True, "no"), ("bf16", False, "bf16"),
])
def test_autocast_precision_resolves_only_auto(setting, bf16, expected):
    assert autocast_precision(setting, CPU, bf16) == expected

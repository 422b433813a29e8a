"""precision: `--precision auto` is bf16 where the device computes it in hardware."""

from __future__ import annotations

import pytest
import torch

from budget_edge.runtime import machine
from budget_edge.train.precision import native_bf16, resolve_precision


@pytest.mark.parametrize("given", ["fp32", "bf16"])
def test_a_precision_given_is_kept(given: str) -> None:
    assert resolve_precision(given, "cpu") == given


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_on_the_cpu_follows_its_flags(monkeypatch: pytest.MonkeyPatch, has_bf16: bool) -> None:
    monkeypatch.setattr(machine, "cpu_has_bf16", lambda: has_bf16)
    assert resolve_precision("auto", "cpu") == ("bf16" if has_bf16 else "fp32")


@pytest.mark.parametrize(("capability", "native"), [((7, 0), False), ((8, 0), True)])
def test_auto_on_a_gpu_asks_its_compute_capability(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], native: bool
) -> None:
    """A V100 (7.0) only emulates bf16, though torch.cuda.is_bf16_supported() says yes;
    an A100 (8.0) and later compute it."""
    monkeypatch.setattr(machine, "cpu_has_bf16", lambda: not native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.version, "hip", None)
    assert native_bf16("auto") is native
    assert native_bf16("cuda") is native
    assert native_bf16("cpu") is not native  # --device cpu with a GPU: the CPU's flags

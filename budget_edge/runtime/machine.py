"""Where a benchmark ran: CPU, cores, OS, load, package versions, memory.

Latencies mean nothing without the machine they came from, so every bench
result records these facts. Torch-free, standard library only (plus the
versions of whatever inference packages are importable).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

import budget_edge

# Distributions whose versions change runtime numbers.
_PACKAGES = ("numpy", "onnxruntime", "onnxruntime-gpu", "tensorrt", "cuda-python", "torch")


def cpu_model(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> str:
    """The CPU's marketing name from /proc/cpuinfo; platform's guess elsewhere."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        # x86 says "model name"; many ARM kernels (Jetson) say "Model" or "Hardware".
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def cpu_flags(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> set[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo (x86 "flags", ARM
    "Features"); empty where there is no such file."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_has_bf16(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bf16 in hardware: AVX512-BF16 or AMX on x86, BF16 on Arm
    (without them, PyTorch's bf16 autocast is emulated and slow)."""
    return bool(cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16", "bf16"})


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (a busy machine gives noisy latencies)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    per_mib = 1024 * 1024 if sys.platform == "darwin" else 1024  # macOS reports bytes
    return round(peak / per_mib, 1)


def package_versions() -> dict[str, str]:
    """Versions of the installed packages that matter for inference speed."""
    versions = {"python": platform.python_version(), "budget_edge": budget_edge.__version__}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def machine_info() -> dict[str, Any]:
    """The facts a bench result records about where it ran."""
    return {
        "cpu": cpu_model(),
        "cpu_bf16": cpu_has_bf16(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "load_average": load_average(),
        "versions": package_versions(),
    }

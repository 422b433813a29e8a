"""Which autocast precision a training run uses: `--precision auto` picks bf16 where the
hardware computes it natively, fp32 elsewhere.

bf16 autocast trains about twice as fast as fp32 on CPUs with AVX512-BF16 or AMX and on
recent GPUs, and far slower on a CPU without them, where PyTorch emulates it: a 2-core
AMD EPYC with AVX2 only trained a ResNet-20 at 24 images/s in bf16 against 184 in fp32
(benchmarks/results/pretrain-throughput-avx2/).
A run resumed on another machine may change precision (the recipe stays the same); each
epoch's precision is in its history.
"""

from __future__ import annotations

TRAIN_PRECISIONS = ("fp32", "bf16")
PRECISION_CHOICES = (*TRAIN_PRECISIONS, "auto")


def native_bf16(device: str) -> bool:
    """Whether DEVICE ("cpu", "cuda" or "auto": the GPU if there is one) computes bf16
    in hardware."""
    import torch

    from budget_edge.runtime import machine

    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        # Ampere (compute capability 8) and later; torch.cuda.is_bf16_supported() also
        # says yes where bf16 is emulated (V100, T4).
        return bool(torch.version.hip) or torch.cuda.get_device_capability()[0] >= 8
    return machine.cpu_has_bf16()


def resolve_precision(precision: str, device: str) -> str:
    """fp32 or bf16 as given; "auto": bf16 where `native_bf16`, else fp32."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"

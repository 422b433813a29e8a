"""The torch-free runtime: load an exported artifact and run it under a budget.

    from budget_edge.runtime import BudgetRuntime
    rt = BudgetRuntime.load("artifacts/resnet56")
    result = rt.infer(images_uint8_nhwc, budget=0.5)
    result.classes, result.mask, result.flops, result.latency_ms

    # The same call as one request object (what the server and bench build):
    from budget_edge.runtime import Agent, InferenceRequest
    result = rt.run(InferenceRequest(images_uint8_nhwc, 0.5, Agent(mode="allocate")))

Needs numpy plus onnxruntime (or TensorRT and cuda-python); never torch.
"""

from budget_edge.runtime.budget import (
    BatteryBudget,
    FixedBudget,
    LatencyBudget,
    MinBudget,
    read_latency_table,
)
from budget_edge.runtime.manifest import (
    SCHEMA_VERSION,
    Manifest,
    ManifestError,
    verify_files,
    write_manifest,
)
from budget_edge.runtime.request import Agent, InferenceRequest, Mask, Static
from budget_edge.runtime.runtime import BudgetRuntime, InferResult

__all__ = [
    "SCHEMA_VERSION",
    "Agent",
    "BatteryBudget",
    "BudgetRuntime",
    "FixedBudget",
    "InferResult",
    "InferenceRequest",
    "LatencyBudget",
    "Manifest",
    "ManifestError",
    "Mask",
    "MinBudget",
    "Static",
    "read_latency_table",
    "verify_files",
    "write_manifest",
]

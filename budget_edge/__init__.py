"""budget-edge: BudgetNet for edge GPUs.

This module imports nothing heavy: a device installs only the runtime
(numpy plus onnxruntime or TensorRT), never torch.
"""

__version__ = "0.1.0"

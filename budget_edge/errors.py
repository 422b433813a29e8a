"""Errors a user can cause. The CLI prints them on one line and exits 2.

Torch-free: the runtime raises these too.
"""


class BudgetEdgeError(Exception):
    """Base class: something the user gave was wrong; the message says what to do."""


class CheckpointError(BudgetEdgeError):
    """A checkpoint is missing, corrupt, unsafe or in a layout we do not know."""


class DataError(BudgetEdgeError):
    """A dataset is missing, corrupt or in the wrong format."""


class ConfigError(BudgetEdgeError):
    """An option, model name or hyperparameter is invalid."""


class ManifestError(BudgetEdgeError):
    """An artifact directory or its manifest is missing, corrupt or inconsistent."""


class InputError(BudgetEdgeError):
    """An input to inference (images, budget, mask) is invalid."""


class BackendError(BudgetEdgeError):
    """An inference backend (ONNX Runtime, TensorRT) is missing or unusable."""


class TrainingError(BudgetEdgeError):
    """Training diverged (a loss turned NaN or infinite); nothing from that epoch was saved."""

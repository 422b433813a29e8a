"""Load the runtime tests' tiny-artifact builder (tests/runtime/conftest.py) elsewhere.

A conftest is not importable as a module, so it is loaded from its file once
per caller under its own module name.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BUILDER = Path(__file__).resolve().parent / "runtime" / "conftest.py"


def load_artifact_builder(module_name: str) -> ModuleType:
    """tests/runtime/conftest.py as a module named `module_name`."""
    spec = importlib.util.spec_from_file_location(module_name, BUILDER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module

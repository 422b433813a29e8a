"""The tiny torch-free artifacts of tests/runtime, shared with the bench tests."""

from runtime.conftest import resnet_artifact, resnext_artifact  # noqa: F401

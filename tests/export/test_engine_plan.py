"""Decisions of build-engines that need no GPU: settings, flags, profiles, file names."""

import pytest

from budget_edge.errors import ConfigError
from budget_edge.export.engine_plan import (
    builder_flags,
    engine_file,
    make_settings,
    profile_shapes,
    timing_cache_file,
)


def test_optimum_batch_defaults_to_one_frame():
    """A device classifies frames one by one; the runtime's gathered sub-batches are small."""
    assert make_settings("fp16", max_batch=32).opt_batch == 1
    assert make_settings("fp16", max_batch=32, opt_batch=16).opt_batch == 16


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"precision": "bf16"}, "fp32, fp16, int8"),
        ({"precision": "fp16", "max_batch": 0}, "--max-batch"),
        ({"precision": "fp16", "workspace_mib": 0}, "--workspace"),
        ({"precision": "fp16", "max_batch": 4, "opt_batch": 5}, "1..4"),
    ],
)
def test_bad_settings_are_config_errors(kwargs, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        make_settings(**kwargs)


def test_flags_per_precision():
    """Strongly typed networks: types come from the graphs, no weakly typed flags (which
    TensorRT 11 removed); fp32 clears TF32 to match ONNX Runtime."""
    assert builder_flags("fp32").set == ()
    assert builder_flags("fp32").clear == ("TF32",)
    assert builder_flags("fp16") == builder_flags("int8")
    assert builder_flags("int8").set == ()
    assert builder_flags("int8").clear == ()
    with pytest.raises(ConfigError):
        builder_flags("fp8")


def test_profile_spans_batch_one_to_max_with_fixed_rest():
    settings = make_settings("fp32", max_batch=16)
    shapes = profile_shapes("x", [-1, 16, 32, 32], settings)
    assert shapes.min == (1, 16, 32, 32)
    assert shapes.opt == (1, 16, 32, 32)
    assert shapes.max == (16, 16, 32, 32)
    # The policy's budget input is (N, 1).
    assert profile_shapes("budget", [-1, 1], settings).max == (16, 1)


@pytest.mark.parametrize("shape", [[1, 3, 32, 32], [-1, 3, -1, 32], []])
def test_profile_refuses_graphs_without_exactly_a_dynamic_batch(shape):
    with pytest.raises(ConfigError, match="re-export"):
        profile_shapes("x", shape, make_settings("fp32"))


def test_file_names_live_under_engines_per_precision():
    assert engine_file("block003_v02", "fp16") == "engines/fp16/block003_v02.engine"
    assert engine_file("stem", "int8") == "engines/int8/stem.engine"
    assert timing_cache_file("10.3.0", "Orin", "8.7") == "engines/timing-10.3.0-orin-sm8.7.cache"
    assert (
        timing_cache_file("11.4.0", "NVIDIA H200 / 141GB", "9.0")
        == "engines/timing-11.4.0-nvidia-h200-141gb-sm9.0.cache"
    )

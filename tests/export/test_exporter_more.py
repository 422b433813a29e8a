"""A torchvision-layout backbone, real pretrained weights, and the user errors of export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from budget_edge.errors import CheckpointError, ConfigError
from budget_edge.export.exporter import export_checkpoint
from budget_edge.models import build_backbone
from budget_edge.models.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from budget_edge.runtime.runtime import BudgetRuntime

from .conftest import close, random_masks, realistic

META = {"preprocessing": {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [3, 32, 32]}}


@pytest.mark.slow
def test_torchvision_resnet18_at_a_small_input(tmp_path, exporter):
    torch.manual_seed(0)
    net = realistic(build_backbone("resnet18", num_classes=5, input_size=(3, 64, 64)), seed=5)
    meta = {"preprocessing": {"mean": [0.4] * 3, "std": [0.3] * 3, "input_size": [3, 64, 64]}}
    path = save_checkpoint(tmp_path / "r18.pt", net, meta=meta)
    manifest = export_checkpoint(path, tmp_path / "art", exporter=exporter)
    # The three stride-2 stages start with a downsample (1x1 conv + BN) shortcut.
    assert [b.index for b in manifest.blocks if b.skip] == [2, 4, 6]
    assert [b.fixed_flops > 0 for b in manifest.blocks].count(True) == 3
    rt = BudgetRuntime.load(tmp_path / "art", backend="onnxruntime", threads=1)
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    mask = random_masks(4, net.num_components, seed=1)
    with torch.no_grad():
        close(rt.infer(x, mask=mask).logits, net(torch.from_numpy(x), torch.from_numpy(mask)))
        close(rt.run_full(x), net(torch.from_numpy(x)))


def shared_dir() -> Path:
    import os

    env = os.environ.get("BUDGET_EDGE_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared"


def test_real_akamaster_weights(tmp_path, exporter):
    path = shared_dir() / "pretrained" / "akamaster-cifar10" / "resnet20-12fca82f.th"
    if not path.is_file():
        pytest.skip(f"pretrained weights not found at {path}")
    loaded = load_checkpoint(path)
    export_checkpoint(loaded, tmp_path, exporter=exporter)
    rt = BudgetRuntime.load(tmp_path, backend="onnxruntime", threads=1)
    x = np.random.default_rng(2).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    mask = random_masks(6, loaded.backbone.num_components, seed=3)
    # uint8 pixels: the runtime normalises them with the preprocessing of the checkpoint.
    result = rt.infer(x, mask=mask)
    mean = np.array(loaded.meta["preprocessing"]["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.array(loaded.meta["preprocessing"]["std"], np.float32).reshape(1, 3, 1, 1)
    pre = (x.transpose(0, 3, 1, 2).astype(np.float32) / 255 - mean) / std
    with torch.no_grad():
        want = loaded.backbone(torch.from_numpy(pre), torch.from_numpy(mask))
    close(result.logits, want)


# The tests of how an export replaces the previous one pass the suite's exporter, which
# traces ResNet-20's graphs once: each export after the first takes under a second.
def loaded(meta=None, agent=None) -> LoadedCheckpoint:
    net = build_backbone("resnet20").eval()
    return LoadedCheckpoint(net, agent, META if meta is None else meta, "budget-edge")


def test_missing_preprocessing_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="preprocessing"):
        export_checkpoint(loaded(meta={}), tmp_path)


def test_preprocessing_size_must_match_the_backbone(tmp_path):
    meta = {"preprocessing": {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [3, 28, 28]}}
    with pytest.raises(ConfigError, match="input_size"):
        export_checkpoint(loaded(meta=meta), tmp_path)


@pytest.mark.parametrize("std", [float("nan"), 1e-300])
def test_preprocessing_that_cannot_work_is_refused_before_any_graph(tmp_path, std):
    from budget_edge.errors import ManifestError

    meta = {
        "preprocessing": {"mean": [0.5] * 3, "std": [std, 0.25, 0.25], "input_size": [3, 32, 32]}
    }
    with pytest.raises(ManifestError, match="preprocessing.std"):
        export_checkpoint(loaded(meta=meta), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_config_asking_for_millions_of_classes_is_refused(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "r.pt", build_backbone("resnet8"))
    payload = torch.load(path, weights_only=True)
    payload["backbone"]["config"]["num_classes"] = 10**7
    torch.save(payload, tmp_path / "huge.pt")
    with pytest.raises(CheckpointError, match="num_classes.*beyond any model"):
        load_checkpoint(tmp_path / "huge.pt")


def test_class_names_must_match_the_classes(tmp_path):
    with pytest.raises(ConfigError, match="3 class names"):
        export_checkpoint(loaded(), tmp_path, class_names=["a", "b", "c"])


def test_out_dir_with_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="notes.txt"):
        export_checkpoint(loaded(), tmp_path)
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        export_checkpoint(loaded(), file)


def test_a_failed_export_keeps_the_previous_artifact_and_leaves_nothing(
    tmp_path, monkeypatch, exporter
):
    """export with NaN preprocessing once left 14 graphs and no manifest behind."""
    from budget_edge.export import exporter as exporter_module

    out = tmp_path / "art"
    first = export_checkpoint(loaded(), out, exporter=exporter)
    before = sorted(p.name for p in (out / "graphs").iterdir())

    def broken(*args, **kwargs):
        raise RuntimeError("the switch graph failed")

    monkeypatch.setattr(exporter_module, "switch_graph", broken)
    with pytest.raises(RuntimeError, match="switch graph failed"):
        export_checkpoint(loaded(), out, exporter=exporter)
    assert sorted(p.name for p in (out / "graphs").iterdir()) == before
    assert sorted(p.name for p in out.iterdir()) == ["graphs", "manifest.json"]  # no staging
    with BudgetRuntime.load(out) as rt:  # the previous artifact, whole
        assert rt.manifest.files == first.files


DEAD_PID = 2**22 + 12345  # above Linux's default pid_max: no such process


def test_leftovers_of_a_crashed_export_are_removed_by_the_next(tmp_path, exporter):
    out = tmp_path / "art"
    crashed = out / f".partial-{DEAD_PID}"
    (crashed / "graphs").mkdir(parents=True)
    (crashed / "graphs" / "stem.onnx").write_bytes(b"half")
    export_checkpoint(loaded(), out, exporter=exporter)
    assert sorted(p.name for p in out.iterdir()) == ["graphs", "manifest.json"]
    BudgetRuntime.load(out).close()


def test_a_crash_in_the_middle_of_the_swap_gets_the_previous_artifact_back(tmp_path, exporter):
    from budget_edge.export.exporter import _recover

    out = tmp_path / "art"
    first = export_checkpoint(loaded(), out, exporter=exporter)
    aside = out / f".old-{DEAD_PID}"  # the swap had moved the old artifact aside, then died
    aside.mkdir()
    for name in ("manifest.json", "graphs"):
        (out / name).rename(aside / name)
    _recover(out)  # what the next export does first
    with BudgetRuntime.load(out) as rt:
        assert rt.manifest.files == first.files
    assert not aside.exists()


def test_a_swap_that_fails_puts_the_previous_artifact_back(tmp_path, monkeypatch, exporter):
    from budget_edge.export import exporter as exporter_module

    out = tmp_path / "art"
    first = export_checkpoint(loaded(), out, exporter=exporter)
    real = exporter_module._move_entries

    def half(source, target):  # moves the graphs, then the disk fails
        (source / "graphs").rename(target / "graphs")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(exporter_module, "_move_entries", half)
    with pytest.raises(OSError, match="No space"):
        export_checkpoint(loaded(), out, exporter=exporter)
    monkeypatch.setattr(exporter_module, "_move_entries", real)
    with BudgetRuntime.load(out) as rt:
        assert rt.manifest.files == first.files
    assert sorted(p.name for p in out.iterdir()) == ["graphs", "manifest.json"]


def test_export_into_the_working_directory(tmp_path, monkeypatch, exporter):
    """`--out .` cannot be renamed: the swap moves entries inside it instead."""
    monkeypatch.chdir(tmp_path)
    export_checkpoint(loaded(), ".", exporter=exporter)
    export_checkpoint(loaded(), ".", exporter=exporter)  # and over a previous export there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graphs", "manifest.json"]
    BudgetRuntime.load(tmp_path).close()


def test_export_replaces_the_previous_one_whole(tmp_path, exporter):
    """Engines, quantized sets and signatures belonged to the old graphs: they go with them."""
    out = tmp_path / "art"
    export_checkpoint(loaded(), out, exporter=exporter)
    (out / "quantized").mkdir()
    (out / "quantized" / "old.onnx").write_bytes(b"old")
    (out / "manifest.sig").write_bytes(b"old signature")
    export_checkpoint(loaded(), out, exporter=exporter)
    assert not (out / "quantized").exists()
    assert not (out / "manifest.sig").exists()
    BudgetRuntime.load(out).close()


def test_fuse_top_needs_an_agent_and_data(tmp_path):
    with pytest.raises(ConfigError, match="no agent"):
        export_checkpoint(loaded(), tmp_path, fuse_top=2, calib_data="fashion-mnist")
    from budget_edge.agent.policy import build_agent

    with pytest.raises(ConfigError, match="--calib-data"):
        export_checkpoint(loaded(agent=build_agent(9).eval()), tmp_path, fuse_top=2)
    with pytest.raises(ConfigError, match="preprocessed float32"):
        export_checkpoint(
            loaded(agent=build_agent(9).eval()),
            tmp_path,
            fuse_top=2,
            calib_data=np.zeros((4, 32, 32, 3), np.float32),
        )
    with pytest.raises(ConfigError, match="0 or more"):
        export_checkpoint(loaded(), tmp_path, fuse_top=-1)


def test_unreadable_checkpoint_is_a_checkpoint_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        export_checkpoint(bad, tmp_path / "out")

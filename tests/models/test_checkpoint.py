"""Our own checkpoint format (round trip, atomic save) and every way loading can fail."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from budget_edge.agent import PolicyNet, build_agent
from budget_edge.errors import CheckpointError, ConfigError
from budget_edge.models import Backbone, build_backbone
from budget_edge.models.checkpoint import load_checkpoint, save_checkpoint

Pair = tuple[Backbone, PolicyNet]


@pytest.fixture
def pair(randomize_bn: Callable[..., None]) -> Pair:
    """A small backbone and agent with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    backbone = build_backbone("resnet20", num_classes=7, shortcut="B")
    agent = build_agent(backbone.num_components, extractor="light")
    randomize_bn(backbone, seed=1)
    randomize_bn(agent, seed=2)
    return backbone.eval(), agent.eval()


META = {
    "preprocessing": {
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.2, 0.2],
        "input_size": [3, 32, 32],
        "layout": "NCHW",
    },
    "class_names": ["a", "b", "c", "d", "e", "f", "g"],
    "dataset": "fashion-mnist",
    "extra": {"tuple": (1, 2.5, None), "tensor": torch.arange(3)},
}


def test_round_trip_gives_identical_outputs_meta_and_train_state(
    tmp_path: Path, pair: Pair, make_mask: Callable[..., torch.Tensor]
) -> None:
    backbone, agent = pair
    optimizer = torch.optim.SGD(backbone.parameters(), lr=1e-6, momentum=0.9)
    backbone(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    train_state = {"optimizer": optimizer.state_dict(), "epoch": 3, "rng": torch.get_rng_state()}
    path = save_checkpoint(tmp_path / "model.pt", backbone, agent, META, train_state)

    loaded = load_checkpoint(path)
    assert loaded.format == "budget-edge"
    assert loaded.meta["class_names"] == META["class_names"]
    assert loaded.meta["extra"]["tuple"] == (1, 2.5, None)
    assert torch.equal(loaded.meta["extra"]["tensor"], torch.arange(3))
    assert loaded.train_state is not None
    assert loaded.train_state["epoch"] == 3
    assert loaded.backbone.config == backbone.config
    assert loaded.agent is not None
    assert loaded.agent.config == agent.config
    assert not loaded.backbone.training
    assert not loaded.agent.training

    x = torch.randn(6, 3, 32, 32)
    mask = make_mask(6, backbone.num_components)
    with torch.no_grad():
        assert torch.equal(loaded.backbone(x, mask), backbone(x, mask))
        for ours, theirs in zip(loaded.agent(x, 0.3), agent(x, 0.3), strict=True):
            assert torch.equal(ours, theirs)
    resumed = torch.optim.SGD(loaded.backbone.parameters(), lr=0.1, momentum=0.9)
    resumed.load_state_dict(loaded.train_state["optimizer"])


def test_round_trip_without_agent_and_meta(tmp_path: Path, pair: Pair) -> None:
    backbone, _ = pair
    loaded = load_checkpoint(save_checkpoint(tmp_path / "b.pt", backbone))
    assert loaded.agent is None
    assert loaded.meta == {}
    assert loaded.train_state is None


def test_saving_twice_replaces_the_file_and_leaves_no_temporaries(
    tmp_path: Path, pair: Pair
) -> None:
    backbone, agent = pair
    target = tmp_path / "sub" / "model.pt"
    save_checkpoint(target, backbone)
    save_checkpoint(target, backbone, agent)
    assert load_checkpoint(target).agent is not None
    assert os.listdir(target.parent) == ["model.pt"]


def test_a_failed_save_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pair: Pair
) -> None:
    backbone, agent = pair
    target = save_checkpoint(tmp_path / "model.pt", backbone)
    before = target.read_bytes()

    def crash(obj: object, handle: object) -> None:
        handle.write(b"half a file")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(target, backbone, agent)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.pt"]


def test_save_refuses_values_a_safe_load_cannot_read(tmp_path: Path, pair: Pair) -> None:
    backbone, _ = pair
    with pytest.raises(ConfigError, match=r"meta\['acc'\] is a numpy.float64"):
        save_checkpoint(tmp_path / "m.pt", backbone, meta={"acc": np.float64(0.9)})
    with pytest.raises(ConfigError, match=r"train_state\['rng'\]\[0\] is a numpy.ndarray"):
        save_checkpoint(tmp_path / "m.pt", backbone, train_state={"rng": [np.zeros(3)]})
    assert not (tmp_path / "m.pt").exists()


def test_save_refuses_a_module_without_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no 'config' dict"):
        save_checkpoint(tmp_path / "m.pt", torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_save_into_an_unwritable_place_raises(tmp_path: Path, pair: Pair) -> None:
    backbone, _ = pair
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CheckpointError, match="cannot create .*file: a file is in the way"):
        save_checkpoint(blocker / "m.pt", backbone)
    (tmp_path / "taken.pt").mkdir()
    with pytest.raises(CheckpointError, match="cannot write .*taken.pt: it is a folder"):
        save_checkpoint(tmp_path / "taken.pt", backbone)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- unsafe files ----------------------------------------------------------------------


class Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_the_payload_really_runs_code_when_loaded_unsafely(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"resnet": Payload(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickle_carrying_code_is_refused_and_never_run(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    payload = {"format": "budget-edge", "backbone": Payload(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError, match="refusing to load .*contains code/objects"):
        load_checkpoint(path)
    assert not marker.exists()


# -- unreadable files ------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found: .*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_file(tmp_path: Path, legacy: bool, pair: Pair) -> None:
    backbone, _ = pair
    whole = tmp_path / "whole.pt"
    torch.save({"w": backbone.state_dict()}, whole, _use_new_zipfile_serialization=not legacy)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt.*(truncated|refusing)"):
        load_checkpoint(cut)


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"hello, this is text\n"])
def test_garbage_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(path)


@pytest.mark.parametrize("obj", [torch.zeros(3), [1, 2], "weights"])
def test_not_a_dict(tmp_path: Path, obj: object) -> None:
    path = tmp_path / "x.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="x.pt holds a .*not a dict"):
        load_checkpoint(path)


def test_unknown_layout_lists_the_known_formats(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "cannot tell the format of" in message
    assert "'encoder.weight'" in message
    for name in ("budget-edge", "budgetnet", "blockdrop", "akamaster", "torchvision"):
        assert name in message


def test_unknown_format_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown checkpoint format 'onnx'"):
        load_checkpoint(tmp_path / "m.pt", format="onnx")


def test_explicit_format_that_does_not_match(tmp_path: Path, pair: Pair) -> None:
    backbone, _ = pair
    path = save_checkpoint(tmp_path / "m.pt", backbone)
    with pytest.raises(CheckpointError, match="not in the akamaster format.*like 'budget-edge'"):
        load_checkpoint(path, format="akamaster")
    assert load_checkpoint(path, format="budget-edge").format == "budget-edge"


# -- damaged contents -------------------------------------------------------------------


def saved_payload(tmp_path: Path, pair: Pair) -> dict:
    backbone, agent = pair
    path = save_checkpoint(tmp_path / "m.pt", backbone, agent)
    return torch.load(path, weights_only=True)


def resave(tmp_path: Path, payload: dict, keep_digest: bool = False) -> Path:
    """The edited payload as a file; without the weights' SHA-256 (as older files, or a
    writer that edits on purpose), so the check under test is the one that fires."""
    if not keep_digest:
        for part in ("backbone", "agent"):
            if isinstance(payload.get(part), dict):
                payload[part].pop("sha256", None)
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    return path


def test_wrong_tensor_shape(tmp_path: Path, pair: Pair) -> None:
    payload = saved_payload(tmp_path, pair)
    payload["backbone"]["state_dict"]["layer2.0.conv1.weight"] = torch.zeros(32, 16, 1, 1)
    with pytest.raises(
        CheckpointError,
        match=r"edited.pt: backbone tensor 'layer2.0.conv1.weight' "
        r"has shape \(32, 16, 1, 1\), expected \(32, 16, 3, 3\)",
    ):
        load_checkpoint(resave(tmp_path, payload))


def test_integer_weights_are_refused_not_cast(tmp_path: Path, pair: Pair) -> None:
    payload = saved_payload(tmp_path, pair)
    weight = payload["backbone"]["state_dict"]["layer2.0.conv1.weight"]
    payload["backbone"]["state_dict"]["layer2.0.conv1.weight"] = weight.to(torch.int64)
    with pytest.raises(
        CheckpointError,
        match=r"'layer2.0.conv1.weight' is torch.int64, "
        r"expected torch.float32",
    ):
        load_checkpoint(resave(tmp_path, payload))


def test_nan_weights_are_refused(tmp_path: Path, pair: Pair) -> None:
    payload = saved_payload(tmp_path, pair)
    payload["backbone"]["state_dict"]["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=r"'layer2.0.conv1.weight' holds NaN or inf"):
        load_checkpoint(resave(tmp_path, payload))


def test_missing_and_unexpected_keys(tmp_path: Path, pair: Pair) -> None:
    payload = saved_payload(tmp_path, pair)
    state = payload["agent"]["state_dict"]
    state["surprise.weight"] = state.pop("logit.bias")
    with pytest.raises(
        CheckpointError,
        match="agent weights do not fit.*missing logit.bias, unexpected surprise.weight",
    ):
        load_checkpoint(resave(tmp_path, payload))


def test_agent_and_backbone_disagree_on_components(tmp_path: Path, pair: Pair) -> None:
    payload = saved_payload(tmp_path, pair)
    other = build_agent(4, extractor="light")
    payload["agent"] = {"config": other.config, "state_dict": other.state_dict()}
    with pytest.raises(CheckpointError, match="agent decides 4 components but the backbone has 9"):
        load_checkpoint(resave(tmp_path, payload))


def test_config_that_cannot_be_built(tmp_path: Path, pair: Pair) -> None:
    payload = saved_payload(tmp_path, pair)
    payload["backbone"]["config"]["name"] = "resnet7"
    with pytest.raises(CheckpointError, match="cannot build the backbone.*'resnet7'"):
        load_checkpoint(resave(tmp_path, payload))


def test_newer_version(tmp_path: Path, pair: Pair) -> None:
    payload = saved_payload(tmp_path, pair)
    payload["version"] = 99
    with pytest.raises(CheckpointError, match="newer budget-edge.*upgrade"):
        load_checkpoint(resave(tmp_path, payload))


def test_state_dict_entry_missing(tmp_path: Path, pair: Pair) -> None:
    payload = saved_payload(tmp_path, pair)
    del payload["backbone"]["state_dict"]
    with pytest.raises(CheckpointError, match=r"edited.pt \(budget-edge format\): .*'backbone'"):
        load_checkpoint(resave(tmp_path, payload))


def test_a_flipped_byte_in_the_weights_is_caught(tmp_path: Path, pair: Pair) -> None:
    payload = saved_payload(tmp_path, pair)
    weight = payload["backbone"]["state_dict"]["layer2.0.conv1.weight"]
    weight.view(torch.uint8)[17] ^= 0x40  # one bit of one float: still finite
    with pytest.raises(CheckpointError, match="backbone weights do not match their SHA-256"):
        load_checkpoint(resave(tmp_path, payload, keep_digest=True))


def test_a_flipped_byte_in_a_file_without_a_digest_is_caught_by_its_zip_crc(
    tmp_path: Path, pair: Pair
) -> None:
    """Files from before the digest (and the reference's) loaded a changed weight silently:
    torch.load does not check the CRC-32 that torch.save writes for every member."""
    payload = saved_payload(tmp_path, pair)
    del payload["backbone"]["sha256"]
    path = resave(tmp_path, payload)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fails its CRC-32 check"):
        load_checkpoint(path)


def test_files_saved_without_crc32_still_load(tmp_path: Path, pair: Pair) -> None:
    """torch's documented compute_crc32 = False writes 0 for every member's CRC."""
    from torch.utils.serialization import config

    config.save.compute_crc32 = False  # a config proxy: monkeypatch cannot set it
    try:
        path = save_checkpoint(tmp_path / "nocrc.pt", *pair)
    finally:
        config.save.compute_crc32 = True
    load_checkpoint(path)


def test_files_from_before_the_digest_still_load(tmp_path: Path, pair: Pair) -> None:
    payload = saved_payload(tmp_path, pair)
    del payload["backbone"]["sha256"]
    load_checkpoint(resave(tmp_path, payload))


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_device_or_a_pipe_is_refused_before_it_is_read(tmp_path: Path, kind: str) -> None:
    path = Path("/dev/zero") if kind == "device" else tmp_path / "pipe"
    if kind == "fifo":
        os.mkfifo(path)  # a blocking open would wait forever for a writer
    with pytest.raises(CheckpointError, match="checkpoint: .* is not a regular file"):
        load_checkpoint(path)


def test_a_compressed_member_claiming_more_than_the_file_is_refused_unread(
    tmp_path: Path, pair: Pair
) -> None:
    import zipfile

    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (64 << 20))  # 64 MiB in about 64 KiB
    with pytest.raises(
        CheckpointError,
        match=r"bomb.pt is a 0.1 MiB archive whose members "
        r"claim 64.0 MiB: torch.save does not compress",
    ):
        load_checkpoint(path)


def test_a_full_disk_while_torch_writes_is_one_line_and_keeps_the_old_file(
    tmp_path: Path, pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save turns a failed write into its own RuntimeError (inline_container):
    the OSError behind it must still reach the user as one line naming the file."""
    import errno

    import budget_edge.models.checkpoint as checkpoint

    backbone, _ = pair
    target = save_checkpoint(tmp_path / "m.pt", backbone)
    before = target.read_bytes()

    class FullDisk(checkpoint._WriteErrors):
        def write(self, data: bytes) -> int:
            self.error = OSError(errno.ENOSPC, "No space left on device")
            raise self.error

    monkeypatch.setattr(checkpoint, "_WriteErrors", FullDisk)
    with pytest.raises(CheckpointError, match=r"cannot write .*m.pt: the disk is full"):
        save_checkpoint(target, backbone)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]

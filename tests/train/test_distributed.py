import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from budget_edge.errors import ConfigError
from budget_edge.models.checkpoint import load_checkpoint
from budget_edge.train import distributed
from budget_edge.train.distributed import DistContext, cpu_threads, init_distributed, pick_device

from .toy_images import toy_arrays


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ddp_worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One torchrun-like rank: pretrain, then dump this rank's final weights."""
    import budget_edge.train.pretrain as pretrain_module

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
    )
    real_save = pretrain_module.save_checkpoint

    def counting_save(path, *args, **kwargs):  # record which rank writes what
        with open(Path(out) / f"saves-rank{rank}.txt", "a") as log:
            log.write(f"{Path(path).name}\n")
        return real_save(path, *args, **kwargs)

    pretrain_module.save_checkpoint = counting_save  # type: ignore[assignment]
    config = pretrain_module.PretrainConfig(
        dataset="toy", epochs=2, batch_size=8, lr=0.05, drop_prob=0.3
    )
    options = pretrain_module.RunOptions(progress=False, threads=1, device="cpu")
    result = pretrain_module.pretrain(
        config, toy_arrays(40, 0), toy_arrays(21, 1), Path(out) / "run", options=options
    )
    torch.save(result.backbone.state_dict(), Path(out) / f"weights-rank{rank}.pt")
    with open(Path(out) / f"accuracy-rank{rank}.txt", "w") as log:
        log.write(repr(result.history[-1].test_accuracy))


def test_two_cpu_processes_train_one_model(tmp_path: Path):
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    weights = [torch.load(tmp_path / f"weights-rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key, value in weights[0].items():
        assert torch.equal(weights[1][key], value), key
    saved = load_checkpoint(tmp_path / "run" / "last.pt").backbone.state_dict()
    for key, value in weights[0].items():
        assert torch.equal(saved[key], value), key
    # Rank 0 wrote last.pt each epoch (and best.pt when it improved); rank 1 nothing.
    assert not (tmp_path / "saves-rank1.txt").exists()
    saves = (tmp_path / "saves-rank0.txt").read_text().split()
    assert saves.count("last.pt") == 2
    # Both ranks report the accuracy over the whole test set (21 images, split 11 + 10).
    accuracies = [(tmp_path / f"accuracy-rank{r}.txt").read_text() for r in (0, 1)]
    assert accuracies[0] == accuracies[1]
    assert round(float(accuracies[0]) * 21) == pytest.approx(float(accuracies[0]) * 21)
    meta = load_checkpoint(tmp_path / "run" / "last.pt").meta
    assert meta["world_size"] == 2
    assert len(load_checkpoint(tmp_path / "run" / "last.pt").train_state["rng"]) == 2  # type: ignore[index]


def test_single_process_without_torchrun(monkeypatch: pytest.MonkeyPatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.distributed, ctx.is_main) == (0, 1, False, True)
    assert ctx.device == torch.device("cpu")
    distributed.shutdown(ctx)  # nothing to leave


def test_bad_environment_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not an integer"):
        init_distributed("cpu")


def test_devices():
    assert pick_device("cpu", 0) == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        pick_device("tpu", 0)
    if not torch.cuda.is_available():
        assert pick_device("auto", 0) == torch.device("cpu")
        with pytest.raises(ConfigError, match="no CUDA GPU; use --device cpu"):
            pick_device("cuda", 0)


def test_cpu_threads_are_shared_among_local_processes():
    cores = len(os.sched_getaffinity(0))
    one = DistContext(0, 1, 0, 1, torch.device("cpu"))
    two = DistContext(0, 2, 0, 2, torch.device("cpu"))
    assert cpu_threads(one) == cores
    assert cpu_threads(two) == max(1, cores // 2)
    assert cpu_threads(two, requested=3) == 3

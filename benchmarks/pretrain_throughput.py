"""How fast does `budget-edge pretrain` train a backbone on this machine?

Times full training steps (batched augmentation, forward, backward, SGD step
and the scheduler) of a backbone on Fashion-MNIST for every combination of
precision (fp32 / bf16 autocast), memory format (NCHW / channels-last) and
thread count, plus the test-set evaluation. Each setting is measured
`--repeats` times on a fresh model and the best repeat is kept: on a shared
machine the fastest repeat is the one least disturbed by other processes.
Process CPU time is recorded too: at one thread it estimates the wall time on
an idle core.

    .venv/bin/python benchmarks/pretrain_throughput.py [--backbone resnet20] \
        [--steps 30] [--repeats 3] [--json benchmarks/results/pretrain_throughput.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from budget_edge.data import load_arrays
from budget_edge.data.torch_dataset import build_loaders
from budget_edge.models import build_backbone
from budget_edge.runtime.machine import machine_info


def time_training(
    backbone: str, precision: str, channels_last: bool, steps: int, batch_size: int
) -> dict[str, float]:
    """Wall and CPU seconds per image over `steps` training steps after 3 warm-up steps."""
    train = load_arrays("fashion-mnist", split="train")
    test = load_arrays("fashion-mnist", split="test")
    loaders = build_loaders(train, test, batch_size)
    torch.manual_seed(0)
    net = build_backbone(backbone, num_classes=10, in_channels=1, input_size=(1, 28, 28))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)  # type: ignore[call-overload]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=1000)
    bf16 = precision == "bf16"
    batches = iter(loaders.train)
    images_seen = 0
    for i in range(steps + 3):
        if i == 3:
            wall, cpu, images_seen = time.perf_counter(), time.process_time(), 0
        images, labels = next(batches)
        images = images.contiguous(memory_format=memory_format)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        images_seen += labels.shape[0]
    train_wall = time.perf_counter() - wall
    train_cpu = time.process_time() - cpu
    net.eval()
    wall = time.perf_counter()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for images, _ in loaders.test:
            net(images.contiguous(memory_format=memory_format))
    eval_wall = time.perf_counter() - wall
    return {
        "train_images_per_s": images_seen / train_wall,
        "train_images_per_cpu_s": images_seen / train_cpu,
        "eval_s": eval_wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet20")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    # On a CPU without bf16 instructions bf16 is emulated: minutes per setting.
    parser.add_argument(
        "--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"]
    )
    parser.add_argument("--channels-last", nargs="+", choices=["no", "yes"], default=["no", "yes"])
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    print(
        f"{args.backbone} on Fashion-MNIST 28x28, batch {args.batch_size}, best of {args.repeats}"
    )
    for threads, precision, channels_last in itertools.product(
        args.threads, args.precisions, [c == "yes" for c in args.channels_last]
    ):
        torch.set_num_threads(threads)
        runs = [
            time_training(args.backbone, precision, channels_last, args.steps, args.batch_size)
            for _ in range(args.repeats)
        ]
        best = max(runs, key=lambda r: r["train_images_per_s"])
        row = {"threads": threads, "precision": precision, "channels_last": channels_last, **best}
        results.append(row)
        epoch_s = 60000 / best["train_images_per_s"] + best["eval_s"]
        print(
            f"threads {threads}  {precision}  channels_last={channels_last!s:5}  "
            f"train {best['train_images_per_s']:6.0f} img/s (per CPU-second "
            f"{best['train_images_per_cpu_s']:5.0f})  eval {best['eval_s']:5.1f} s  "
            f"-> {epoch_s:5.0f} s per epoch",
            flush=True,
        )
    if args.json:
        record = {
            "benchmark": "pretrain_throughput",
            "backbone": args.backbone,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "repeats": args.repeats,
            "machine": machine_info(),  # CPU, cores, load, versions (torch among them)
            "results": results,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The three models the runtime targets are measured on, and their artifacts.

Shared by `peer_eager.py` and `runtime_targets.py` (run from the repository
root: `python benchmarks/<script>.py`). Run alone, it exports the artifacts where
they look for them (their --work), e.g. to run `budget-edge bench` on them or to
copy them to a device:

    python benchmarks/bench_models.py [--models resnet56] [--out DIR]

- resnet56: the real akamaster CIFAR-10 weights when
  shared/pretrained/akamaster-cifar10 is there (imported with load_checkpoint),
  random weights otherwise;
- resnet110 and resnext29 (4 paths x 16 wide, the paper's ResNeXt-29): random
  weights. Latency does not depend on the weights' values; BatchNorm running
  statistics are measured on random images so activations stay O(1), as in a
  trained network.

No trained agent exists for these backbones, so each gets an untrained agent
(random weights, BN statistics measured the same way) whose logit bias is
set to +4: every keep-probability is close to 1, and with cap="components"
the runtime drops each image's least probable components until exactly
floor(c * K) remain. The masks therefore meet the budget exactly, differ from
image to image (the untrained agent ranks components differently per image,
a harder case for batched dispatch than a trained agent's correlated masks),
and the policy graph, thresholding and cap all run as in production.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from budget_edge.agent.policy import PolicyNet, build_agent
from budget_edge.models import Backbone, build_backbone
from budget_edge.models.checkpoint import LoadedCheckpoint, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BUDGET_EDGE_SHARED", ROOT / ".." / "shared"))
AKAMASTER = SHARED / "pretrained" / "akamaster-cifar10"
WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "budget-edge-bench"  # exported artifacts
CIFAR_MEAN = [0.485, 0.456, 0.406]  # akamaster's training normalisation
CIFAR_STD = [0.229, 0.224, 0.225]
AGENT_LOGIT_BIAS = 4.0
CAP = "components"

MODELS: dict[str, dict[str, Any]] = {
    "resnet56": {"name": "resnet56"},
    "resnet110": {"name": "resnet110"},
    "resnext29": {"name": "resnext29", "cardinality": 4, "base_width": 16, "widen_factor": 4},
}


def measure_bn_statistics(net: nn.Module, calls: list[tuple[torch.Tensor, ...]]) -> None:
    """Replace fresh BatchNorm statistics (identities) by averages over these calls."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # a plain average over the calls
            bn.weight.copy_(torch.rand(bn.num_features, generator=gen) * 0.5 + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=gen) * 0.1)
        net.train()
        for args in calls:
            net(*args)
    for bn in bns:
        bn.momentum = 0.1
    net.eval()


def random_images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def backbone(model: str) -> tuple[Backbone, dict[str, Any], str]:
    """The backbone in eval mode, its checkpoint meta, and where its weights came from."""
    config = MODELS[model]
    weights = sorted(AKAMASTER.glob(f"{model}-*.th")) if AKAMASTER.is_dir() else []
    if weights:
        loaded = load_checkpoint(weights[0])
        return loaded.backbone, loaded.meta, f"akamaster pretrained ({weights[0].name})"
    net = build_backbone(**config, num_classes=10)
    measure_bn_statistics(net, [(random_images(32, seed),) for seed in range(4)])
    meta = {
        "preprocessing": {"mean": CIFAR_MEAN, "std": CIFAR_STD, "input_size": [3, 32, 32]},
        "dataset": "cifar10",
    }
    return net, meta, "random weights, BN statistics measured on random images"


def agent(net: Backbone, extractor: str) -> PolicyNet:
    """An untrained agent whose keep-probabilities are all near 1 (see the module docstring)."""
    policy = build_agent(
        net.num_components, extractor=extractor, in_channels=3, input_size=net.input_size
    )
    budgets = torch.rand(32, generator=torch.Generator().manual_seed(1))
    measure_bn_statistics(policy, [(random_images(32, 10 + s), budgets) for s in range(4)])
    with torch.no_grad():
        policy.logit.bias.fill_(AGENT_LOGIT_BIAS)
    return policy.eval()


def model(model_name: str, extractor: str) -> tuple[LoadedCheckpoint, str]:
    net, meta, source = backbone(model_name)
    return LoadedCheckpoint(net, agent(net, extractor), meta, "budget-edge"), source


def export(
    model_name: str, extractor: str, out: Path, reuse: bool = True
) -> tuple[LoadedCheckpoint, str]:
    """Build the model and export it to `out` (kept across runs when `reuse`).

    Random weights come from fixed seeds, so a reused export holds the same model.
    """
    from budget_edge.export.exporter import export_checkpoint

    torch.manual_seed(0)  # conv weights of random backbones and agents
    loaded, source = model(model_name, extractor)
    if reuse and (out / "manifest.json").is_file():
        return loaded, source
    t = time.perf_counter()
    export_checkpoint(loaded, out)
    print(
        f"exported {model_name} ({extractor} agent) to {out} in {time.perf_counter() - t:.0f} s",
        flush=True,
    )
    return loaded, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma-separated, of {', '.join(MODELS)} (default: all)",
    )
    parser.add_argument(
        "--extractor",
        default="light",
        choices=["light", "resnet8"],
        help="the untrained agent's feature extractor",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=WORK,
        help="each artifact goes to OUT/MODEL-EXTRACTOR (default: %(default)s, "
        "the other scripts' --work)",
    )
    parser.add_argument("--fresh", action="store_true", help="export again even if present")
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"no model {', '.join(unknown)} (have {', '.join(MODELS)})")
    for name in names:
        out = args.out / f"{name}-{args.extractor}"
        _, source = export(name, args.extractor, out, reuse=not args.fresh)
        print(f"{name}: {out} ({source})", flush=True)


if __name__ == "__main__":
    main()

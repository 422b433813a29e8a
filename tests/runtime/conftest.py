"""A tiny residual network built twice, without torch: as ONNX graphs + manifest, and in numpy.

The ONNX side is an artifact directory like `budget-edge export` writes (stem,
one graph per block variant, skip graphs, head, policy, full, hot policies). The
numpy side is an independent per-sample reference (like the paper's
`forward_single`), so the runtime's batched gather/scatter dispatch can be
checked against it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from budget_edge.runtime.manifest import (
    BATCH_AXIS,
    BackboneSpec,
    BlockSpec,
    ComponentSpec,
    FlopsSpec,
    GraphSpec,
    HotPolicySpec,
    Manifest,
    Preprocessing,
    TensorSpec,
    VariantSpec,
    write_manifest,
)

OPSET = 17

# ---- numpy reference ops ------------------------------------------------------


def np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Plain NCHW convolution: a sum over kernel offsets of channel matmuls."""
    n, _, h, wd = x.shape
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - k) // stride + 1
    wo = (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, w.shape[0], ho, wo), np.float64)
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out + b[None, :, None, None]


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def conv_flops(w: np.ndarray, out_hw: tuple[int, int]) -> int:
    return 2 * int(w.size) * out_hw[0] * out_hw[1]


# ---- ONNX graph builder -------------------------------------------------------


class OnnxBuilder:
    """Collects nodes and weights; every tensor name is unique within one graph."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, tag: str) -> str:
        self.count += 1
        return f"{tag}_{self.count}"

    def const(self, value: np.ndarray) -> str:
        name = self._name("w")
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def conv(self, x: str, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> str:
        k = w.shape[2]
        return self.op(
            "Conv",
            [x, self.const(w), self.const(b)],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad] * 4,
        )

    def model(
        self, inputs: list[tuple[str, list[Any]]], outputs: list[tuple[str, str, list[Any]]]
    ) -> onnx.ModelProto:
        """inputs: (name, shape); outputs: (graph name, internal tensor, shape)."""
        nodes = list(self.nodes)
        for public, internal, _ in outputs:
            nodes.append(helper.make_node("Identity", [internal], [public]))
        graph = helper.make_graph(
            nodes,
            "tiny",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, _, s in outputs],
            initializer=self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


# ---- the tiny network ---------------------------------------------------------


@dataclass
class Block:
    """One-path ResNet block (downsample or not), or a ResNeXt block with C paths."""

    kind: str  # "resnet" | "resnext"
    stage: int
    cin: int
    cout: int
    stride: int
    p: dict[str, Any]
    num_paths: int = 1
    scheme: str = "single"
    in_hw: tuple[int, int] = (0, 0)

    @property
    def out_hw(self) -> tuple[int, int]:
        return (self.in_hw[0] // self.stride, self.in_hw[1] // self.stride)

    @property
    def has_conv_shortcut(self) -> bool:
        return self.stride != 1 or self.cin != self.cout


def _rand(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@dataclass
class TinyNet:
    input_size: tuple[int, int, int]
    num_classes: int
    stem: dict[str, np.ndarray]
    blocks: list[Block]
    head: dict[str, np.ndarray]
    policy: dict[str, np.ndarray]
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @property
    def components(self) -> list[tuple[int, int | None]]:
        """(block, path) per mask entry."""
        out: list[tuple[int, int | None]] = []
        for b, blk in enumerate(self.blocks):
            if blk.kind == "resnet":
                out.append((b, None))
            else:
                out += [(b, p) for p in range(blk.num_paths)]
        return out

    # -- numpy: one sample at a time, like the reference forward_single
    def np_block(self, blk: Block, x: np.ndarray, paths: list[int] | None) -> np.ndarray:
        p = blk.p
        if blk.kind == "resnet":
            sc = np_conv(x, p["wsc"], p["bsc"], blk.stride, 0) if blk.has_conv_shortcut else x
            if paths == []:
                return sc
            h = relu(np_conv(x, p["w1"], p["b1"], blk.stride, 1))
            return relu(np_conv(h, p["w2"], p["b2"], 1, 1) + sc)
        total = np.zeros((x.shape[0], blk.cout, *x.shape[2:]))
        for j in paths or []:
            q = p["paths"][j]
            h = relu(np_conv(x, q["wr"], q["br"], 1, 0))
            h = relu(np_conv(h, q["wc"], q["bc"], 1, 1))
            total += np_conv(h, q["we"], q["be"], 1, 0)
        bn = total * p["scale"][None, :, None, None] + p["shift"][None, :, None, None]
        return relu(bn + x)

    def np_forward(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        comps = self.components
        rows = []
        for i in range(x.shape[0]):
            h = relu(np_conv(x[i : i + 1].astype(np.float64), self.stem["w"], self.stem["b"], 1, 1))
            for b, blk in enumerate(self.blocks):
                kept = [k for k, (cb, _) in enumerate(comps) if cb == b and mask[i, k]]
                if blk.kind == "resnet":
                    h = self.np_block(blk, h, [0] if kept else [])
                else:
                    h = self.np_block(blk, h, [comps[k][1] for k in kept])  # type: ignore[misc]
            rows.append(h.mean(axis=(2, 3)) @ self.head["w"].T + self.head["b"])
        return np.concatenate(rows).astype(np.float32)

    def np_policy(self, x: np.ndarray, budget: np.ndarray) -> np.ndarray:
        feats = np.concatenate([x.mean(axis=(2, 3)), budget.reshape(-1, 1)], axis=1)
        z = feats @ self.policy["w"].T + self.policy["b"]
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    # -- ONNX emitters
    def onnx_stem(self, g: OnnxBuilder, x: str) -> str:
        return g.op("Relu", [g.conv(x, self.stem["w"], self.stem["b"], 1, 1)])

    def onnx_block(self, g: OnnxBuilder, blk: Block, x: str, paths: list[int] | None) -> str:
        p = blk.p
        if blk.kind == "resnet":
            sc = g.conv(x, p["wsc"], p["bsc"], blk.stride, 0) if blk.has_conv_shortcut else x
            if paths == []:
                return g.op("Identity", [sc])
            h = g.op("Relu", [g.conv(x, p["w1"], p["b1"], blk.stride, 1)])
            return g.op("Relu", [g.op("Add", [g.conv(h, p["w2"], p["b2"], 1, 1), sc])])
        shift = g.const(p["shift"].reshape(1, -1, 1, 1))
        outs = []
        for j in paths or []:
            q = p["paths"][j]
            h = g.op("Relu", [g.conv(x, q["wr"], q["br"], 1, 0)])
            h = g.op("Relu", [g.conv(h, q["wc"], q["bc"], 1, 1)])
            outs.append(g.conv(h, q["we"], q["be"], 1, 0))
        if outs:
            total = outs[0] if len(outs) == 1 else g.op("Sum", outs)
            bn = g.op(
                "Add", [g.op("Mul", [total, g.const(p["scale"].reshape(1, -1, 1, 1))]), shift]
            )
        else:
            bn = shift
        return g.op("Relu", [g.op("Add", [x, bn])])

    def onnx_head(self, g: OnnxBuilder, x: str) -> str:
        pooled = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
        return g.op("Gemm", [pooled, g.const(self.head["w"]), g.const(self.head["b"])], transB=1)

    def onnx_policy(self, g: OnnxBuilder, x: str, budget: str) -> tuple[str, str]:
        pooled = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
        axes = g._name("axes")
        g.inits.append(numpy_helper.from_array(np.array([1], np.int64), axes))
        feats = g.op("Concat", [pooled, g.op("Unsqueeze", [budget, axes])], axis=1)
        z = g.op("Gemm", [feats, g.const(self.policy["w"]), g.const(self.policy["b"])], transB=1)
        value = g.op(
            "Gemm", [feats, g.const(self.policy["wv"]), g.const(self.policy["bv"])], transB=1
        )
        return g.op("Sigmoid", [z]), value

    def shapes(self) -> list[list[Any]]:
        """Feature shapes: after the stem, then after each block."""
        c, h, w = self.input_size
        out = [[BATCH_AXIS, self.blocks[0].cin, h, w]]
        for blk in self.blocks:
            out.append([BATCH_AXIS, blk.cout, *blk.out_hw])
        return out


def make_net(kind: str = "resnet", channels: int = 3, seed: int = 0) -> TinyNet:
    """resnet: 3 one-path blocks (the middle one downsamples with a 1x1 conv shortcut).
    resnext: a 3-path block ('all' variants), a 5-path block ('prefix'), a downsampling
    one-path block."""
    rng = np.random.default_rng(seed)
    hw = (8, 8)
    width = 4

    def resnet_block(stage: int, cin: int, cout: int, stride: int) -> Block:
        p = {
            "w1": _rand(rng, cout, cin, 3, 3),
            "b1": _rand(rng, cout),
            "w2": _rand(rng, cout, cout, 3, 3),
            "b2": _rand(rng, cout),
        }
        if stride != 1 or cin != cout:
            p |= {"wsc": _rand(rng, cout, cin, 1, 1, scale=0.5), "bsc": _rand(rng, cout)}
        return Block("resnet", stage, cin, cout, stride, p)

    def resnext_block(stage: int, c: int, num_paths: int, scheme: str) -> Block:
        paths = [
            {
                "wr": _rand(rng, 2, c, 1, 1),
                "br": _rand(rng, 2),
                "wc": _rand(rng, 2, 2, 3, 3),
                "bc": _rand(rng, 2),
                "we": _rand(rng, c, 2, 1, 1),
                "be": _rand(rng, c),
            }
            for _ in range(num_paths)
        ]
        p = {"paths": paths, "scale": 1.0 + _rand(rng, c, scale=0.1), "shift": _rand(rng, c)}
        return Block("resnext", stage, c, c, 1, p, num_paths, scheme)

    if kind == "resnet":
        blocks = [
            resnet_block(0, width, width, 1),
            resnet_block(1, width, 6, 2),
            resnet_block(1, 6, 6, 1),
        ]
    else:
        blocks = [
            resnext_block(0, width, 3, "all"),
            resnext_block(0, width, 5, "prefix"),
            resnet_block(1, width, 6, 2),
        ]
    size = hw
    for blk in blocks:
        blk.in_hw = size
        size = blk.out_hw
    num_classes = 5
    k = sum(1 if b.kind == "resnet" else b.num_paths for b in blocks)
    return TinyNet(
        input_size=(channels, *hw),
        num_classes=num_classes,
        stem={"w": _rand(rng, width, channels, 3, 3), "b": _rand(rng, width)},
        blocks=blocks,
        head={"w": _rand(rng, num_classes, blocks[-1].cout), "b": _rand(rng, num_classes)},
        # large weights on the pooled image so probabilities spread over (0, 1)
        policy={
            "w": _rand(rng, k, channels + 1, scale=4.0),
            "b": _rand(rng, k, scale=0.5),
            "wv": _rand(rng, 1, channels + 1),
            "bv": _rand(rng, 1),
        },
        mean=[0.5, 0.4, 0.3][:channels] if channels <= 3 else [0.5] * channels,
        std=[0.25, 0.2, 0.3][:channels] if channels <= 3 else [0.25] * channels,
    )


# ---- writing the artifact directory ------------------------------------------


def _spec(name: str, shape: list[Any]) -> TensorSpec:
    return TensorSpec(name, list(shape), "float32")


def write_artifact(
    net: TinyNet,
    out: Path,
    policy: bool = True,
    full: bool = True,
    hot: list[list[int]] | None = None,
    switch: bool = False,
) -> Manifest:
    """Write every graph and the manifest, as the exporter would (the switch graph
    only when asked, so the other tests keep exercising the per-block chain)."""
    out.mkdir(parents=True, exist_ok=True)
    shapes = net.shapes()
    image = [BATCH_AXIS, *net.input_size]
    logits = [BATCH_AXIS, net.num_classes]
    graphs: list[GraphSpec] = []
    models: dict[str, onnx.ModelProto] = {}

    def save(
        name: str, model: onnx.ModelProto, ins: list[TensorSpec], outs: list[TensorSpec]
    ) -> str:
        onnx.save(model, str(out / f"{name}.onnx"))
        graphs.append(GraphSpec(name, f"{name}.onnx", ins, outs))
        models[name] = model
        return name

    def one(name: str, in_shape: list[Any], out_shape: list[Any], body: Any) -> str:
        g = OnnxBuilder()
        y = body(g, "x")
        model = g.model([("x", in_shape)], [("y", y, out_shape)])
        return save(name, model, [_spec("x", in_shape)], [_spec("y", out_shape)])

    stem = one("stem", image, shapes[0], net.onnx_stem)
    blocks: list[BlockSpec] = []
    comps = net.components
    for b, blk in enumerate(net.blocks):
        kept_sets: list[tuple[int, ...]]
        if blk.scheme == "single":
            kept_sets = [(0,)]
        elif blk.scheme == "all":
            kept_sets = [
                s
                for r in range(1, blk.num_paths + 1)
                for s in itertools.combinations(range(blk.num_paths), r)
            ]
        else:
            kept_sets = [tuple(range(m)) for m in range(1, blk.num_paths + 1)]
        variants = []
        for s in kept_sets:
            name = f"block{b}_p" + "".join(map(str, s))
            run = list(s) if blk.kind == "resnext" else None
            one(
                name,
                shapes[b],
                shapes[b + 1],
                lambda g, x, blk=blk, run=run: net.onnx_block(g, blk, x, run),
            )
            variants.append(VariantSpec(list(s), name))
        skip = None
        if blk.kind == "resnext" or blk.has_conv_shortcut:
            skip = one(
                f"block{b}_skip",
                shapes[b],
                shapes[b + 1],
                lambda g, x, blk=blk: net.onnx_block(g, blk, x, []),
            )
        fixed = conv_flops(blk.p["wsc"], blk.out_hw) if "wsc" in blk.p else 0
        blocks.append(BlockSpec(b, blk.stage, blk.num_paths, fixed, variants, skip, blk.scheme))
    head = one("head", shapes[-1], logits, net.onnx_head)

    def whole(g: OnnxBuilder, x: str, mask: list[int] | None) -> str:
        h = net.onnx_stem(g, x)
        for b, blk in enumerate(net.blocks):
            kept = [k for k, (cb, _) in enumerate(comps) if cb == b and (mask is None or mask[k])]
            if blk.kind == "resnet":
                h = net.onnx_block(g, blk, h, None if kept else [])
            else:
                h = net.onnx_block(g, blk, h, [comps[k][1] for k in kept])  # type: ignore[misc]
        return net.onnx_head(g, h)

    roles: dict[str, str | None] = {"stem": stem, "head": head, "policy": None, "full": None}
    if full:
        roles["full"] = one("full", image, logits, lambda g, x: whole(g, x, None))
    hot_specs = []
    for i, mask in enumerate(hot or []):
        name = one(f"hot{i}", image, logits, lambda g, x, mask=mask: whole(g, x, mask))
        hot_specs.append(HotPolicySpec(list(mask), name))
    if switch:
        from budget_edge.export.switch_graph import switch_graph  # onnx only, no torch

        codes = TensorSpec("codes", [len(blocks)], "int64")
        roles["switch"] = save(
            "switch",
            switch_graph(models, blocks, stem, head),
            [_spec("image", image), codes],
            [_spec("logits", logits)],
        )
    if policy:
        g = OnnxBuilder()
        probs, value = net.onnx_policy(g, "image", "budget")
        k = len(comps)
        model = g.model(
            [("image", image), ("budget", [BATCH_AXIS])],
            [("probs", probs, [BATCH_AXIS, k]), ("value", value, [BATCH_AXIS, 1])],
        )
        ins = [_spec("image", image), _spec("budget", [BATCH_AXIS])]
        outs = [_spec("probs", [BATCH_AXIS, k]), _spec("value", [BATCH_AXIS, 1])]
        roles["policy"] = save("policy", model, ins, outs)

    h0, w0 = net.input_size[1:]
    components = []
    for k, (b, path) in enumerate(comps):
        blk = net.blocks[b]
        if blk.kind == "resnet":
            flops = conv_flops(blk.p["w1"], blk.out_hw) + conv_flops(blk.p["w2"], blk.out_hw)
        else:
            q = blk.p["paths"][path]
            flops = sum(conv_flops(q[n], blk.out_hw) for n in ("wr", "wc", "we"))
        components.append(ComponentSpec(k, blk.stage, b, path, flops))
    c = net.input_size[0]
    manifest = Manifest(
        backbone_spec=BackboneSpec("tiny-" + net.blocks[0].kind, {"name": "tiny"}),
        num_classes=net.num_classes,
        class_names=[f"class{i}" for i in range(net.num_classes)],
        preprocessing=Preprocessing(net.mean, net.std, list(net.input_size), "NCHW", c),
        components=components,
        blocks=blocks,
        graphs=graphs,
        roles=roles,
        flops=FlopsSpec(
            stem=conv_flops(net.stem["w"], (h0, w0)),
            head=2 * int(net.head["w"].size),
            policy=2 * int(net.policy["w"].size + net.policy["wv"].size) if policy else None,
        ),
        versions={"onnx": onnx.__version__, "opset": OPSET, "budget_edge": "test"},
        hot_policies=hot_specs,
    )
    return write_manifest(out, manifest)


@dataclass
class Artifact:
    net: TinyNet
    path: Path
    manifest: Manifest


@pytest.fixture(scope="session")
def resnet_artifact(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """Three one-path blocks, a policy, the full graph and one hot policy [1, 0, 1]."""
    net = make_net("resnet")
    path = tmp_path_factory.mktemp("resnet")
    return Artifact(net, path, write_artifact(net, path, hot=[[1, 0, 1]]))


@pytest.fixture(scope="session")
def resnext_artifact(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """One channel; blocks with 3 paths ('all'), 5 paths ('prefix') and one path."""
    net = make_net("resnext", channels=1, seed=1)
    path = tmp_path_factory.mktemp("resnext")
    return Artifact(net, path, write_artifact(net, path))


@pytest.fixture
def fresh_artifact(tmp_path: Path) -> Artifact:
    """A private copy to corrupt or edit."""
    net = make_net("resnet")
    return Artifact(net, tmp_path, write_artifact(net, tmp_path))

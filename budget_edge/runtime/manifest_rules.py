"""The manifest's cross-field rules: what its schema cannot say, one function per rule.

runtime/manifest.py decodes the fields (types, enumerations, bounds); these functions
check that they fit together, each raising ManifestError naming the first bad field:

- tensors: the first axis is the symbolic batch axis, the others positive sizes; the
  one exception is an int64 control input of one fixed size (the switch graph's codes);
- roles: stem image -> features, each block graph features -> features, head features ->
  (batch, num_classes); full and hot-policy graphs image -> logits; policy (image, budget
  (batch,) or (batch, 1)) -> (probs (batch, K), value); switch (image, int64 codes
  (blocks,)) -> logits; allocator image -> chances (batch, K + 1), plus level
  probabilities (batch, K + 1, K) when ``allocation.count_masks`` is null;
- blocks: variants are exactly the path sets of the scheme ('prefix' blocks need equal
  path FLOPs); a null skip (identity) only for a one-path block that keeps its shape;
- masks (hot policies, static masks, count masks): K values of 0 or 1, and a 'prefix'
  block keeps a prefix of its paths, the only sets the runtime runs;
- precisions: a file for every graph, none shared with another set; files: a SHA-256
  for every file named.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from budget_edge.errors import ManifestError
from budget_edge.runtime.artifact_files import inside_artifact
from budget_edge.runtime.manifest import (
    BATCH_AXIS,
    CONTROL_DTYPE,
    MAX_FLOPS,
    MAX_ROW,
    QUANTIZED_PRECISIONS,
    ROLES,
    BlockSpec,
    GraphSpec,
    Manifest,
    Preprocessing,
    TensorSpec,
)

Shape = Sequence[int | str]


def check_rules(m: Manifest) -> None:
    """Every rule, in the order a reader of the manifest meets the fields."""
    class_names_match_num_classes(m)
    preprocessing_is_usable(m.preprocessing)
    graphs_are_unique_and_well_formed(m.graphs)
    components_go_by_block_then_path(m)
    roles_name_graphs_that_fit(m)
    blocks_chain_from_stem_to_head(m)
    hot_policies_are_runnable(m)
    static_masks_are_one_per_count(m)
    validation_split_is_recorded(m)
    allocation_comes_with_its_graph(m)
    decision_mode_can_run(m)
    precisions_cover_every_graph(m)
    flops_fit_in_int64(m)
    versions_are_recorded(m)
    engines_name_known_graphs(m)
    every_file_is_hashed(m)


def _check(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise ManifestError(
            f"manifest field {where} {problem}: re-export the model "
            "(or fix the exporter that wrote it)"
        )


def class_names_match_num_classes(m: Manifest) -> None:
    n = len(m.class_names)
    _check(n == m.num_classes, "class_names", f"has {n} names for {m.num_classes} classes")


def preprocessing_is_usable(p: Preprocessing) -> None:
    c = p.input_size[0]
    _check(p.channels == c, "preprocessing.channels", f"is {p.channels} but input_size has {c}")
    _check(math.prod(p.input_size) <= MAX_ROW, "preprocessing.input_size", "is too large")
    _check(len(p.mean) == c, "preprocessing.mean", f"needs {c} values")
    _check(len(p.std) == c, "preprocessing.std", f"needs {c} values")
    _check(all(abs(v) <= 1e6 for v in p.mean), "preprocessing.mean", "must lie in [-1e6, 1e6]")
    # pixel / 255 / std: a tiny std turns every pixel into inf (std 1e-300 did)
    ok = all(math.isfinite(s) and s >= 1e-6 for s in p.std)
    _check(ok, "preprocessing.std", "must be positive and finite, at least 1e-6")


def _tensor_follows_conventions(t: TensorSpec, where: str) -> None:
    if t.dtype == CONTROL_DTYPE:
        ok = len(t.shape) == 1 and isinstance(t.shape[0], int)
        _check(
            ok, f"{where}.shape", f"of an int64 control input must be one fixed size, got {t.shape}"
        )
        return
    ok = isinstance(t.shape[0], str) and all(isinstance(v, int) for v in t.shape[1:])
    _check(ok, f"{where}.shape", f"must be the batch axis, then sizes, got {t.shape}")
    size = math.prod(int(v) for v in t.shape[1:])
    _check(size <= MAX_ROW, f"{where}.shape", f"is too large: {t.shape}")


def graphs_are_unique_and_well_formed(graphs: list[GraphSpec]) -> None:
    names: set[str] = set()
    files: set[str] = set()
    for i, g in enumerate(graphs):
        where = f"graphs[{i}]"
        _check(g.name not in names, f"{where}.name", f"{g.name!r} is used by two graphs")
        _check(
            inside_artifact(g.file), f"{where}.file", f"must stay inside the artifact: {g.file!r}"
        )
        _check(g.file not in files, f"{where}.file", f"{g.file!r} is used by two graphs")
        _check(len(g.inputs) >= 1 and len(g.outputs) >= 1, where, "needs inputs and outputs")
        for kind, tensors in (("inputs", g.inputs), ("outputs", g.outputs)):
            for j, t in enumerate(tensors):
                _tensor_follows_conventions(t, f"{where}.{kind}[{j}]")
        names.add(g.name)
        files.add(g.file)


def components_go_by_block_then_path(m: Manifest) -> None:
    last = (-1, -1)
    for k, c in enumerate(m.components):
        where = f"components[{k}]"
        _check(c.index == k, f"{where}.index", f"is {c.index}, expected {k} (mask order)")
        _check(c.block < len(m.blocks), f"{where}.block", f"{c.block} is not a block index")
        stage = m.blocks[c.block].stage
        _check(
            c.stage == stage,
            f"{where}.stage",
            f"is {c.stage} but block {c.block} is in stage {stage}",
        )
        key = (c.block, -1 if c.path is None else c.path)
        _check(key > last, where, "is out of order: components go by block, then path")
        last = key


def _same(a: Shape, b: Shape) -> bool:
    """Same shape after the batch axis."""
    return len(a) == len(b) and list(a[1:]) == list(b[1:])


def _maps(g: GraphSpec, inputs: list[Shape], outputs: list[Shape]) -> bool:
    """Whether a graph has exactly these input and output shapes (after the batch axis)."""
    got = [t.shape for t in g.inputs], [t.shape for t in g.outputs]
    want = inputs, outputs
    return all(len(a) == len(b) and all(map(_same, a, b)) for a, b in zip(got, want, strict=True))


def roles_name_graphs_that_fit(m: Manifest) -> None:
    by_name = {g.name: g for g in m.graphs}
    for role, name in m.roles.items():
        _check(role in ROLES, f"roles.{role}", f"is not one of {ROLES}")
        _check(name is None or name in by_name, f"roles.{role}", f"names unknown graph {name!r}")
    for role in ("stem", "head"):
        _check(m.roles.get(role) is not None, f"roles.{role}", "is missing")
    graph = {role: by_name[name] for role, name in m.roles.items() if name is not None}
    image: Shape = [BATCH_AXIS, *m.preprocessing.input_size]
    logits: Shape = [BATCH_AXIS, m.num_classes]
    k = m.num_components
    stem, head = graph["stem"], graph["head"]
    ok = len(stem.inputs) == len(stem.outputs) == 1 and _same(stem.inputs[0].shape, image)
    _check(ok, "roles.stem", f"graph must map the image {image} to features")
    ok = len(head.inputs) == len(head.outputs) == 1 and _same(head.outputs[0].shape, logits)
    _check(ok, "roles.head", "graph must map features to (batch, num_classes)")
    if "full" in graph:
        ok = _maps(graph["full"], [image], [logits])
        _check(ok, "roles.full", "graph must map the image to (batch, num_classes)")
    if "policy" in graph:
        g = graph["policy"]
        ok = len(g.inputs) == len(g.outputs) == 2 and _same(g.inputs[0].shape, image)
        ok = ok and g.inputs[1].shape[1:] in ([], [1]) and g.outputs[1].shape[1:] in ([], [1])
        ok = ok and _same(g.outputs[0].shape, [BATCH_AXIS, k])
        _check(ok, "roles.policy", f"graph must map (image, budget) to (probs (batch, {k}), value)")
    if "allocator" in graph:
        outputs: list[Shape] = [[BATCH_AXIS, k + 1]]
        problem = f"graph must map the image to chances (batch, {k + 1})"
        if m.allocation is not None and m.allocation.count_masks is not None:
            problem += ": the count masks give the components"
        elif m.allocation is not None:
            outputs.append([BATCH_AXIS, k + 1, k])
            problem += f" and level probabilities (batch, {k + 1}, {k})"
        else:  # allocation_comes_with_its_graph says what is missing; the rest is unknown
            outputs += [t.shape for t in graph["allocator"].outputs[1:]]
        _check(_maps(graph["allocator"], [image], outputs), "roles.allocator", problem)
    if "switch" in graph:
        g = graph["switch"]
        codes: Shape = [len(m.blocks)]
        ok = _maps(g, [image, codes], [logits]) and g.inputs[1].dtype == CONTROL_DTYPE
        ok = ok and g.inputs[1].shape == codes
        _check(
            ok,
            "roles.switch",
            f"graph must map (image, int64 codes {codes}) to (batch, num_classes)",
        )


def _path_sets(block: BlockSpec) -> list[tuple[int, ...]]:
    """The kept-path sets the block's scheme gives a graph."""
    c = block.num_paths
    if block.variant_scheme == "single":
        return [(0,)]
    if block.variant_scheme == "prefix":
        return [tuple(range(size)) for size in range(1, c + 1)]
    return [s for size in range(1, c + 1) for s in itertools.combinations(range(c), size)]


def _path_set_count(block: BlockSpec) -> int:
    return {"single": 1, "prefix": block.num_paths}.get(
        block.variant_scheme, 2**block.num_paths - 1
    )


def blocks_chain_from_stem_to_head(m: Manifest) -> None:
    by_name = {g.name: g for g in m.graphs}
    shape: Shape = by_name[str(m.roles["stem"])].outputs[0].shape
    for b, block in enumerate(m.blocks):
        where = f"blocks[{b}]"
        _check(block.index == b, f"{where}.index", f"is {block.index}, expected {b}")
        comps = [m.components[k] for k in m.block_components(b)]
        want = [None] if block.num_paths == 1 else list(range(block.num_paths))
        _check(
            [c.path for c in comps] == want,
            where,
            "needs one component per path, in order (path null for a one-path block)",
        )
        single = block.variant_scheme == "single"
        ok = single == (block.num_paths == 1)
        _check(ok, f"{where}.variant_scheme", "must be 'single' exactly for one-path blocks")
        if block.variant_scheme == "prefix":
            ok = len({c.flops for c in comps}) == 1
            _check(
                ok, f"{where}.variant_scheme", "'prefix' needs every path to have the same FLOPs"
            )
        # Count first: 'all' over many paths has more sets than any manifest could list.
        ok = len(block.variants) == _path_set_count(block)
        ok = ok and sorted(_path_sets(block)) == sorted(tuple(v.paths) for v in block.variants)
        _check(
            ok,
            f"{where}.variants",
            f"are not the path sets of scheme {block.variant_scheme!r} for {block.num_paths} paths",
        )
        out: Shape | None = None
        for j, v in enumerate(block.variants):
            vw = f"{where}.variants[{j}].graph"
            _check(v.graph in by_name, vw, f"names unknown graph {v.graph!r}")
            g = by_name[v.graph]
            out = g.outputs[0].shape if out is None else out
            ok = _maps(g, [shape], [out])
            _check(ok, vw, f"graph must map the previous output {shape} to the block output {out}")
        assert out is not None
        if block.skip is None:
            _check(
                block.num_paths == 1,
                f"{where}.skip",
                "is null but a multi-path block needs a skip graph (ReLU(shortcut + BN(0)))",
            )
            _check(
                _same(shape, out),
                f"{where}.skip",
                "is null (identity) but the block changes the shape: export a skip graph",
            )
        else:
            _check(block.skip in by_name, f"{where}.skip", f"names unknown graph {block.skip!r}")
            ok = _maps(by_name[block.skip], [shape], [out])
            _check(ok, f"{where}.skip", "graph must map the block input shape to its output shape")
        shape = out
    head = by_name[str(m.roles["head"])]
    ok = _same(head.inputs[0].shape, shape)
    _check(
        ok,
        "roles.head",
        f"input shape {head.inputs[0].shape} does not match the last block output {shape}",
    )


def _prefix_blocks(m: Manifest) -> dict[int, list[int]]:
    """The components of each 'prefix' block, found once (not once per mask)."""
    blocks = [b.index for b in m.blocks if b.variant_scheme == "prefix"]
    return {b: m.block_components(b) for b in blocks}


def _mask_is_runnable(
    m: Manifest, mask: list[int], where: str, prefix: dict[int, list[int]]
) -> None:
    k = m.num_components
    ok = len(mask) == k and all(v in (0, 1) for v in mask)
    _check(ok, where, f"must be {k} values of 0 or 1")
    for b, components in prefix.items():
        part = [mask[i] for i in components]
        _check(
            part == sorted(part, reverse=True),
            where,
            f"keeps a non-prefix path set of "
            f"block {b} (scheme 'prefix'), which the runtime never runs",
        )


def hot_policies_are_runnable(m: Manifest) -> None:
    by_name = {g.name: g for g in m.graphs}
    image: Shape = [BATCH_AXIS, *m.preprocessing.input_size]
    seen: set[tuple[int, ...]] = set()
    prefix = _prefix_blocks(m)
    for i, h in enumerate(m.hot_policies):
        where = f"hot_policies[{i}]"
        _mask_is_runnable(m, h.mask, f"{where}.mask", prefix)
        _check(tuple(h.mask) not in seen, f"{where}.mask", "is listed twice")
        seen.add(tuple(h.mask))
        _check(h.graph in by_name, f"{where}.graph", f"names unknown graph {h.graph!r}")
        ok = _maps(by_name[h.graph], [image], [[BATCH_AXIS, m.num_classes]])
        _check(ok, f"{where}.graph", "graph must map the image to (batch, num_classes)")


def static_masks_are_one_per_count(m: Manifest) -> None:
    kept: set[int] = set()
    prefix = _prefix_blocks(m)
    for i, s in enumerate(m.static_masks.masks if m.static_masks else []):
        where = f"static_masks.masks[{i}]"
        _mask_is_runnable(m, s.mask, f"{where}.mask", prefix)
        n = sum(s.mask)
        _check(
            n not in kept,
            f"{where}.mask",
            f"keeps {n} components, like an earlier mask: one mask per count",
        )
        kept.add(n)
        ok = math.isfinite(s.accuracy) and 0.0 <= s.accuracy <= 1.0
        _check(ok, f"{where}.accuracy", "must lie in [0, 1]")


def validation_split_is_recorded(m: Manifest) -> None:
    split = m.validation_split
    if split is None:
        return
    size, seed, digest = split.get("size"), split.get("seed"), split.get("indices_sha256")
    _check(type(size) is int and size >= 1, "validation_split.size", "must be an int >= 1")
    _check(type(seed) is int, "validation_split.seed", "must be an int")
    ok = isinstance(digest, str) and len(digest) == 64 and set(digest) <= set("0123456789abcdef")
    _check(ok, "validation_split.indices_sha256", "must be 64 lowercase hex digits")


def allocation_comes_with_its_graph(m: Manifest) -> None:
    has_graph = m.roles.get("allocator") is not None
    exactly = "must be given exactly when there is an allocator graph"
    _check((m.allocation is not None) == has_graph, "allocation", exactly)
    _check((m.flops.allocator is not None) == has_graph, "flops.allocator", exactly)
    a = m.allocation
    if a is None:
        return
    ok = len(a.budgets) >= 1 and len(a.budgets) == len(a.prices)
    _check(ok, "allocation", "needs equally long, non-empty budgets and prices")
    _check(all(map(math.isfinite, a.budgets + a.prices)), "allocation", "holds NaN or inf")
    ok = all(0.0 <= v <= 1.0 for v in a.budgets)
    ok = ok and all(b2 > b1 for b1, b2 in itertools.pairwise(a.budgets))
    _check(ok, "allocation.budgets", "must rise strictly within [0, 1]")
    ok = all(p >= 0.0 for p in a.prices)
    ok = ok and all(p2 <= p1 for p1, p2 in itertools.pairwise(a.prices))
    _check(ok, "allocation.prices", "must be >= 0 and never rise with the budget")
    if a.count_masks is not None:
        k, rows = m.num_components, a.count_masks
        ok = len(rows) == k + 1 and all(len(r) == k and set(r) <= {0, 1} for r in rows)
        ok = ok and [sum(r) for r in rows] == list(range(k + 1))
        _check(
            ok,
            "allocation.count_masks",
            f"must be {k + 1} rows of {k} zeros and ones, row k keeping k components",
        )


def decision_mode_can_run(m: Manifest) -> None:
    if m.decision_mode == "allocate":
        _check(m.allocation is not None, "decision_mode", "is 'allocate' but there is no allocator")
    elif m.decision_mode is not None:
        _check(m.roles.get("policy") is not None, "decision_mode", "needs a policy graph")


def precisions_cover_every_graph(m: Manifest) -> None:
    taken = {g.file for g in m.graphs}  # engines are not graphs of a set either
    if m.tensorrt is not None:
        taken |= {*m.tensorrt.engines.values(), m.tensorrt.preprocess or ""}
    names = {g.name for g in m.graphs}
    for precision, spec in m.precisions.items():
        where = f"precisions[{precision!r}]"
        _check(
            precision in QUANTIZED_PRECISIONS,
            where,
            f"is not one of {QUANTIZED_PRECISIONS} (fp32 is `graphs` itself)",
        )
        _check(
            set(spec.files) == names,
            f"{where}.files",
            "must name a file for every graph of `graphs`, and nothing else",
        )
        for name, path in spec.files.items():
            _check(
                inside_artifact(path),
                f"{where}.files[{name!r}]",
                f"must stay inside the artifact: {path!r}",
            )
            _check(
                path not in taken,
                f"{where}.files[{name!r}]",
                "is already the file of another graph or engine",
            )
            taken.add(path)


def flops_fit_in_int64(m: Manifest) -> None:
    total = m.full_flops + (m.flops.policy or 0) + (m.flops.allocator or 0)
    _check(total < MAX_FLOPS, "flops", f"total {total:.3g}, is not a model's FLOPs (at most 2**53)")
    has_policy = m.roles.get("policy") is not None
    _check(
        (m.flops.policy is not None) == has_policy,
        "flops.policy",
        "must be given exactly when there is a policy graph",
    )
    _check(m.full_flops > 0, "flops", "the full model must have positive FLOPs")


def versions_are_recorded(m: Manifest) -> None:
    for key in ("onnx", "opset", "budget_edge"):
        _check(key in m.versions, f"versions.{key}", "is missing")


def engines_name_known_graphs(m: Manifest) -> None:
    if m.tensorrt is None:
        return
    names = {g.name for g in m.graphs}
    for name, path in m.tensorrt.engines.items():
        _check(name in names, f"tensorrt.engines[{name!r}]", "names an unknown graph")
        _check(
            inside_artifact(path),
            f"tensorrt.engines[{name!r}]",
            f"must stay inside the artifact: {path!r}",
        )
    preprocess = m.tensorrt.preprocess
    ok = preprocess is None or inside_artifact(preprocess)
    _check(ok, "tensorrt.preprocess", f"must stay inside the artifact: {preprocess!r}")


def every_file_is_hashed(m: Manifest) -> None:
    for name in m.files:
        _check(inside_artifact(name), f"files[{name!r}]", "must stay inside the artifact")
    for name in m.referenced_files():
        _check(name in m.files, "files", f"has no SHA-256 for {name!r}")

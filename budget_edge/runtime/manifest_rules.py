"""The manifest's cross-field rules: what its schema cannot say, one function per rule.

runtime/manifest.py decodes each field (type, enumeration, bound); these check that the
fields fit together, each raising ManifestError naming the first bad field. The graph
conventions they enforce (what each role maps to what, variant schemes, masks) are
described in docs/internals.md, "Runtime".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from budget_edge.errors import ManifestError
from budget_edge.runtime.manifest import (
    BATCH_AXIS,
    CONTROL_DTYPE,
    MAX_FLOPS,
    MAX_ROW,
    GraphSpec,
    Manifest,
    Preprocessing,
    TensorSpec,
    ValidationSplit,
    decode,
)

Shape = Sequence[int | str]


def check_rules(m: Manifest) -> None:
    """Every rule, in the order a reader of the manifest meets the fields."""
    class_names_match_num_classes(m)
    preprocessing_is_usable(m.preprocessing)
    graphs_are_unique_and_batched(m.graphs)
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


def _graph(by_name: dict[str, GraphSpec], name: str | None, where: str) -> GraphSpec:
    """The graph that a field names."""
    _check(name in by_name, where, f"names unknown graph {name!r}")
    return by_name[str(name)]


def class_names_match_num_classes(m: Manifest) -> None:
    n = len(m.class_names)
    _check(n == m.num_classes, "class_names", f"has {n} names for {m.num_classes} classes")


def preprocessing_is_usable(p: Preprocessing) -> None:
    c, w = p.input_size[0], "preprocessing"
    _check(p.channels == c, f"{w}.channels", f"is {p.channels} but input_size has {c}")
    _check(math.prod(p.input_size) <= MAX_ROW, f"{w}.input_size", f"is over {MAX_ROW} values")
    _check(len(p.mean) == c, f"{w}.mean", f"needs {c} values")
    _check(len(p.std) == c, f"{w}.std", f"needs {c} values")


def _batched(t: TensorSpec, where: str) -> None:
    """The batch axis (a name), then sizes; or the fixed size of an int64 control input."""
    if t.dtype == CONTROL_DTYPE:
        ok = len(t.shape) == 1 and isinstance(t.shape[0], int)
        _check(ok, where, f"of an int64 control input must be one fixed size, got {t.shape}")
        return
    ok = isinstance(t.shape[0], str) and all(isinstance(v, int) for v in t.shape[1:])
    _check(ok, where, f"must be the batch axis, then sizes, got {t.shape}")
    _check(math.prod(int(v) for v in t.shape[1:]) <= MAX_ROW, where, f"is too large: {t.shape}")


def graphs_are_unique_and_batched(graphs: list[GraphSpec]) -> None:
    names: set[str] = set()
    files: set[str] = set()
    for i, g in enumerate(graphs):
        w = f"graphs[{i}]"
        _check(g.name not in names, f"{w}.name", f"{g.name!r} is used by two graphs")
        _check(g.file not in files, f"{w}.file", f"{g.file!r} is used by two graphs")
        for kind, tensors in (("inputs", g.inputs), ("outputs", g.outputs)):
            for j, t in enumerate(tensors):
                _batched(t, f"{w}.{kind}[{j}].shape")
        names.add(g.name)
        files.add(g.file)


def components_go_by_block_then_path(m: Manifest) -> None:
    last = (-1, -1)
    for k, c in enumerate(m.components):
        w = f"components[{k}]"
        _check(c.index == k, f"{w}.index", f"is {c.index}, expected {k} (mask order)")
        _check(c.block < len(m.blocks), f"{w}.block", f"{c.block} is not a block index")
        stage = m.blocks[c.block].stage
        _check(c.stage == stage, f"{w}.stage", f"is {c.stage}, but block {c.block}'s is {stage}")
        key = (c.block, -1 if c.path is None else c.path)
        _check(key > last, w, "is out of order: components go by block, then path")
        last = key


def _shape(*sizes: int) -> Shape:
    return [BATCH_AXIS, *sizes]


def _same(a: Shape, b: Shape) -> bool:
    """Same shape after the batch axis."""
    return len(a) == len(b) and list(a[1:]) == list(b[1:])


def _maps(g: GraphSpec, inputs: list[Shape], outputs: list[Shape]) -> bool:
    """Whether a graph has exactly these input and output shapes (after the batch axis)."""
    pairs = ((g.inputs, inputs), (g.outputs, outputs))
    return all(
        len(a) == len(b) and all(_same(t.shape, s) for t, s in zip(a, b, strict=True))
        for a, b in pairs
    )


def roles_name_graphs_that_fit(m: Manifest) -> None:
    for role in ("stem", "head"):
        _check(m.roles.get(role) is not None, f"roles.{role}", "is missing")
    by_name = {g.name: g for g in m.graphs}
    graph = {
        r: _graph(by_name, name, f"roles.{r}") for r, name in m.roles.items() if name is not None
    }
    k, image, logits = m.num_components, _shape(*m.preprocessing.input_size), _shape(m.num_classes)
    stem, head = graph["stem"], graph["head"]
    ok = _maps(stem, [image], [stem.outputs[0].shape])
    _check(ok, "roles.stem", f"graph must map the image {image} to features")
    ok = _maps(head, [head.inputs[0].shape], [logits])
    _check(ok, "roles.head", "graph must map features to (batch, num_classes)")
    if "full" in graph:
        ok = _maps(graph["full"], [image], [logits])
        _check(ok, "roles.full", "graph must map the image to (batch, num_classes)")
    if "policy" in graph:
        g = graph["policy"]
        ok = len(g.inputs) == len(g.outputs) == 2 and _same(g.inputs[0].shape, image)
        ok = ok and g.inputs[1].shape[1:] in ([], [1]) and g.outputs[1].shape[1:] in ([], [1])
        ok = ok and _same(g.outputs[0].shape, _shape(k))
        _check(ok, "roles.policy", f"graph must map (image, budget) to (probs (batch, {k}), value)")
    if "allocator" in graph:
        g, outputs = graph["allocator"], [_shape(k + 1)]
        problem = f"graph must map the image to chances (batch, {k + 1})"
        if m.allocation is None:  # allocation_comes_with_its_graph says what is missing
            outputs += [t.shape for t in g.outputs[1:]]
        elif m.allocation.count_masks is not None:
            problem += ": the count masks give the components"
        else:
            outputs.append(_shape(k + 1, k))
            problem += f" and level probabilities (batch, {k + 1}, {k})"
        _check(_maps(g, [image], outputs), "roles.allocator", problem)
    if "switch" in graph:
        g, codes = graph["switch"], [len(m.blocks)]  # no batch axis
        ok = _maps(g, [image, codes], [logits]) and g.inputs[1].shape == codes
        ok = ok and g.inputs[1].dtype == CONTROL_DTYPE
        problem = f"graph must map (image, int64 codes {codes}) to (batch, num_classes)"
        _check(ok, "roles.switch", problem)


def _path_sets(scheme: str, n: int) -> list[tuple[int, ...]]:
    """The kept-path sets that a block's scheme gives a graph, sorted."""
    if scheme == "single":
        return [(0,)]
    if scheme == "prefix":
        return [tuple(range(size)) for size in range(1, n + 1)]
    return sorted(s for size in range(1, n + 1) for s in itertools.combinations(range(n), size))


def blocks_chain_from_stem_to_head(m: Manifest) -> None:
    by_name = {g.name: g for g in m.graphs}
    shape: Shape = by_name[str(m.roles["stem"])].outputs[0].shape
    for b, block in enumerate(m.blocks):
        w, scheme, n = f"blocks[{b}]", block.variant_scheme, block.num_paths
        _check(block.index == b, f"{w}.index", f"is {block.index}, expected {b}")
        comps = [m.components[k] for k in m.block_components(b)]
        want = [None] if n == 1 else list(range(n))
        _check([c.path for c in comps] == want, w, "needs a component per path, in order")
        ok = (scheme == "single") == (n == 1)
        _check(ok, f"{w}.variant_scheme", "must be 'single' exactly for one-path blocks")
        ok = scheme != "prefix" or len({c.flops for c in comps}) == 1
        _check(ok, f"{w}.variant_scheme", "'prefix' needs paths of the same FLOPs")
        # Count first: 'all' over many paths has more sets than any manifest could list.
        ok = len(block.variants) == {"single": 1, "prefix": n, "all": 2**n - 1}[scheme]
        ok = ok and _path_sets(scheme, n) == sorted(tuple(v.paths) for v in block.variants)
        _check(ok, f"{w}.variants", f"are not the path sets of scheme {scheme!r} for {n} path(s)")
        out = _graph(by_name, block.variants[0].graph, f"{w}.variants[0].graph").outputs[0].shape
        for j, v in enumerate(block.variants):
            ok = _maps(_graph(by_name, v.graph, f"{w}.variants[{j}].graph"), [shape], [out])
            _check(ok, f"{w}.variants[{j}].graph", f"graph must map {shape} to the block's {out}")
        if block.skip is None:
            problem = "is null but a multi-path block needs a skip graph (ReLU(shortcut + BN(0)))"
            _check(n == 1, f"{w}.skip", problem)
            problem = "is null (identity) but the block changes the shape: export a skip graph"
            _check(_same(shape, out), f"{w}.skip", problem)
        else:
            ok = _maps(_graph(by_name, block.skip, f"{w}.skip"), [shape], [out])
            _check(ok, f"{w}.skip", f"graph must map {shape} to the block's {out}")
        shape = out
    head = by_name[str(m.roles["head"])].inputs[0].shape
    _check(_same(head, shape), "roles.head", f"input {head} is not the last block's {shape}")


def _prefix_blocks(m: Manifest) -> dict[int, list[int]]:
    """The components of each 'prefix' block, found once (not once per mask)."""
    return {b.index: m.block_components(b.index) for b in m.blocks if b.variant_scheme == "prefix"}


def _runnable(m: Manifest, mask: list[int], where: str, prefix: dict[int, list[int]]) -> None:
    """K values, keeping a prefix of each 'prefix' block (the only path sets that run)."""
    k = m.num_components
    _check(len(mask) == k, where, f"must be {k} values of 0 or 1")
    for b, components in prefix.items():
        part = [mask[i] for i in components]
        problem = f"keeps a non-prefix path set of block {b} (scheme 'prefix'), which never runs"
        _check(part == sorted(part, reverse=True), where, problem)


def hot_policies_are_runnable(m: Manifest) -> None:
    by_name, prefix = {g.name: g for g in m.graphs}, _prefix_blocks(m)
    image, logits = _shape(*m.preprocessing.input_size), _shape(m.num_classes)
    seen: set[tuple[int, ...]] = set()
    for i, h in enumerate(m.hot_policies):
        w = f"hot_policies[{i}]"
        _runnable(m, h.mask, f"{w}.mask", prefix)
        _check(tuple(h.mask) not in seen, f"{w}.mask", "is listed twice")
        seen.add(tuple(h.mask))
        ok = _maps(_graph(by_name, h.graph, f"{w}.graph"), [image], [logits])
        _check(ok, f"{w}.graph", "graph must map the image to (batch, num_classes)")


def static_masks_are_one_per_count(m: Manifest) -> None:
    kept: set[int] = set()
    prefix = _prefix_blocks(m)
    for i, s in enumerate(m.static_masks.masks if m.static_masks else []):
        w, n = f"static_masks.masks[{i}].mask", sum(s.mask)
        _runnable(m, s.mask, w, prefix)
        _check(n not in kept, w, f"keeps {n} components, like an earlier mask")
        kept.add(n)


def validation_split_is_recorded(m: Manifest) -> None:
    if m.validation_split is not None:
        decode(m.validation_split, ValidationSplit, "validation_split")


def allocation_comes_with_its_graph(m: Manifest) -> None:
    has_graph, a = m.roles.get("allocator") is not None, m.allocation
    exactly = "must be given exactly when there is an allocator graph"
    _check((a is not None) == has_graph, "allocation", exactly)
    _check((m.flops.allocator is not None) == has_graph, "flops.allocator", exactly)
    if a is None:
        return
    _check(len(a.budgets) == len(a.prices), "allocation", "needs equally long budgets and prices")
    ok = all(b2 > b1 for b1, b2 in itertools.pairwise(a.budgets))
    _check(ok, "allocation.budgets", "must rise strictly within [0, 1]")
    ok = all(p2 <= p1 for p1, p2 in itertools.pairwise(a.prices))
    _check(ok, "allocation.prices", "must never rise with the budget")
    if a.count_masks is not None:
        k, rows = m.num_components, a.count_masks
        ok = len(rows) == k + 1 and all(len(r) == k for r in rows)
        ok = ok and [sum(r) for r in rows] == list(range(k + 1))
        problem = f"must be {k + 1} rows of {k} zeros and ones, row k keeping k components"
        _check(ok, "allocation.count_masks", problem)


def decision_mode_can_run(m: Manifest) -> None:
    if m.decision_mode == "allocate":
        _check(m.allocation is not None, "decision_mode", "is 'allocate' but there is no allocator")
    elif m.decision_mode is not None:
        _check(m.roles.get("policy") is not None, "decision_mode", "needs a policy graph")


def precisions_cover_every_graph(m: Manifest) -> None:
    taken = {g.file for g in m.graphs}  # engines are no graph set's files either
    if m.tensorrt is not None:
        taken |= {*m.tensorrt.engines.values(), m.tensorrt.preprocess or ""}
    names = {g.name for g in m.graphs}
    for precision, spec in m.precisions.items():
        w = f"precisions[{precision!r}]"
        _check(set(spec.files) == names, f"{w}.files", "must name one file per graph of `graphs`")
        for name, path in spec.files.items():
            problem = "is already the file of another graph or engine"
            _check(path not in taken, f"{w}.files[{name!r}]", problem)
            taken.add(path)


def flops_fit_in_int64(m: Manifest) -> None:
    total = m.full_flops + (m.flops.policy or 0) + (m.flops.allocator or 0)
    _check(total < MAX_FLOPS, "flops", f"total {total:.3g}, is not a model's FLOPs (over 2**53)")
    ok = (m.flops.policy is not None) == (m.roles.get("policy") is not None)
    _check(ok, "flops.policy", "must be given exactly when there is a policy graph")
    _check(m.full_flops > 0, "flops", "the full model must have positive FLOPs")


def versions_are_recorded(m: Manifest) -> None:
    for key in ("onnx", "opset", "budget_edge"):
        _check(key in m.versions, f"versions.{key}", "is missing")


def engines_name_known_graphs(m: Manifest) -> None:
    names = {g.name for g in m.graphs}
    for name in m.tensorrt.engines if m.tensorrt else {}:
        _check(name in names, f"tensorrt.engines[{name!r}]", "names an unknown graph")


def every_file_is_hashed(m: Manifest) -> None:
    for name in m.referenced_files():
        _check(name in m.files, "files", f"has no SHA-256 for {name!r}")

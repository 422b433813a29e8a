"""Hostile cases against budget-edge, each run and sorted by outcome.

    python benchmarks/hostile.py CHECKPOINT --out benchmarks/results/hostile

Five categories: the runtime API, artifact directories, checkpoints, the server and
the CLI. Every case is something a careless or hostile user can do; its outcome is

- handled:   refused with budget-edge's own one-line error (a 4xx/503 JSON error over
             HTTP, exit status 2 from the CLI) before anything ran wrong
- answered:  valid (if odd) input, answered and checked against a reference
- traceback: a foreign exception or a Python traceback reached the user
- http500:   the server answered 500 to client input
- silent:    a wrong answer or an accepted bad input without a word (for pickles:
             code ran)
- hang:      no answer within the case's time limit
- unsigned:  an unsigned artifact whose graph AND manifest hash were both rewritten
             answers differently: without a signature the manifest is the reference, so
             this is trusted by design; the same case on a signed artifact must be handled

The goal is zero in the last four columns. CHECKPOINT is a trained BudgetNet
checkpoint (the committed ResNet-20 one is used for the results).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from budget_edge.errors import BudgetEdgeError
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.machine import machine_info
from budget_edge.runtime.manifest import MANIFEST_NAME, Manifest, write_manifest

OUTCOMES = ("handled", "answered", "unsigned", "traceback", "http500", "silent", "hang")
CATEGORIES = ("runtime API", "artifact directory", "checkpoint", "server", "CLI")
CASE_TIMEOUT_S = 60.0


@dataclass
class Result:
    category: str
    kind: str
    outcome: str
    detail: str


# A case returns (outcome, detail); it may raise, and is classified then.
CaseFn = Callable[[], tuple[str, str]]


def run_case(category: str, kind: str, fn: CaseFn, timeout: float = CASE_TIMEOUT_S) -> Result:
    """Run one case in a thread: a case still running after `timeout` is a hang."""
    box: list[tuple[str, str]] = []

    def target() -> None:
        try:
            box.append(fn())
        except BudgetEdgeError as exc:
            box.append(("handled", _one_line(exc)))
        except Exception as exc:  # the whole point: any foreign exception is a finding
            box.append(("traceback", f"{type(exc).__name__}: {_one_line(exc)}"))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return Result(category, kind, "hang", f"no answer within {timeout:g} s")
    return Result(category, kind, *box[0])


def _one_line(exc: BaseException | str) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


# ---- runtime API -------------------------------------------------------------------


def runtime_cases(artifact: Path) -> Iterator[tuple[str, CaseFn]]:
    rt = BudgetRuntime.load(artifact, backend="onnxruntime", threads=1)
    c, h, w = rt.manifest.preprocessing.input_size
    k = rt.num_components
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, h, w, c), dtype=np.uint8)
    reference = rt.infer(pixels, budget=0.5)

    def expect_error(**call: Any) -> CaseFn:
        def fn() -> tuple[str, str]:
            result = rt.infer(**call)
            return "silent", f"accepted; mask usage {result.usage.mean():.2f}"

        return fn

    def expect_finite(**call: Any) -> CaseFn:
        """Odd but finite input: a finite answer, or the runtime's error if the logits
        overflow; never NaN logits handed back."""

        def fn() -> tuple[str, str]:
            result = rt.infer(**call)
            return (
                ("answered", "finite logits")
                if np.isfinite(result.logits).all()
                else ("silent", "non-finite logits returned")
            )

        return fn

    def expect_same(**call: Any) -> CaseFn:
        """Valid in another form: the answer must equal the reference's."""

        def fn() -> tuple[str, str]:
            result = rt.infer(**call)
            same = np.allclose(
                result.logits, reference.logits[: len(result.logits)], rtol=1e-4, atol=1e-4
            )
            return (
                ("answered", "equal to the reference")
                if same
                else ("silent", "answer differs from the reference")
            )

        return fn

    float_images = (
        pixels.astype(np.float32) / 255 - np.float32(rt.manifest.preprocessing.mean[0])
    ) / np.float32(rt.manifest.preprocessing.std[0])
    nchw = float_images.transpose(0, 3, 1, 2).copy()
    for shape in [
        (),
        (h,),
        (2, 2, h, w, c),
        (2, c + 1, h, w),
        (2, c, h + 1, w),
        (2, c, h, w - 1),
        (0, c, h, w),
        (0, h, w, c),
        (2, h, w, c + 2),
        (1, 1),
        (2, 1, 1, 1),
        (10**6, 0),
    ]:
        yield (
            f"images of shape {shape}",
            expect_error(images=np.zeros(shape, np.float32), budget=0.5),
        )
    for dtype in [
        "int8",
        "int16",
        "int32",
        "int64",
        "uint16",
        "bool",
        "complex64",
        "float16",
        "object",
        "U3",
        "datetime64[s]",
    ]:
        yield f"NCHW images of dtype {dtype}", expect_error(images=nchw.astype(dtype), budget=0.5)
    yield "float64 NCHW images", expect_same(images=nchw.astype(np.float64), budget=0.5)
    yield "NCHW images as nested lists", expect_same(images=nchw.tolist(), budget=0.5)
    yield (
        "non-contiguous NCHW images",
        expect_same(images=np.ascontiguousarray(nchw[:, :, :, ::-1])[:, :, :, ::-1], budget=0.5),
    )
    for value in [np.nan, np.inf, -np.inf]:
        bad = nchw.copy()
        bad[0, 0, 0, 0] = value
        yield f"an NCHW pixel of {value}", expect_error(images=bad, budget=0.5)
    for value in [3e38, -3e38, 1e30]:
        bad = nchw.copy()
        bad[0, 0, 0, 0] = value
        yield f"an NCHW pixel of {value:g}", expect_finite(images=bad, budget=0.5)
        yield (
            f"every NCHW pixel {value:g}",
            expect_finite(images=np.full_like(nchw, value), budget=0.5),
        )
    for value in [None, "images", b"\x00" * 10, {"x": 1}, 3.5, [[1, 2], [3]]]:
        yield f"images given as {type(value).__name__}", expect_error(images=value, budget=0.5)
    for budget in [
        -0.1,
        1.1,
        np.nan,
        np.inf,
        -np.inf,
        "0.5",
        2**70,
        1e308,
        1j,
        True,
        [0.5, 0.5, 0.5],
        [[0.5], [0.5]],
        np.array([0.2, np.nan]),
        {"c": 0.5},
        object(),
    ]:
        yield f"budget {budget!r:.40}", expect_error(images=pixels, budget=budget)
    yield "no budget and no mask", expect_error(images=pixels)
    yield "budget as numpy float16", expect_same(images=pixels, budget=np.float16(0.5))
    yield "budget per image as a list", expect_same(images=pixels, budget=[0.5, 0.5])
    for mask in [
        [1] * (k - 1),
        [1] * (k + 1),
        [2] * k,
        [-1] * k,
        [0.5] * k,
        [np.nan] * k,
        ["1"] * k,
        [[1] * k] * 3,
        np.ones((2, k, 1)),
        "1" * k,
        None,
    ]:
        if mask is None:
            continue
        yield (
            f"mask {np.asarray(mask, dtype=object).shape} of {mask!r:.30}",
            expect_error(images=pixels, mask=mask),
        )
    yield "both a budget and a mask", expect_error(images=pixels, budget=0.5, mask=[1] * k)
    yield "mode=None (the artifact's own mode)", expect_same(images=pixels, budget=0.5, mode=None)
    for name, value in [
        ("mode", "Greedy"),
        ("mode", ""),
        ("mode", 5),
        ("cap", "flop"),
        ("cap", 1),
        ("policy", "agnt"),
        ("policy", None),
        ("seed", -1),
        ("seed", "x"),
        ("seed", 1.5),
        ("seed", True),
    ]:
        call = {"images": pixels, "budget": 0.5, name: value}
        if name == "seed":
            call["mode"] = "sample"
        yield f"{name}={value!r}", expect_error(**call)
    yield (
        "seed 2**70 (numpy takes any non-negative integer)",
        expect_finite(images=pixels, budget=0.5, mode="sample", seed=2**70),
    )
    yield (
        "policy 'static' on an artifact without static masks",
        expect_error(images=pixels, budget=0.5, policy="static"),
    )
    # Arrays that are ndarrays but mean something else (issue 25, class 11).
    hidden = np.ma.masked_array(pixels, mask=pixels > 128)
    yield (
        "masked-array pixels (masked values would run as pixels)",
        expect_error(images=hidden, budget=0.5),
    )
    yield (
        "masked-array NCHW floats",
        expect_error(images=np.ma.masked_array(nchw, mask=nchw > 0), budget=0.5),
    )
    yield "np.matrix pixels", expect_error(images=np.matrix(pixels[0, :, :, 0]), budget=0.5)
    yield (
        "a masked-array budget",
        expect_error(images=pixels, budget=np.ma.masked_array([0.5, 0.5], mask=[True, False])),
    )
    yield "a np.matrix mask", expect_error(images=pixels, mask=np.matrix([[1] * k] * 2))
    for budget in [[True, False], np.array([True, True]), np.bool_(False)]:
        yield f"bool budget {budget!r:.30}", expect_error(images=pixels, budget=budget)
    for name, value in [
        ("policy", "static"),
        ("mode", "sample"),
        ("seed", 3),
        ("cap", "flops"),
        ("mode", "allocate"),
    ]:
        yield (
            f"a mask with {name}={value!r} (ignored before)",
            expect_error(images=pixels, mask=[1] * k, **{name: value}),
        )
    memmap_path = Path(tempfile.mkdtemp(prefix="hostile-memmap-")) / "pixels"
    mapped = np.memmap(memmap_path, np.uint8, "w+", shape=pixels.shape)
    mapped[:] = pixels
    yield (
        "memmapped pixels (an ndarray subclass that means the same)",
        expect_same(images=mapped, budget=0.5),
    )

    def load(**kwargs: Any) -> CaseFn:
        def fn() -> tuple[str, str]:
            BudgetRuntime.load(**kwargs).close()
            return "silent", "loaded"

        return fn

    for kwargs in [
        {"backend": "cuda"},
        {"backend": ""},
        {"threads": 0},
        {"threads": -1},
        {"threads": "2"},
        {"precision": "int4"},
        {"precision": "fp16"},
        {"trusted_keys": ["/nonexistent.pem"]},
        {"providers": ["NoSuchProvider"]},
    ]:
        yield f"load with {kwargs}", load(directory=artifact, **kwargs)
    # Trust that must fail closed, and key files that must not be read unbounded.
    keys = Path(tempfile.mkdtemp(prefix="hostile-keys-"))
    os.mkfifo(keys / "fifo.pem")
    (keys / "big.pem").write_bytes(b"-" * (2 << 20))
    (keys / "empty.pem").write_bytes(b"")
    for trusted in [
        [],
        "",
        (),
        iter(()),
        keys / "empty.pem",
        str(keys / "empty.pem"),
        ["/dev/zero"],
        [keys / "fifo.pem"],
        [keys / "big.pem"],
        [keys / "empty.pem"],
        [""],
        [keys],
    ]:
        yield (
            f"load with trusted_keys={trusted!r:.50}",
            load(directory=artifact, trusted_keys=trusted),
        )
    for where in ["/nonexistent/artifact", "/etc/hostname", "/", "/tmp"]:
        yield f"load {where}", load(directory=where)


# ---- artifact directories ----------------------------------------------------------


def _corruptions(manifest: Manifest) -> Iterator[tuple[str, Callable[[Path], None]]]:
    graphs = sorted(manifest.files)
    other = {g: graphs[(i + 1) % len(graphs)] for i, g in enumerate(graphs)}

    def rehash(art: Path) -> None:  # what an attacker who can write the manifest does
        write_manifest(art, Manifest.load(art))

    for name in graphs:

        def delete(art: Path, n: str = name) -> None:
            (art / n).unlink()

        def truncate(art: Path, n: str = name) -> None:
            data = (art / n).read_bytes()
            (art / n).write_bytes(data[: len(data) // 2])

        def empty(art: Path, n: str = name) -> None:
            (art / n).write_bytes(b"")

        def flip(art: Path, n: str = name) -> None:
            data = bytearray((art / n).read_bytes())
            data[len(data) // 2] ^= 0xFF
            (art / n).write_bytes(bytes(data))

        def append(art: Path, n: str = name) -> None:
            (art / n).write_bytes((art / n).read_bytes() + os.urandom(64))

        def swap(art: Path, n: str = name) -> None:
            shutil.copyfile(art / other[n], art / n)

        def swap_rehash(art: Path, n: str = name) -> None:
            swap(art, n)
            rehash(art)

        def random_rehash(art: Path, n: str = name) -> None:
            (art / n).write_bytes(os.urandom(4096))
            rehash(art)

        def flip_rehash(art: Path, n: str = name) -> None:
            flip(art, n)
            rehash(art)

        def link_outside(art: Path, n: str = name) -> None:
            (art / n).unlink()
            (art / n).symlink_to("/etc/hostname")

        def link_copy(art: Path, n: str = name) -> None:
            outside = art.parent / f"{art.name}-outside.onnx"
            shutil.copyfile(art / n, outside)
            (art / n).unlink()
            (art / n).symlink_to(outside)

        def external(art: Path, n: str = name) -> None:
            import onnx

            model = onnx.load(art / n)
            onnx.save(
                model, art / n, save_as_external_data=True, location="weights.bin", size_threshold=0
            )
            rehash(art)

        def directory(art: Path, n: str = name) -> None:
            (art / n).unlink()
            (art / n).mkdir()

        for kind, fn in [
            ("deleted", delete),
            ("truncated to half", truncate),
            ("emptied", empty),
            ("one byte flipped", flip),
            ("garbage appended", append),
            ("swapped with another graph", swap),
            ("swapped, manifest re-hashed", swap_rehash),
            ("random bytes, manifest re-hashed", random_rehash),
            ("one byte flipped, manifest re-hashed", flip_rehash),
            ("a symlink to /etc/hostname", link_outside),
            ("a symlink to a copy outside", link_copy),
            ("weights moved to external data, re-hashed", external),
            ("replaced by a directory", directory),
        ]:
            yield f"{name}: {kind}", fn


def _manifest_edits(manifest_json: dict[str, Any]) -> Iterator[tuple[str, Callable[[Path], None]]]:
    def edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
        def apply(art: Path) -> None:
            data = json.loads((art / MANIFEST_NAME).read_text())
            change(data)
            (art / MANIFEST_NAME).write_text(json.dumps(data))

        return apply

    def raw(text: str) -> Callable[[Path], None]:
        def apply(art: Path) -> None:
            (art / MANIFEST_NAME).write_text(text)

        return apply

    text = json.dumps(manifest_json)
    for kind, content in [
        ("empty", ""),
        ("truncated", text[: len(text) // 2]),
        ("a JSON list", "[]"),
        ("JSON null", "null"),
        ("not JSON", "manifest"),
        ("NaN literals", text.replace("0.", "NaN", 1)),
        ("nested 100,000 deep", "[" * 100000 + "]" * 100000),
    ]:
        yield f"manifest.json {kind}", raw(content)
    for key in sorted(manifest_json):
        for kind, value in [
            ("deleted", ...),
            ("null", None),
            ("a string", "x"),
            ("a list", []),
            ("a huge integer", 10**40),
        ]:

            def change(data: dict[str, Any], k: str = key, v: Any = value) -> None:
                if v is ...:
                    del data[k]
                else:
                    data[k] = v

            yield f"manifest key {key!r} {kind}", edit(change)
    pre = manifest_json["preprocessing"]
    for kind, field, value in [
        ("std 0", "std", [0.0] * len(pre["std"])),
        ("std NaN", "std", [None]),
        ("std 1e-300", "std", [1e-300] * len(pre["std"])),
        ("mean 1e300", "mean", [1e300] * len(pre["mean"])),
        ("input size negative", "input_size", [-1, 28, 28]),
        ("input size 10^9", "input_size", [1, 10**9, 10**9]),
        ("input size of two numbers", "input_size", [28, 28]),
        ("layout NHWC", "layout", "NHWC"),
    ]:

        def change(data: dict[str, Any], f: str = field, v: Any = value) -> None:
            data["preprocessing"][f] = v

        yield f"preprocessing {kind}", edit(change)

    def traversal(target: str) -> Callable[[dict[str, Any]], None]:
        def change(data: dict[str, Any]) -> None:
            data["graphs"][0]["file"] = target

        return change

    for target in ["../../etc/hostname", "/etc/hostname", "graphs/../../x.onnx", "", "."]:
        yield f"graph file path {target!r}", edit(traversal(target))

    def components(change_one: Callable[[dict[str, Any]], None], kind: str) -> Iterator[Any]:
        def change(data: dict[str, Any]) -> None:
            change_one(data["components"][0])

        yield f"component 0 {kind}", edit(change)

    yield from components(lambda c: c.__setitem__("flops", -5), "with negative FLOPs")
    yield from components(lambda c: c.__setitem__("flops", 2**70), "with 2^70 FLOPs")
    yield from components(lambda c: c.__setitem__("index", 99), "with index 99")
    yield (
        "class names one short",
        edit(lambda d: d.__setitem__("class_names", d["class_names"][:-1])),
    )
    yield "num_classes 10^7", edit(lambda d: d.__setitem__("num_classes", 10**7))
    yield "a future schema version", edit(lambda d: d.__setitem__("schema_version", 999))
    yield "graphs listed twice", edit(lambda d: d.__setitem__("graphs", d["graphs"] * 2))
    yield "a block with no variants", edit(lambda d: d["blocks"][0].__setitem__("variants", []))


def artifact_cases(artifact: Path, scratch: Path) -> Iterator[tuple[str, CaseFn]]:
    """Each corrupted copy is loaded and asked the same questions as the original, with
    both dispatches (the switch graph, and graph by graph), so every file is used."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from budget_edge.runtime.signing import sign_artifact

    rt = BudgetRuntime.load(artifact, backend="onnxruntime", threads=1)
    c, h, w = rt.manifest.preprocessing.input_size
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (4, h, w, c), dtype=np.uint8)
    k = rt.num_components
    mixed = (rng.random((4, k)) < 0.5).astype(np.uint8)
    calls = [
        {"budget": 0.3},
        {"budget": 1.0},
        {"mask": [1] * k},
        {"mask": [0] * k},
        {"mask": mixed},
    ]
    references = [rt.infer(pixels, **call).logits for call in calls]
    rt.close()
    manifest = Manifest.load(artifact)
    manifest_json = json.loads((artifact / MANIFEST_NAME).read_text())
    counter = iter(range(10**9))
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = scratch / "owner.pem", scratch / "owner.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    def case(
        corrupt: Callable[[Path], None], signed: bool = False, rehashed: bool = False
    ) -> CaseFn:
        def fn() -> tuple[str, str]:
            art = scratch / f"art{next(counter)}"
            shutil.copytree(artifact, art)
            if signed:
                sign_artifact(art, private)
            corrupt(art)
            trusted = [str(public)] if signed else None
            for dispatch in ("auto", "chain"):
                with BudgetRuntime.load(
                    art, backend="onnxruntime", threads=1, dispatch=dispatch, trusted_keys=trusted
                ) as loaded:
                    for call, want in zip(calls, references, strict=True):
                        got = loaded.infer(pixels, **call).logits
                        if got.shape != want.shape or not np.allclose(got, want, atol=1e-4):
                            what = ", ".join(
                                f"{key} {value if key == 'budget' else '...'}"
                                for key, value in call.items()
                            )
                            # Without a signature the manifest is the only reference: a
                            # rewriter of it is trusted by design (docs/security.md).
                            outcome = "unsigned" if rehashed and not signed else "silent"
                            return outcome, (
                                f"loaded, and the call with {what} answers "
                                f"differently ({dispatch} dispatch)"
                            )
            shutil.rmtree(art, ignore_errors=True)
            return "answered", "loaded; every answer equals the original's"

        return fn

    for kind, corrupt in _corruptions(manifest):
        rehashed = "re-hashed" in kind
        yield kind, case(corrupt, rehashed=rehashed)
        if rehashed:  # what only a signature can catch
            yield f"{kind}, artifact signed", case(corrupt, signed=True)
    for kind, corrupt in _manifest_edits(manifest_json):
        yield kind, case(corrupt)


# ---- checkpoints -------------------------------------------------------------------


class _Payload:
    """An object whose unpickling runs `command` (what a malicious checkpoint carries)."""

    def __init__(self, how: str, marker: Path) -> None:
        self.how, self.marker = how, marker

    def __reduce__(self) -> Any:
        touch = f"open({str(self.marker)!r}, 'w').write('ran')"
        if self.how == "os.system":
            return (os.system, (f"touch {self.marker}",))
        if self.how == "eval":
            return (eval, (touch,))
        if self.how == "exec":
            return (exec, (touch,))
        if self.how == "subprocess":
            return (subprocess.call, (["touch", str(self.marker)],))
        raise ValueError(f"no pickler-made payload for {self.how}: see getattr_pickle")


def getattr_pickle(marker: Path) -> bytes:
    """Hand-written pickle opcodes: getattr(__import__('os'), 'system')('touch MARKER'), a
    chain no pickler writes from an object and no global named os.system in the file."""
    return (
        b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR"
        b"(S'touch " + str(marker).encode() + b"'\ntR."
    )


def _torch_zip(path: Path, data_pkl: bytes) -> None:
    """A torch.save-style zip whose data.pkl is `data_pkl`."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/version", b"3\n")


def checkpoint_cases(checkpoint: Path, scratch: Path) -> Iterator[tuple[str, CaseFn]]:
    import torch

    from budget_edge.models.checkpoint import load_checkpoint, state_digest

    original = checkpoint.read_bytes()
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    counter = iter(range(10**9))

    def loads(
        write: Callable[[Path], None], marker: Path | None = None, fmt: str = "auto"
    ) -> CaseFn:
        def fn() -> tuple[str, str]:
            path = scratch / f"ckpt{next(counter)}.pt"
            write(path)
            try:
                load_checkpoint(path, format=fmt)
            except BudgetEdgeError as exc:
                if marker is not None and marker.exists():
                    return "silent", "refused, but the payload's code ran"
                return "handled", _one_line(exc)
            if marker is not None and marker.exists():
                return "silent", "the payload's code ran"
            return "silent", "loaded"

        return fn

    for how in ["os.system", "eval", "exec", "subprocess", "getattr chain"]:
        containers = ["plain pickle", "torch.save zip", "inside the state dict"]
        for container in containers[:2] if how == "getattr chain" else containers:
            marker = scratch / f"pwned-{how.replace(' ', '_')}-{container[:5]}"

            def write(
                path: Path, how: str = how, container: str = container, marker: Path = marker
            ) -> None:
                if how == "getattr chain":
                    raw = getattr_pickle(marker)
                    if container == "plain pickle":
                        path.write_bytes(raw)
                    else:  # the raw opcodes as the zip's data.pkl
                        _torch_zip(path, raw)
                    return
                evil = _Payload(how, marker)
                if container == "plain pickle":
                    path.write_bytes(pickle.dumps({"state": evil}))
                elif container == "torch.save zip":
                    torch.save({"backbone": evil}, path)
                else:
                    tampered = dict(payload)
                    tampered["meta"] = {"note": evil}
                    torch.save(tampered, path)

            yield f"malicious pickle ({how}, {container})", loads(write, marker)

    def raw(data: bytes) -> Callable[[Path], None]:
        return lambda path: path.write_bytes(data)

    for share in [0.0, 0.1, 0.5, 0.9, 0.999]:
        yield f"truncated to {share:.1%}", loads(raw(original[: int(len(original) * share)]))
    yield "random bytes", loads(raw(os.urandom(len(original))))
    yield "a JSON file", loads(raw(b'{"backbone": {}}'))
    yield "a zip with a path-traversal entry", loads(_traversal_zip)
    for position in [0.3, 0.6, 0.95]:

        def flip(path: Path, position: float = position) -> None:
            data = bytearray(original)
            data[int(len(data) * position)] ^= 0x01
            path.write_bytes(bytes(data))

        yield f"one byte flipped at {position:.0%}", loads(flip)

    def tamper(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            copy = {
                key: (dict(value) if isinstance(value, dict) else value)
                for key, value in payload.items()
            }
            copy["backbone"] = dict(copy["backbone"])
            copy["backbone"]["state_dict"] = dict(copy["backbone"]["state_dict"])
            copy["backbone"]["config"] = dict(copy["backbone"]["config"])
            change(copy)
            entry = copy.get("backbone")
            if isinstance(entry, dict) and isinstance(entry.get("state_dict"), dict):
                # The attacker recomputes the digest too: the other checks must hold.
                entry["sha256"] = state_digest(entry["state_dict"])
            torch.save(copy, path)

        return write

    first = next(iter(payload["backbone"]["state_dict"]))

    def set_state(value: Any) -> Callable[[dict[str, Any]], None]:
        return lambda d: d["backbone"]["state_dict"].__setitem__(first, value)

    weight = payload["backbone"]["state_dict"][first]
    for kind, change in [
        ("int64 weights", set_state(weight.to(torch.int64))),
        ("NaN weights", set_state(torch.full_like(weight, float("nan")))),
        ("inf weights", set_state(torch.full_like(weight, float("inf")))),
        ("a weight of another shape", set_state(weight[:1])),
        ("a missing weight", lambda d: d["backbone"]["state_dict"].pop(first)),
        (
            "an extra weight",
            lambda d: d["backbone"]["state_dict"].__setitem__("extra.weight", weight),
        ),
        ("num_classes 10^7", lambda d: d["backbone"]["config"].__setitem__("num_classes", 10**7)),
        ("num_classes -1", lambda d: d["backbone"]["config"].__setitem__("num_classes", -1)),
        (
            "an unknown backbone name",
            lambda d: d["backbone"]["config"].__setitem__("name", "resnet9000"),
        ),
        ("a config that is a string", lambda d: d["backbone"].__setitem__("config", "x")),
        ("no backbone", lambda d: d.pop("backbone")),
        ("a future format version", lambda d: d.__setitem__("version", 999)),
        ("another format's name", lambda d: d.__setitem__("format", "other")),
    ]:
        yield kind, loads(tamper(change))
    yield "read as the reference format", loads(raw(original), fmt="budgetnet")
    yield "an unknown --format", loads(raw(original), fmt="keras")

    def directory(path: Path) -> None:
        path.mkdir()

    yield "a directory", loads(directory)

    # Files that are not checkpoints and must be refused before they are read.
    def fifo(path: Path) -> None:
        os.mkfifo(path)

    def huge_sparse(path: Path) -> None:
        with open(path, "wb") as f:
            f.truncate(9 << 30)  # 9 GiB of holes: nothing on disk, everything to read

    def zip_bomb(path: Path) -> None:
        import zipfile

        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("archive/data.pkl", b"\0" * (256 << 20))
            archive.writestr("archive/version", b"3\n")

    yield "a FIFO (would block forever)", loads(fifo)
    yield "a 9 GiB sparse file", loads(huge_sparse)
    yield "a zip whose member inflates to 256 MiB", loads(zip_bomb)

    def device() -> tuple[str, str]:
        load_checkpoint("/dev/zero")
        return "silent", "loaded"

    yield "/dev/zero", device


def _traversal_zip(path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("../../evil/data.pkl", b"\x80\x02}q\x00.")


# ---- the server --------------------------------------------------------------------


def server_cases(artifact: Path) -> Iterator[tuple[str, CaseFn]]:
    from budget_edge.runtime.budget import FixedBudget
    from budget_edge.serve.admission import Admission
    from budget_edge.serve.app import create_app
    from budget_edge.serve.model import ServedModel
    from budget_edge.serve.server import address_of, bind_tcp, make_server, run

    runtime = BudgetRuntime.load(artifact, backend="onnxruntime", threads=1)
    model = ServedModel(runtime, FixedBudget(0.5))
    admission = Admission()
    server = make_server(
        create_app(model, 16 << 20, admission=admission),
        log_level="critical",
        admission=admission,
        head_timeout_s=2.0,
    )
    sock = bind_tcp("127.0.0.1", 0)
    threading.Thread(target=run, args=(server, sock), daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    host, port = address_of(sock).removeprefix("http://").rsplit(":", 1)
    name = model.name
    c, h, w = runtime.manifest.preprocessing.input_size
    k = runtime.num_components
    good_pixels = np.random.default_rng(2).integers(0, 256, (2, h, w, c), dtype=np.uint8)
    want = runtime.infer(good_pixels, budget=0.5).logits
    image = {
        "name": "IMAGE",
        "datatype": "UINT8",
        "shape": [2, h, w, c],
        "data": good_pixels.ravel().tolist(),
    }

    def send(
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            answer = conn.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            conn.close()

    def still_serving() -> str | None:
        status, _, body = send(
            "POST", f"/v2/models/{name}/infer", json.dumps({"inputs": [image]}).encode()
        )
        if status != 200:
            return f"a good request then got {status}"
        logits = next(o for o in json.loads(body)["outputs"] if o["name"] == "LOGITS")
        if not np.allclose(np.asarray(logits["data"]).reshape(want.shape), want, atol=1e-5):
            return "a good request then got a wrong answer"
        return None

    def judge(
        status: int, headers: dict[str, str], body: bytes, expect_ok: bool
    ) -> tuple[str, str]:
        broken = still_serving()
        if broken:
            return "silent", broken
        if status == 500:
            return "http500", body[:200].decode(errors="replace")
        if status < 400:
            return ("answered", f"{status}") if expect_ok else ("silent", f"{status} for bad input")
        try:
            message = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            return "traceback", f"{status} without a JSON error: {body[:120]!r}"
        return "handled", f"{status}: {message[:200]}"

    def infer(
        header: Any,
        extra: bytes = b"",
        headers: dict[str, str] | None = None,
        expect_ok: bool = False,
        raw_body: bytes | None = None,
    ) -> CaseFn:
        def fn() -> tuple[str, str]:
            text = raw_body if raw_body is not None else json.dumps(header).encode()
            return judge(
                *send("POST", f"/v2/models/{name}/infer", text + extra, headers), expect_ok
            )

        return fn

    # Bodies that are not a request object at all.
    for kind, body in [
        ("empty", b""),
        ("'{'", b"{"),
        ("a list", b"[]"),
        ("null", b"null"),
        ("a number", b"1"),
        ("a string", b'"x"'),
        ("NaN", b"NaN"),
        ("nested 100,000 deep", b"[" * 100000 + b"]" * 100000),
        ("not UTF-8", b"\xff\xfe{}"),
        ("a BOM then JSON", b"\xef\xbb\xbf{}"),
        ("10 MB of spaces", b" " * 10_000_000),
        ("a huge integer", b'{"inputs": ' + b"9" * 100000 + b"}"),
        ("duplicate keys", b'{"inputs": [], "inputs": 5}'),
    ]:
        yield f"body {kind}", infer(None, raw_body=body)
    # Every field of an input, wrong.
    for field, values in [
        ("name", [None, 5, "", "IMAGES", "x" * 10000]),
        (
            "datatype",
            [
                None,
                5,
                "",
                "UINT9",
                "FP32",
                "BYTES",
                "BF16",
                "FP64",
                "BOOL",
                "INT64",
                "UINT16",
                "FP16",
                "INT8",
            ],
        ),
        (
            "shape",
            [
                None,
                "x",
                [],
                [2],
                [-2, h, w, c],
                [2, h, w, c, 1],
                [2**62, h, w, c],
                [2, 2**40, 2**40, c],
                [2.5, h, w, c],
                [True, h, w, c],
                [0, h, w, c],
            ],
        ),
        (
            "data",
            [
                None,
                "x",
                [],
                [1, 2, 3],
                [[1], [2, 3]],
                [256] * (2 * h * w * c),
                [-1] * (2 * h * w * c),
                [0.5] * (2 * h * w * c),
                ["1"] * (2 * h * w * c),
                [None] * (2 * h * w * c),
            ],
        ),
        (
            "parameters",
            [
                5,
                "x",
                [],
                {"binary_data_size": -1},
                {"binary_data_size": "x"},
                {"binary_data_size": 10**12},
            ],
        ),
    ]:
        for value in values:
            tensor = dict(image)
            tensor[field] = value
            yield f"IMAGE {field} = {json.dumps(value)[:40]}", infer({"inputs": [tensor]})
    # Request parameters.
    for key, values in [
        ("budget", [-1, 2, "x", None, True, 10**400, [0.5], {}, 1e309]),
        ("mode", ["Greedy", 5, None, ""]),
        ("seed", [-1, 2**70, "x", 1.5]),
        ("cap", ["flop", 5]),
        ("policy", ["static", "agnt", 5]),
        ("unknown", [1]),
        ("binary_data_output", ["yes", 1]),
        ("timeout", [-1, "soon", 1.5, 10**30]),
    ]:
        for value in values:
            body = (
                '{"inputs": ['
                + json.dumps(image)
                + '], "parameters": {"'
                + key
                + '": '
                + (
                    str(value)
                    if isinstance(value, int) and not isinstance(value, bool)
                    else json.dumps(value)
                )
                + "}}"
            )
            yield f"parameter {key} = {str(value)[:30]}", infer(None, raw_body=body.encode())
    # Inputs beside IMAGE.
    fp32 = {"name": "INPUT", "datatype": "FP32", "shape": [1, c, h, w]}
    for kind, tensors in [
        ("IMAGE and INPUT", [image, {**fp32, "data": [0.0] * (c * h * w)}]),
        ("no image input", [{"name": "BUDGET", "datatype": "FP32", "shape": [1], "data": [0.5]}]),
        ("INPUT of 3e38", [{**fp32, "data": [3e38] * (c * h * w)}]),
        ("INPUT of -3e38", [{**fp32, "data": [-3e38] * (c * h * w)}]),
        (
            "BUDGET rows != images",
            [image, {"name": "BUDGET", "datatype": "FP32", "shape": [3], "data": [0.5] * 3}],
        ),
        (
            "MASK of 2s",
            [image, {"name": "MASK", "datatype": "BOOL", "shape": [2, k], "data": [2] * (2 * k)}],
        ),
        (
            "MASK too short",
            [
                image,
                {
                    "name": "MASK",
                    "datatype": "BOOL",
                    "shape": [2, k - 1],
                    "data": [True] * (2 * (k - 1)),
                },
            ],
        ),
        ("the same input twice", [image, image]),
    ]:
        yield f"inputs: {kind}", infer({"inputs": tensors})

    # Shapes numpy must never see (issue 25, class 2), in JSON and in binary form, on
    # every input: more axes than numpy allows, dimensions past 2**63, empty shapes
    # whose other dimensions overflow, and data whose count is far from the shape's.
    def binary_tensor(tensor: dict[str, Any], raw: bytes) -> CaseFn:
        head = json.dumps(
            {"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]}
        ).encode()
        return infer(
            None,
            raw_body=head,
            extra=raw,
            headers={"Inference-Header-Content-Length": str(len(head))},
        )

    for input_name, datatype in [
        ("IMAGE", "UINT8"),
        ("INPUT", "FP32"),
        ("BUDGET", "FP32"),
        ("MASK", "BOOL"),
    ]:
        for shape in [
            [1] * 65,
            [1] * 9,
            [0, 2**64 + 5, h, c],
            [2**31, 1, 1, 1],
            [0, 2**40, 2**40, 2**40],
            [3, 2**63 - 1],
        ]:
            tensor = {"name": input_name, "datatype": datatype, "shape": shape}
            shown = f"{len(shape)} axes" if len(shape) > 8 else str(shape)
            beside = [image] if input_name in ("BUDGET", "MASK") else []
            yield (
                f"{input_name} shape {shown} (JSON)",
                infer({"inputs": beside + [{**tensor, "data": []}]}),
            )
            if not beside:
                yield f"{input_name} shape {shown} (binary)", binary_tensor(tensor, b"")
    yield (
        "IMAGE data of 10**6 values for 2 images",
        infer({"inputs": [{**image, "data": [0] * 10**6}]}),
    )
    # JSON booleans where numbers belong, and numbers where booleans belong (class 11).
    pixels_list = image["data"]
    for kind, tensors in [
        ("IMAGE with one pixel `false`", [{**image, "data": [False] + pixels_list[1:]}]),
        ("IMAGE all `true`", [{**image, "data": [True] * len(pixels_list)}]),
        ("INPUT FP32 with `true`", [{**fp32, "data": [True] + [0.0] * (c * h * w - 1)}]),
        (
            "BUDGET [true, false]",
            [image, {"name": "BUDGET", "datatype": "FP32", "shape": [2], "data": [True, False]}],
        ),
        (
            "MASK of 1s and `true`",
            [
                image,
                {
                    "name": "MASK",
                    "datatype": "BOOL",
                    "shape": [2, k],
                    "data": [1] + [True] * (2 * k - 1),
                },
            ],
        ),
    ]:
        yield f"inputs: {kind}", infer({"inputs": tensors})

    # Outputs.
    for kind, outputs in [
        ("unknown", [{"name": "SCORES"}]),
        ("twice", [{"name": "CLASS"}, {"name": "CLASS"}]),
        ("classification", [{"name": "LOGITS", "parameters": {"classification": 3}}]),
        ("shared memory", [{"name": "LOGITS", "parameters": {"shared_memory_region": "r"}}]),
        ("not a list", {"name": "LOGITS"}),
        ("no name", [{}]),
    ]:
        yield f"outputs {kind}", infer({"inputs": [image], "outputs": outputs})
    yield (
        "PROBS asked with a MASK",
        infer(
            {
                "inputs": [
                    image,
                    {"name": "MASK", "datatype": "BOOL", "shape": [2, k], "data": [True] * (2 * k)},
                ],
                "outputs": [{"name": "PROBS"}],
            }
        ),
    )
    # Binary bodies and their header length.
    raw = good_pixels.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    **{kk: v for kk, v in image.items() if kk != "data"},
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    for kind, length in [
        ("a superscript digit", "\u00b2"),
        ("5,001 digits", "9" * 5001),
        ("negative", "-1"),
        ("zero", "0"),
        ("past the body", str(10**9)),
        ("a float", "1e3"),
        ("empty", ""),
        ("spaces", " "),
        ("one short", str(len(header) - 1)),
    ]:
        yield (
            f"header length {kind}",
            infer(
                None,
                raw_body=header,
                extra=raw,
                headers={
                    "Inference-Header-Content-Length": length.encode("utf-8").decode("latin-1")
                },
            ),
        )
    for kind, extra in [
        ("missing", b""),
        ("one byte short", raw[:-1]),
        ("one byte long", raw + b"\0"),
    ]:
        yield (
            f"binary data {kind}",
            infer(
                None,
                raw_body=header,
                extra=extra,
                headers={"Inference-Header-Content-Length": str(len(header))},
            ),
        )
    # Sizes.
    for n, kind in [
        (65, "one image above --max-batch"),
        (4096, "a JSON batch of 4096"),
        (21399, "a binary batch of 21,399 (within 16 MiB)"),
    ]:
        pixels = np.zeros((n, h, w, c), np.uint8)
        if n == 21399:
            head = json.dumps(
                {
                    "inputs": [
                        {
                            "name": "IMAGE",
                            "datatype": "UINT8",
                            "shape": [n, h, w, c],
                            "parameters": {"binary_data_size": pixels.nbytes},
                        }
                    ]
                }
            ).encode()
            yield (
                kind,
                infer(
                    None,
                    raw_body=head,
                    extra=pixels.tobytes(),
                    headers={"Inference-Header-Content-Length": str(len(head))},
                ),
            )
        else:
            yield (
                kind,
                infer(
                    {"inputs": [{**image, "shape": [n, h, w, c], "data": pixels.ravel().tolist()}]}
                ),
            )
    yield "Content-Encoding gzip", infer({"inputs": [image]}, headers={"Content-Encoding": "gzip"})
    yield (
        "64 images (the cap itself)",
        infer(
            {"inputs": [{**image, "shape": [64, h, w, c], "data": [0] * (64 * h * w * c)}]},
            expect_ok=True,
        ),
    )

    # HTTP itself.
    def route(
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        expect_ok: bool = False,
    ) -> CaseFn:
        return lambda: judge(*send(method, path, body, headers), expect_ok)

    for method, path in [
        ("GET", f"/v2/models/{name}/infer"),
        ("DELETE", "/v2"),
        ("PUT", f"/v2/models/{name}"),
        ("POST", "/v2/health/live"),
        ("GET", "/v2/models/other"),
        ("GET", f"/v2/models/{name}/versions/2"),
        ("GET", "/"),
        ("GET", "/v2/models/%00"),
        ("GET", "/" + "a" * 8000),
        ("POST", "/v2/repository/models/x/load"),
        ("GET", "/v2/models/../../etc/passwd"),
    ]:
        yield f"{method} {path[:40]}", route(method, path)
    yield "GET /metrics", route("GET", "/metrics", expect_ok=True)
    yield "POST /v2/repository/index", route("POST", "/v2/repository/index", b"{}", expect_ok=True)

    def declared(length: str) -> CaseFn:
        def fn() -> tuple[str, str]:
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(
                    f"POST /v2/models/{name}/infer HTTP/1.1\r\nHost: x\r\n"
                    f"Content-Length: {length}\r\n\r\n".encode()
                )
                s.settimeout(10)
                reply = http.client.HTTPResponse(s)
                try:
                    reply.begin()
                    status, body = reply.status, reply.read()
                except (http.client.HTTPException, OSError):
                    status, body = 0, b""  # closed without an answer
            if status == 0:
                return (
                    ("handled", "connection closed")
                    if not still_serving()
                    else ("silent", "closed, then the server did not serve")
                )
            return judge(status, {}, body, False)

        return fn

    for length in ["1000000000000", "-5", "abc", "1" * 400]:
        yield f"Content-Length {length[:20]}", declared(length)

    def slow(kind: str) -> CaseFn:
        def fn() -> tuple[str, str]:
            start = time.monotonic()
            with socket.create_connection((host, int(port)), timeout=10) as s:
                try:
                    if kind == "slow header":
                        for byte in b"POST /v2 HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100:
                            s.sendall(bytes([byte]))
                            time.sleep(0.1)
                    elif kind == "stalled body":
                        s.sendall(
                            f"POST /v2/models/{name}/infer HTTP/1.1\r\nHost: x\r\n"
                            "Content-Length: 100\r\n\r\n{".encode()
                        )
                        s.settimeout(40)
                        answer = s.recv(4096)
                        if b" 408 " in answer.split(b"\r\n")[0]:
                            return "handled", f"408 after {time.monotonic() - start:.1f} s"
                        return "silent", f"{answer[:60]!r}"
                    else:  # idle
                        s.settimeout(15)
                        if s.recv(1) == b"":
                            return "handled", f"closed after {time.monotonic() - start:.1f} s"
                except OSError:
                    return "handled", f"closed after {time.monotonic() - start:.1f} s"
            return "hang", "the connection stayed open"

        return fn

    for kind in ["slow header", "stalled body", "idle connection"]:
        yield kind, slow(kind)

    def many_idle() -> tuple[str, str]:
        sockets = [socket.create_connection((host, int(port))) for _ in range(300)]
        try:
            time.sleep(3)  # past the 2 s head timeout of this server
            broken = still_serving()
        finally:
            for s in sockets:
                s.close()
        return (
            ("handled", "idle sockets closed; good requests served")
            if broken is None
            else ("silent", broken)
        )

    yield "300 idle connections, then a good request", many_idle

    def raw_exchange(raw: bytes) -> tuple[list[bytes], bool]:
        """The status lines the server wrote for `raw`, and whether it then closed the
        connection (within 5 s)."""
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(raw)
            s.settimeout(5)
            received, closed = b"", False
            try:
                while chunk := s.recv(65536):
                    received += chunk
                closed = True
            except OSError:
                pass
        lines = [line for line in received.split(b"\r\n") if line.startswith(b"HTTP/1.")]
        return lines, closed

    hidden = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"

    def framing(raw: bytes, refuse: bytes) -> CaseFn:
        """A head that must get one `refuse` status, then the connection closed: a second
        answer means a request smuggled in the body was served."""

        def fn() -> tuple[str, str]:
            statuses, closed = raw_exchange(raw)
            broken = still_serving()
            if broken:
                return "silent", broken
            if len(statuses) == 1 and refuse in statuses[0] and closed:
                return "handled", f"{statuses[0].decode()}, then closed"
            return "silent", f"answered {[st.decode() for st in statuses]}, closed: {closed}"

        return fn

    smuggled = b"0\r\n\r\n" + hidden
    for kind, raw, refuse in [
        (
            "Content-Length and Transfer-Encoding: chunked",
            f"POST /v2/models/{name}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: "
            f"{len(smuggled)}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + smuggled,
            b" 400 ",
        ),
        (
            "Transfer-Encoding first, Content-Length: 0",
            b"POST /v2/repository/index HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
            b"\r\nContent-Length: 0\r\n\r\n" + smuggled,
            b" 400 ",
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            b"POST /v2/repository/index HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled,
            b" 400 ",
        ),
        (
            "Transfer-Encoding: chunked, identity",
            b"POST /v2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
            + smuggled,
            b" 501 ",
        ),
        (
            "two different Content-Lengths",
            b"POST /v2/repository/index HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
            b"Content-Length: 45\r\n\r\n" + hidden,
            b" 400 ",
        ),
        ("HTTP/1.2", b"GET /v2/health/live HTTP/1.2\r\nHost: x\r\n\r\n", b" 505 "),
        ("HTTP/0.9", b"GET /v2/health/live HTTP/0.9\r\n\r\n", b" 505 "),
        (
            "HTTP/3.0 with a body",
            b"POST /v2/repository/index HTTP/3.0\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
            b" 505 ",
        ),
    ]:
        yield f"framing: {kind}", framing(raw, refuse)

    def health_beside(count: int, sent: bytes) -> CaseFn:
        """`count` sockets hold connections (idle, or part of a head sent); a health check
        and an inference must still be answered before the 2 s head timeout frees them."""

        def fn() -> tuple[str, str]:
            sockets = []
            try:
                for _ in range(count):
                    s = socket.create_connection((host, int(port)), timeout=10)
                    s.sendall(sent)
                    sockets.append(s)
                try:
                    status, _, _ = send("GET", "/v2/health/live", timeout=1.5)
                    broken = None if status == 200 else f"health got {status}"
                    if broken is None:
                        answer = send(
                            "POST",
                            f"/v2/models/{name}/infer",
                            json.dumps({"inputs": [image]}).encode(),
                            timeout=1.5,
                        )
                        broken = None if answer[0] == 200 else f"inference got {answer[0]}"
                except OSError as exc:
                    broken = f"no answer while the sockets were open ({exc})"
            finally:
                for s in sockets:
                    s.close()
            return (
                ("handled", "idle connections made room; health and inference answered")
                if broken is None
                else ("silent", broken)
            )

        return fn

    yield "130 idle connections, then health at once", health_beside(130, b"")
    yield (
        "200 half-sent heads, then health at once",
        health_beside(200, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: aa"),
    )


# ---- redeploys and signals under a live server ---------------------------------------


def _serve_in_thread(directory: Path) -> tuple[str, int, Any]:
    """A server of `directory` in this process: (host, port, its ServedModel)."""
    from budget_edge.runtime.budget import FixedBudget
    from budget_edge.serve.admission import Admission
    from budget_edge.serve.app import create_app
    from budget_edge.serve.model import ServedModel
    from budget_edge.serve.server import address_of, bind_tcp, make_server, run

    model = ServedModel(
        BudgetRuntime.load(directory, backend="onnxruntime", threads=1), FixedBudget(0.5)
    )
    admission = Admission()
    server = make_server(
        create_app(model, 16 << 20, admission=admission), log_level="critical", admission=admission
    )
    sock = bind_tcp("127.0.0.1", 0)
    threading.Thread(target=run, args=(server, sock), daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    host, port = address_of(sock).removeprefix("http://").rsplit(":", 1)
    return host, int(port), model


def _post(host: str, port: int, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(body).encode())
        answer = conn.getresponse()
        raw = answer.read()
        return answer.status, json.loads(raw) if answer.status == 200 else raw[:200]
    finally:
        conn.close()


def redeploy_cases(artifact: Path, scratch: Path) -> Iterator[tuple[str, CaseFn]]:
    """The artifact directory changed under a live server (class 3): every answer must
    stay the loaded model's, never a 500 because a graph was read on first use."""
    manifest = Manifest.load(artifact)
    c, h, w = manifest.preprocessing.input_size
    k = manifest.num_components
    rng = np.random.default_rng(11)
    pixels = rng.integers(0, 256, (2, h, w, c), dtype=np.uint8)
    masks = [np.ones(k, np.uint8), np.zeros(k, np.uint8)] + [
        (rng.random(k) < 0.5).astype(np.uint8) for _ in range(6)
    ]
    budgets = [0.0, 0.3, 0.7, 1.0]

    def damage_case(number: int, damage: Callable[[Path], Any]) -> CaseFn:
        def fn() -> tuple[str, str]:
            copy = scratch / f"redeploy-{number}"
            shutil.copytree(artifact, copy)
            with BudgetRuntime.load(copy, backend="onnxruntime", threads=1) as reference:
                want = [reference.infer(pixels, budget=b).logits for b in budgets]
                want += [reference.infer(pixels, mask=np.tile(m, (2, 1))).logits for m in masks]
            host, port, model = _serve_in_thread(copy)  # no request has run on it yet
            damage(copy)
            image = {
                "name": "IMAGE",
                "datatype": "UINT8",
                "shape": [2, h, w, c],
                "data": pixels.ravel().tolist(),
            }
            bodies = [{"inputs": [image], "parameters": {"budget": b}} for b in budgets]
            bodies += [
                {
                    "inputs": [
                        image,
                        {
                            "name": "MASK",
                            "datatype": "BOOL",
                            "shape": [2, k],
                            "data": [bool(v) for v in m] * 2,
                        },
                    ]
                }
                for m in masks
            ]
            for body, logits in zip(bodies, want, strict=True):
                status, answer = _post(host, port, f"/v2/models/{model.name}/infer", body)
                if status == 500:
                    return "http500", str(answer)
                if status != 200:
                    return "silent", f"a good request got {status}: {answer}"
                got = next(o for o in answer["outputs"] if o["name"] == "LOGITS")
                if not np.allclose(np.reshape(got["data"], logits.shape), logits, atol=1e-5):
                    return "silent", "the answer is not the loaded model's"
            return "handled", f"{len(bodies)} requests answered by the model loaded before"

        return fn

    def replace_graphs(directory: Path, content: bytes) -> None:
        for graph in directory.rglob("*.onnx"):
            graph.write_bytes(content)

    def swap_graphs(directory: Path) -> None:  # every graph under another's name
        graphs = sorted(directory.rglob("*.onnx"))
        data = [g.read_bytes() for g in graphs]
        for graph, other in zip(graphs, data[1:] + data[:1], strict=True):
            graph.write_bytes(other)

    def to_symlink(directory: Path) -> None:
        shutil.rmtree(directory)
        directory.symlink_to("/nonexistent")

    damages: list[tuple[str, Callable[[Path], Any]]] = [
        ("deleted", shutil.rmtree),
        ("graphs emptied in place", lambda d: replace_graphs(d, b"")),
        ("graphs half-written in place", lambda d: replace_graphs(d, b"\x08\x07" * 50)),
        ("graphs swapped with each other", swap_graphs),
        ("replaced by a dangling symlink", to_symlink),
        ("manifest.json deleted", lambda d: (d / MANIFEST_NAME).unlink()),
    ]
    for number, (kind, damage) in enumerate(damages):
        yield f"artifact directory {kind} under a live server", damage_case(number, damage)


def signal_cases(artifact: Path, scratch: Path) -> Iterator[tuple[str, CaseFn]]:
    """Signals sent to `budget-edge serve` under load (class 6): every request in flight
    must be answered and the server must keep serving (SIGTERM is tested elsewhere)."""
    broken = scratch / "broken-artifact"
    shutil.copytree(artifact, broken)
    next(broken.rglob("*.onnx")).write_bytes(b"not a graph")

    def under_load(
        number: int, signals: list[signal.Signals], switch_to: Path | None, expect: str | None
    ) -> CaseFn:
        def fn() -> tuple[str, str]:
            link = scratch / f"serving-{number}"
            link.symlink_to(artifact)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "budget_edge.cli",
                    "serve",
                    str(link),
                    "--port",
                    "0",
                    "--model-name",
                    "m",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "BUDGET_EDGE_TOKEN": ""},
            )
            lines: list[str] = []
            assert proc.stderr is not None
            threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True).start()

            def seen(text: str) -> bool:
                deadline = time.monotonic() + 40
                while time.monotonic() < deadline and proc.poll() is None:
                    if any(text in line for line in lines):
                        return True
                    time.sleep(0.05)
                return any(text in line for line in lines)

            try:
                if not seen("SIGHUP reloads"):
                    return "hang", f"the server did not start: {''.join(lines)[-200:]}"
                url = next(line for line in lines if "serving model" in line).split(" on ")[1]
                host, port = url.split()[0].removeprefix("http://").rsplit(":", 1)
                manifest = Manifest.load(artifact)
                c, h, w = manifest.preprocessing.input_size
                body = {
                    "inputs": [
                        {
                            "name": "IMAGE",
                            "datatype": "UINT8",
                            "shape": [1, h, w, c],
                            "data": [0] * (h * w * c),
                        }
                    ],
                    "parameters": {"budget": 0.5},
                }
                stop = threading.Event()
                statuses: list[object] = []

                def client() -> None:
                    while not stop.is_set():
                        try:
                            statuses.append(_post(host, int(port), "/v2/models/m/infer", body)[0])
                        except OSError as exc:
                            statuses.append(f"{type(exc).__name__}")
                            return

                clients = [threading.Thread(target=client) for _ in range(8)]
                for thread in clients:
                    thread.start()
                time.sleep(0.5)
                if switch_to is not None:
                    fresh = scratch / f"serving-{number}.new"
                    fresh.symlink_to(switch_to)
                    os.replace(fresh, link)
                for sig in signals:
                    proc.send_signal(sig)
                    time.sleep(0.05)
                logged = seen(expect) if expect else True
                time.sleep(0.5)
                stop.set()
                for thread in clients:
                    thread.join(timeout=30)
                alive = proc.poll() is None
                lost = [st for st in statuses if st != 200]
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if not alive:
                return "silent", f"the server died ({proc.returncode}); {len(lost)} answers lost"
            if lost or not statuses:
                return "silent", f"{len(lost)} of {len(statuses)} requests lost: {lost[:3]}"
            if not logged:
                return "silent", f"no log line {expect!r}"
            return "handled", f"{len(statuses)} requests answered, the server still serving"

        return fn

    hup, usr1, usr2 = signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2
    for number, (kind, signals, switch_to, expect) in enumerate(
        [
            ("SIGHUP", [hup], None, "reloaded: now serving"),
            ("SIGUSR1", [usr1], None, "SIGUSR1 ignored"),
            ("SIGUSR2", [usr2], None, "SIGUSR2 ignored"),
            ("five SIGHUPs at once", [hup] * 5, None, "reloaded: now serving"),
            (
                "SIGHUP after the symlink moved to a corrupt artifact",
                [hup],
                broken,
                "still serving the model loaded before",
            ),
            (
                "SIGHUP after the symlink moved to a missing folder",
                [hup],
                scratch / "nothing-here",
                "still serving the model loaded before",
            ),
            (
                "SIGUSR1, SIGHUP and SIGUSR2 together",
                [usr1, hup, usr2],
                None,
                "reloaded: now serving",
            ),
        ]
    ):
        yield f"{kind} under load", under_load(number, signals, switch_to, expect)


# ---- the CLI -----------------------------------------------------------------------


def cli_cases(artifact: Path, checkpoint: Path, scratch: Path) -> Iterator[tuple[str, CaseFn]]:
    exe = [sys.executable, "-m", "budget_edge.cli"]
    existing = scratch / "existing.json"
    existing.write_text("{}")
    newline_token = scratch / "token-with-newline"
    newline_token.write_text("first-half-of-the-token\nsecond-half-of-the-token\n")
    space_token = scratch / "token-with-space"
    space_token.write_text("a token with spaces in it\n")
    huge_token = scratch / "huge-token"
    huge_token.write_text("x" * 100_000)
    fifo = scratch / "token-fifo"
    os.mkfifo(fifo)
    a, ck = str(artifact), str(checkpoint)
    cases = [
        ["bench", a, "--batch", "10000000"],
        ["bench", a, "--seed", "-1"],
        ["bench", a, "--budgets", "0:1:1e-9"],
        ["bench", a, "--budgets", "x"],
        ["bench", a, "--budgets", "1.5"],
        ["bench", a, "--budgets", "nan"],
        ["bench", "/nonexistent"],
        ["bench", "/etc/hostname"],
        ["bench", a, "--batch", "0"],
        ["bench", a, "--iterations", "-3"],
        ["bench", a, "--data", "nosuchdata"],
        ["bench", a, "--precision", "int4"],
        ["bench", a, "--json", "/nonexistent/dir/x.json"],
        ["bench", a, "--backend", "cuda"],
        ["bench", a, "--threads", "0"],
        ["evaluate", ck, "--out", str(existing)],
        ["evaluate", ck, "--val-size", str(10**9)],
        ["evaluate", "/nonexistent.pt"],
        ["evaluate", ck, "--budgets", "-1"],
        ["evaluate", ck, "--data", "cifar10:/nonexistent"],
        ["evaluate", str(existing)],
        ["pretrain", "--out", str(existing)],
        ["pretrain", "--arch", "resnet9000"],
        ["pretrain", "--epochs", "-1"],
        ["pretrain", "--data", "nosuch"],
        ["pretrain", "--lr", "nan"],
        ["pretrain", "--batch-size", "0"],
        ["train", "/nonexistent.pt"],
        ["train", ck, "--out", str(existing)],
        ["train", str(existing)],
        ["train", ck, "--omega", "nan"],
        ["export", "/nonexistent.pt", "--out", str(scratch / "o1")],
        ["export", ck, "--out", str(existing)],
        ["export", ck, "--out", "/etc"],
        ["export", ck, "--out", str(scratch / "o2"), "--opset", "3"],
        ["export", ck, "--out", str(scratch / "o3"), "--fuse-top", "-1"],
        ["export", str(existing), "--out", str(scratch / "o4")],
        ["quantize", a, "--precision", "int4"],
        ["quantize", "/nonexistent"],
        ["quantize", a, "--precision", "int8", "--calib-data", "nosuch"],
        ["quantize", a, "--precision", "int8", "--budgets", "2"],
        ["sign", a, "--key", "/nonexistent.pem"],
        ["sign", "/nonexistent", "--key", ck],
        ["sign", a, "--key", str(existing)],
        ["build-engines", a],
        ["build-engines", "/nonexistent"],
        ["serve", a, "--host", "0.0.0.0"],
        ["serve", a, "--tls-cert", str(existing)],
        ["serve", a, "--budget", "fixed:2"],
        ["serve", a, "--budget", "latency:-5"],
        ["serve", a, "--budget", "battery:/nonexistent"],
        ["serve", a, "--budget", "magic"],
        ["serve", a, "--port", "70000"],
        ["serve", a, "--max-batch", "0"],
        ["serve", a, "--max-queue", "0"],
        ["serve", a, "--request-timeout", "0"],
        ["serve", a, "--token-file", "/nonexistent"],
        ["serve", "/nonexistent"],
        ["serve", a, "--precision", "fp16"],
        ["serve", a, "--trusted-key", str(existing)],
        ["serve", a, "--uds", "/nonexistent/dir/sock"],
        ["serve", a, "--max-body-mb", "-1"],
        ["serve", a, "--max-body-mb", "nan"],
        ["serve", a, "--max-body-mb", "inf"],
        ["serve", a, "--max-body-mb", "1e-9"],
        ["serve", a, "--max-body-mb", "1e300"],
        ["serve", a, "--request-timeout", "nan"],
        ["serve", a, "--request-timeout", "inf"],
        ["serve", a, "--threads", "1000000"],
        ["serve", a, "--threads", "0"],
        ["serve", a, "--max-queue", str(2**70)],
        ["serve", a, "--max-batch", str(10**9)],
        ["serve", a, "--port", "-1"],
        ["serve", a, "--model-name", "a/b"],
        ["serve", a, "--model-name", "../../etc"],
        ["serve", a, "--model-name", ""],
        ["serve", a, "--model-name", "x" * 65],
        ["serve", a, "--model-name", "m?x=1"],
        ["serve", a, "--token-file", str(newline_token)],
        ["serve", a, "--token-file", str(space_token)],
        ["serve", a, "--token-file", "/dev/zero"],
        ["serve", a, "--token-file", str(fifo)],
        ["serve", a, "--token-file", str(huge_token)],
        ["demo", "--preset", "nosuch"],
        ["nosuchcommand"],
        ["bench"],
        ["export", ck],
        # Issue 25's second sweep, own cases: numbers no run can use, work refused late.
        ["pretrain", "--out", str(scratch / "p1"), "--lr", "inf"],
        ["pretrain", "--out", str(scratch / "p2"), "--seed", str(2**70)],
        ["pretrain", "--out", str(scratch / "p3"), "--momentum", "-inf"],
        ["pretrain", "--out", str(scratch / "p4"), "--warmup-epochs", "nan"],
        ["pretrain", "--out", str(scratch / "p5"), "--limit-train", str(10**12)],
        ["train", ck, "--gamma", "inf"],
        ["train", ck, "--value-coef", "nan"],
        ["train", ck, "--prior-sharpness", "0"],
        ["train", ck, "--budget-epochs", "nan"],
        ["train", ck, "--beta", "-1"],
        ["train", ck, "--entropy-coef", "-inf"],
        ["train", ck, "--seed", "-5"],
        ["train", ck, "--alpha", "nan"],
        ["allocate", ck, "--lr", "nan", "--out", str(scratch / "a1.pt")],
        ["allocate", ck, "--accuracy-slack", "inf", "--out", str(scratch / "a2.pt")],
        ["export", ck, "--out", str(scratch / "o5"), "--opset", "99"],
        ["export", ck, "--out", str(scratch / "o6"), "--calib-images", str(10**9)],
        ["export", ck, "--out", str(scratch / "o7"), "--static-masks", "random"],
        ["bench", a, "--csv", "/proc/version"],
        ["bench", a, "--json", "/dev/full"],
        ["bench", a, "--plot", "/proc/self/status"],
        ["bench", a, "--iterations", "0"],
        ["bench", a, "--budgets", "0:inf:1"],
        ["bench", a, "--batch", "1,1e3"],
        [
            "quantize",
            a,
            "--precision",
            "int8",
            "--calib-data",
            "fashion-mnist",
            "--calib-images",
            str(10**9),
        ],
        ["evaluate", ck, "--budgets", "0:1:1e-12", "--out", str(scratch / "e1")],
        ["sign", a, "--key", "/dev/zero"],
        ["sign", a, "--key", str(fifo)],
    ]

    def run_cli(args: list[str]) -> CaseFn:
        def fn() -> tuple[str, str]:
            try:
                done = subprocess.run(
                    exe + args,
                    capture_output=True,
                    text=True,
                    timeout=50,
                    env={**os.environ, "BUDGET_EDGE_TOKEN": ""},
                )
            except subprocess.TimeoutExpired:
                return "hang", "still running after 50 s (long work before the check)"
            err = done.stderr.strip()
            if "Traceback" in err:
                return "traceback", err.splitlines()[-1][:200]
            if done.returncode == 2:
                lines = [line for line in err.splitlines() if line.strip()]
                return "handled", lines[-1][:200] if lines else "exit 2"
            return (
                "silent" if done.returncode == 0 else "traceback",
                f"exit {done.returncode}: {err[-200:]}",
            )

        return fn

    for args in cases:
        shown = " ".join(a if len(a) < 30 else "..." + a[-20:] for a in args)
        yield f"budget-edge {shown}", run_cli(args)


# ---- driver ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/hostile"))
    args = parser.parse_args()
    started = time.time()
    scratch = Path(tempfile.mkdtemp(prefix="hostile-"))
    artifact = scratch / "artifact"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "budget_edge.cli",
            "export",
            str(args.checkpoint),
            "--out",
            str(artifact),
        ],
        check=True,
        capture_output=True,
    )
    results: list[Result] = []
    groups: list[tuple[str, Iterator[tuple[str, CaseFn]], int]] = [
        ("runtime API", runtime_cases(artifact), 1),
        ("artifact directory", artifact_cases(artifact, scratch), 1),
        ("checkpoint", checkpoint_cases(args.checkpoint, scratch), 1),
        ("server", server_cases(artifact), 1),
        ("server", redeploy_cases(artifact, scratch), 1),
        ("server", signal_cases(artifact, scratch), 1),
        ("CLI", cli_cases(artifact, args.checkpoint, scratch), 2),
    ]
    for category, cases, workers in groups:
        with ThreadPoolExecutor(workers) as pool:
            done = list(pool.map(lambda case, c=category: run_case(c, *case), cases))
        results += done
        counts = Counter(r.outcome for r in done)
        print(f"{category}: {len(done)} cases, {dict(counts)}", flush=True)
        for r in done:
            if r.outcome not in ("handled", "answered", "unsigned"):
                print(f"  {r.kind}: {r.outcome}: {r.detail}", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    write_results(args.out, results, time.time() - started)


def write_results(out: Path, results: list[Result], seconds: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    report = {
        "machine": machine,
        "seconds": round(seconds, 1),
        "command": "python benchmarks/hostile.py "
        "benchmarks/results/budgetnet-resnet20-light/budgetnet.pt",
        "cases": [asdict(r) for r in results],
    }
    (out / "hostile.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Hostile cases",
        "",
        f"`{report['command']}` ({seconds / 60:.1f} min on {machine.get('cpu')}, "
        f"{machine.get('usable_cores')} cores). Every case and its detail: "
        "`hostile.json`.",
        "",
        "Outcomes: **handled** refused with budget-edge's own one-line error (4xx/503 JSON "
        "over HTTP, exit 2 from the CLI); **answered** valid (if odd) input answered, "
        "checked against a reference; **unsigned** an unsigned artifact whose graph and "
        "manifest hash were both rewritten answers differently (trusted by design: the "
        "same cases on a signed artifact are all handled, see docs/security.md); "
        "**traceback** a foreign exception reached the user; **http500** the server "
        "answered 500 to client input; **silent** a wrong answer or an accepted bad "
        "input without a word (for pickles: their code ran); **hang** no answer in time.",
        "",
        "| category | cases | " + " | ".join(OUTCOMES) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in OUTCOMES) + " |",
    ]
    for category in [*CATEGORIES, "all"]:
        rows = [r for r in results if category in ("all", r.category)]
        counts = Counter(r.outcome for r in rows)
        label = f"**{category}**" if category == "all" else category
        lines.append(
            f"| {label} | {len(rows)} | "
            + " | ".join(str(counts.get(o, 0)) for o in OUTCOMES)
            + " |"
        )
    findings = [r for r in results if r.outcome not in ("handled", "answered", "unsigned")]
    lines += [""]
    if findings:
        lines += ["Findings:", ""] + [
            f"- {r.category} / {r.kind}: **{r.outcome}**: {r.detail}" for r in findings
        ]
    else:
        lines += [
            "No findings: 0 tracebacks, 0 HTTP 500 for client input, 0 silent wrong "
            "answers, 0 hangs."
        ]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

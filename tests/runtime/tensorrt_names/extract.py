"""Extract the names in NVIDIA's TensorRT Python bindings, for test_tensorrt_names.py.

    python tests/runtime/tensorrt_names/extract.py 10.3.0 11.4.0.106

For each version: `pip download --no-deps tensorrt-cu12-bindings==VERSION` (about
1 MB; the module cannot be imported without TensorRT's libraries), then every
printable string of its tensorrt*.so (like `strings -n 2`), reduced to its
trailing identifier, and every identifier of its Python files (`nptype` is
defined in `__init__.py`), deduplicated, written to VERSION.txt.gz here.

The linker merges a string into the tail of a longer one that ends with it, so
a name is in the bindings when some listed name ends with it. Docstrings add
words, so the lists can only over-approximate: a name missing from a list is
certainly missing from that version.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).parent
PRINTABLE = re.compile(rb"[\x20-\x7e]{2,}")
TRAILING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


def names_of(so_bytes: bytes, python: list[str]) -> list[str]:
    names = set()
    for raw in PRINTABLE.findall(so_bytes):
        match = TRAILING_NAME.search(raw.decode("ascii"))
        if match:
            names.add(match.group(0))
    for text in python:
        names.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    return sorted(names)


def extract(version: str) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                tmp,
                f"tensorrt-cu12-bindings=={version}",
            ],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as z:
            (so,) = [n for n in z.namelist() if re.search(r"tensorrt[^/]*\.so$", n)]
            data = z.read(so)
            python = [z.read(n).decode() for n in z.namelist() if n.endswith(".py")]
    out = HERE / f"{version}.txt.gz"
    out.write_bytes(gzip.compress("\n".join(names_of(data, python)).encode() + b"\n", 9, mtime=0))
    return out


if __name__ == "__main__":
    for v in sys.argv[1:] or ["10.3.0", "11.4.0.106"]:
        print(extract(v))

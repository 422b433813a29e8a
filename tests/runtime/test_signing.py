"""Signed artifacts: a device with trusted keys runs only what those keys signed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from budget_edge.errors import ConfigError, ManifestError
from budget_edge.runtime import BudgetRuntime
from budget_edge.runtime.manifest import Manifest, TensorRTSpec, write_manifest
from budget_edge.runtime.signing import SIGNATURE_NAME, sign_artifact

serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
ed25519 = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ed25519")


def _keys(folder: Path, name: str) -> tuple[Path, Path]:
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
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
    return private, public


def test_a_signed_artifact_loads_with_its_key_only(fresh_artifact: Any, tmp_path: Path) -> None:
    root = fresh_artifact.path
    ours, ours_pub = _keys(tmp_path, "ours")
    _, theirs_pub = _keys(tmp_path, "theirs")
    with pytest.raises(ManifestError, match="is not signed"):
        BudgetRuntime.load(root, trusted_keys=[ours_pub])
    BudgetRuntime.load(root).close()  # unsigned is fine while no key is configured
    sign_artifact(root, ours)
    BudgetRuntime.load(root, trusted_keys=[theirs_pub, ours_pub]).close()
    BudgetRuntime.load(root, trusted_keys=tmp_path.glob("*.pub")).close()  # a generator
    with pytest.raises(ManifestError, match="not by a trusted key"):
        BudgetRuntime.load(root, trusted_keys=[theirs_pub])


def test_a_manifest_rewritten_with_new_hashes_is_refused(
    fresh_artifact: Any, tmp_path: Path
) -> None:
    """Re-hashing swapped graphs passes the SHA-256 check; the signature catches it."""
    root = fresh_artifact.path
    key, pub = _keys(tmp_path, "k")
    sign_artifact(root, key)
    edited = (root / "head.onnx").read_bytes() + b"\x32\x01x"  # a doc_string appended
    (root / "head.onnx").write_bytes(edited)
    write_manifest(root, Manifest.load(root))  # the attacker's new hashes
    BudgetRuntime.load(root).close()  # hashes alone: accepted
    with pytest.raises(ManifestError, match="changed after signing"):
        BudgetRuntime.load(root, trusted_keys=[pub])


def test_engines_built_on_the_device_keep_the_signature(
    fresh_artifact: Any, tmp_path: Path
) -> None:
    root = fresh_artifact.path
    key, pub = _keys(tmp_path, "k")
    sign_artifact(root, key)
    (root / "stem.engine").write_bytes(b"built on the device")
    m = Manifest.load(root)
    m.tensorrt = TensorRTSpec("10.3.0", "Orin", "fp16", 8, {"stem": "stem.engine"}, "8.7")
    write_manifest(root, m)
    BudgetRuntime.load(root, backend="onnxruntime", trusted_keys=[pub]).close()


def test_bad_keys_and_signatures_are_one_line(fresh_artifact: Any, tmp_path: Path) -> None:
    root = fresh_artifact.path
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM private key"):
        sign_artifact(root, tmp_path / "junk.pem")
    with pytest.raises(ConfigError, match="the private key: cannot read .*missing.pem: no such"):
        sign_artifact(root, tmp_path / "missing.pem")
    _, pub = _keys(tmp_path, "k")
    (root / SIGNATURE_NAME).write_text("%%% not base64")
    with pytest.raises(ManifestError, match="is not a signature"):
        BudgetRuntime.load(root, trusted_keys=[pub])


def test_keys_and_signatures_are_read_with_a_bound(fresh_artifact: Any, tmp_path: Path) -> None:
    """A device file, a pipe or a huge file given as a key is refused before it is read:
    /dev/zero would read until memory ran out, a FIFO would block the load forever."""
    root = fresh_artifact.path
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "huge.pem").write_bytes(b"-" * (1 << 20))
    for bad in ("/dev/zero", tmp_path / "pipe"):
        with pytest.raises(ConfigError, match="the public key: .* is not a regular file"):
            BudgetRuntime.load(root, trusted_keys=[bad])
    with pytest.raises(ConfigError, match="the public key: .*huge.pem is 1.0 MiB, more than"):
        BudgetRuntime.load(root, trusted_keys=[tmp_path / "huge.pem"])
    _, pub = _keys(tmp_path, "k")
    (root / SIGNATURE_NAME).write_bytes(b"A" * (1 << 20))
    with pytest.raises(ManifestError, match="the signature: .* is 1.0 MiB"):
        BudgetRuntime.load(root, trusted_keys=[pub])


@pytest.mark.parametrize("keys", [[], "", Path("k.pem"), iter(())])
def test_a_key_list_that_came_out_empty_or_is_not_a_list_fails_closed(
    fresh_artifact: Any, keys: Any
) -> None:
    with pytest.raises(ConfigError, match="trusted_keys must be a non-empty list"):
        BudgetRuntime.load(fresh_artifact.path, trusted_keys=keys)


def test_sign_and_serve_commands(
    fresh_artifact: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from budget_edge.cli import main

    root = fresh_artifact.path
    key, pub = _keys(tmp_path, "k")
    main(["sign", str(root), "--key", str(key)])
    assert "signed" in capsys.readouterr().out
    _, other = _keys(tmp_path, "other")
    with pytest.raises(SystemExit) as info:
        main(["serve", str(root), "--port", "0", "--trusted-key", str(other)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "not by a trusted key" in err
    assert err.count("\n") == 1
    assert json.loads((root / "manifest.json").read_text())["files"]  # untouched

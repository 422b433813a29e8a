"""Signed artifacts: device firmware runs only what its own workstation exported.

The workstation signs the manifest with an Ed25519 key (`export --sign KEY`, or
`budget-edge sign DIR --key KEY` after quantize); the signature goes to
`manifest.sig`. Because the manifest holds the SHA-256 of every graph, the
signature covers every graph too. The device loads with `trusted_keys=` (or
`serve --trusted-key`) and refuses an artifact whose signature is missing or
made by another key. The signed bytes leave out what the device adds itself:
the TensorRT engines (`build-engines` runs on the device, which trusts its own
builds), so building engines does not break the signature.

Unsigned artifacts load as before unless a key is configured. Keys are PEM
files (`openssl genpkey -algorithm ed25519 -out key.pem`, `openssl pkey -in
key.pem -pubout -out key.pub`); the `cryptography` package does the maths.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from budget_edge.errors import BackendError, ConfigError, ManifestError
from budget_edge.files import KiB, atomic_write_text, read_user_file
from budget_edge.runtime.manifest import Manifest

SIGNATURE_NAME = "manifest.sig"
# A PEM Ed25519 key is about 120 bytes and a signature 90: anything near these limits
# is another file given by mistake (or /dev/zero), refused before it is read.
KEY_LIMIT = 64 * KiB
SIGNATURE_LIMIT = 4 * KiB
INSTALL_HINT = "pip install 'budget-edge[sign]' (the cryptography package)"


def signed_bytes(manifest: Manifest) -> bytes:
    """The manifest as signed: canonical JSON, without the device's TensorRT engines."""
    data = manifest.to_dict()
    engines: set[str] = set()
    if manifest.tensorrt is not None:
        engines = set(manifest.tensorrt.engines.values()) | {manifest.tensorrt.preprocess or ""}
    data["tensorrt"] = None
    data["files"] = {k: v for k, v in data["files"].items() if k not in engines}
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise BackendError(f"signed artifacts need cryptography: {INSTALL_HINT}") from exc
    return serialization, ed25519


def _read_key(path: str | os.PathLike[str], private: bool) -> Any:
    serialization, ed25519 = _crypto()
    kind = "private" if private else "public"
    data = read_user_file(path, what=f"the {kind} key", limit=KEY_LIMIT)
    try:
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a PEM {kind} key without a password ({exc})") from exc
    wanted = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, wanted):
        raise ConfigError(
            f"{path} is not an Ed25519 key: make one with `openssl genpkey -algorithm ed25519`"
        )
    return key


def sign_artifact(directory: str | os.PathLike[str], private_key: str | os.PathLike[str]) -> Path:
    """Sign DIR/manifest.json with an Ed25519 private key; write DIR/manifest.sig."""
    manifest = Manifest.load(directory)
    key = _read_key(private_key, private=True)
    signature = base64.b64encode(key.sign(signed_bytes(manifest))).decode()
    path = Path(directory) / SIGNATURE_NAME
    atomic_write_text(path, signature + "\n")
    return path


def check_signing_key(private_key: str | os.PathLike[str]) -> None:
    """Read the key now (one clear line if it is missing or wrong), before minutes of work
    that would end with a manifest nobody can sign."""
    _read_key(private_key, private=True)


def after_manifest_change(
    directory: str | os.PathLike[str],
    before: bytes,
    private_key: str | os.PathLike[str] | None,
) -> str | None:
    """What to tell the user after a command rewrote DIR/manifest.json (quantize):
    with `private_key`, sign it again and say so; without one, if the artifact was
    signed and what the signature covers changed (`before`: `signed_bytes` of the
    manifest before the command; TensorRT engines are not covered), the one line
    saying its signature no longer holds."""
    if private_key is not None:
        sign_artifact(directory, private_key)
        return f"signed {directory} again with {private_key}"
    changed = signed_bytes(Manifest.load(directory)) != before
    if changed and (Path(directory) / SIGNATURE_NAME).exists():
        return (
            f"warning: {directory} was signed, and this changed its manifest, so the "
            f"signature no longer holds: sign it again with `budget-edge sign {directory} "
            "--key KEY` (or pass --sign KEY to quantize)"
        )
    return None


def verify_signature(
    directory: str | os.PathLike[str],
    manifest: Manifest,
    trusted_keys: Sequence[str | os.PathLike[str]],
) -> None:
    """Raise ManifestError unless one of the trusted public keys signed this manifest."""
    keys = [_read_key(k, private=False) for k in trusted_keys]
    path = Path(directory) / SIGNATURE_NAME
    if not path.is_file():
        raise ManifestError(
            f"{directory} is not signed ({SIGNATURE_NAME} is missing) and this "
            "device only runs signed artifacts: sign it on the workstation "
            "with `budget-edge sign DIR --key KEY`"
        )
    text = read_user_file(path, what="the signature", limit=SIGNATURE_LIMIT, error=ManifestError)
    try:
        signature = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise ManifestError(f"{path} is not a signature: sign the artifact again") from exc
    payload = signed_bytes(manifest)
    for key in keys:
        try:
            key.verify(signature, payload)
            return
        except Exception:  # noqa: BLE001 (cryptography's InvalidSignature)
            continue
    raise ManifestError(
        f"{directory} is signed, but not by a trusted key, or its manifest "
        "changed after signing (quantize and build-engines change it): sign it again "
        f"with `budget-edge sign {directory} --key KEY`, or copy the signed artifact again"
    )

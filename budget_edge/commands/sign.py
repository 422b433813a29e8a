"""`budget-edge sign`: sign an artifact's manifest for devices that run only trusted ones."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("sign")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--key",
    "key",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Ed25519 private key (PEM), e.g. from `openssl genpkey -algorithm ed25519`.",
)
def command(artifact: Path, key: Path) -> None:
    """Sign ARTIFACT's manifest (and so every graph it hashes) with KEY; devices load it with
    `serve --trusted-key PUB` or BudgetRuntime.load(..., trusted_keys=[PUB]). Sign last:
    `quantize` changes the manifest; `build-engines` on the device does not break it.

    \b
    Example:
      openssl genpkey -algorithm ed25519 -out key.pem
      openssl pkey -in key.pem -pubout -out key.pub
      budget-edge sign artifacts/r20 --key key.pem
    """
    from budget_edge.runtime.signing import sign_artifact

    path = sign_artifact(artifact, key)
    click.echo(f"signed {artifact}: {path}")

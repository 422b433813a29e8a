"""`budget-edge serve`: an artifact dir behind the Open Inference Protocol (v2) over HTTP."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from budget_edge.commands.options import BoundedInt, FiniteFloat

# The ranges of the server's numbers: wide enough for any device, narrow enough that a
# typo (ten extra zeros, nan, a unit slip) is refused at the command line.
MAX_THREADS = 1024
MIN_BODY_MB, MAX_BODY_MB = 0.01, 1024.0  # 10 KiB holds one small JSON image
MAX_BATCH = 4096
MAX_QUEUE = 10_000
MAX_TIMEOUT_S = 3600.0


def check_options(params: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """The rules between serve's options that click cannot state, by their text alone
    (no file read, nothing loaded): the command calls it first, and the docs test calls
    it on every documented `budget-edge serve` line."""
    from budget_edge.errors import ConfigError
    from budget_edge.serve.access import TOKEN_ENV, check_exposure
    from budget_edge.serve.controller import check_budget_spec

    if params["model_name"] is not None:
        from budget_edge.serve.model import check_model_name

        check_model_name(params["model_name"])
    if params["uds"] is None:
        # Whether a token is given; read_token checks the token itself.
        given = params["token_file"] is not None or bool(environ.get(TOKEN_ENV, "").strip())
        check_exposure(params["host"], given, params["insecure"])
    if (params["tls_cert"] is None) != (params["tls_key"] is None):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    check_budget_spec(params["budget_spec"])


@click.command("serve")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0: every interface).",
)
@click.option(
    "--port",
    type=BoundedInt(0, 65535),
    default=8000,
    show_default=True,
    help="TCP port (0: any free port, printed at start).",
)
@click.option(
    "--uds", type=click.Path(dir_okay=False), help="Listen on this Unix socket instead of TCP."
)
@click.option(
    "--budget",
    "budget_spec",
    default="fixed:1.0",
    show_default=True,
    help="Budget of requests that give none: fixed:C, battery:PATH (sysfs capacity "
    "file) or latency:MS[:BENCH.json] (keep the p95 latency of single images "
    "under MS, starting from a bench report or a short bench at startup).",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "onnxruntime", "tensorrt"]),
    default="auto",
    show_default=True,
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8"]),
    default="fp32",
    show_default=True,
    help="Graph set to serve (fp16 and int8: added by `budget-edge quantize`).",
)
@click.option(
    "--threads",
    type=BoundedInt(1, MAX_THREADS),
    help="Threads per ONNX Runtime session (default: the usable cores).",
)
@click.option(
    "--mode",
    type=click.Choice(["greedy", "sample", "rank", "allocate"]),
    help="Decision mode of requests that name none (default: the artifact's own).",
)
@click.option(
    "--model-name",
    help="Model name in the URLs (default: the backbone's name): letters, digits, '.', "
    "'_' and '-'.",
)
@click.option(
    "--max-body-mb",
    type=FiniteFloat(MIN_BODY_MB, MAX_BODY_MB),
    default=16.0,
    show_default=True,
    help="Larger request bodies get HTTP 413.",
)
@click.option(
    "--max-batch",
    type=BoundedInt(1, MAX_BATCH),
    default=64,
    show_default=True,
    help="Images per request; larger requests get HTTP 413 (split them).",
)
@click.option(
    "--max-queue",
    type=BoundedInt(1, MAX_QUEUE),
    default=100,
    show_default=True,
    help="Requests waiting for the model; more get HTTP 503 with Retry-After.",
)
@click.option(
    "--request-timeout",
    type=FiniteFloat(0, MAX_TIMEOUT_S, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a request may take, queue included (a client's `timeout` "
    "parameter can shorten it); past it, HTTP 503.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="A file holding the access token clients send as `Authorization: Bearer "
    "<token>` (or set BUDGET_EDGE_TOKEN); health routes stay open.",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="TLS certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="TLS private key (PEM).")
@click.option(
    "--trusted-key",
    "trusted_keys",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Ed25519 public key (PEM); repeatable. Serve only an artifact signed by "
    "one of them (`budget-edge sign`).",
)
@click.option(
    "--insecure", is_flag=True, help="Serve a non-loopback --host without an access token."
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
def command(
    directory: Path,
    host: str,
    port: int,
    uds: str | None,
    budget_spec: str,
    backend: str,
    precision: str,
    threads: int | None,
    mode: str | None,
    model_name: str | None,
    max_body_mb: float,
    max_batch: int,
    max_queue: int,
    request_timeout: float,
    token_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    trusted_keys: tuple[str, ...],
    insecure: bool,
    log_level: str,
) -> None:
    """Serve an artifact dir over the KServe/Triton v2 protocol (JSON and binary tensors).

    Routes: GET /v2/health/live, /v2/health/ready, /v2, /v2/models/NAME,
    /v2/models/NAME/ready, /metrics (Prometheus); POST /v2/models/NAME/infer,
    /v2/repository/index. SIGTERM or Ctrl+C serves queued requests for 10 s more,
    answers any still waiting 503, lets running ones finish, then exits. SIGHUP
    loads DIRECTORY again and swaps it in, requests in flight finishing on the old
    model (a redeploy: export elsewhere, switch a symlink, SIGHUP); SIGUSR1 and
    SIGUSR2 are ignored. See docs/protocol.md.

    \b
    Example:
      budget-edge serve artifacts/r20 --port 8000 --budget fixed:0.5
      curl -s localhost:8000/v2/models/resnet20
    """
    from budget_edge.errors import BackendError
    from budget_edge.runtime import BudgetRuntime

    try:
        from budget_edge.serve.admission import Admission
        from budget_edge.serve.app import create_app
        from budget_edge.serve.controller import parse_budget_spec
        from budget_edge.serve.model import ServedModel
        from budget_edge.serve.reload import Reloader
        from budget_edge.serve.server import address_of, bind_tcp, bind_unix, make_server, run
    except ImportError as exc:
        raise BackendError(
            f"serving needs Starlette and uvicorn ({exc}): pip install 'budget-edge[serve]'"
        ) from exc

    from budget_edge.serve.access import read_token

    check_options(click.get_current_context().params, os.environ)  # before anything loads
    token = read_token(token_file)

    def load() -> BudgetRuntime:
        """The artifact, checked and with every session made: at startup and at SIGHUP."""
        return BudgetRuntime.load(
            directory,
            backend=backend,
            threads=threads,
            precision=precision,
            trusted_keys=list(trusted_keys) or None,
            warm_up=True,  # no request waits for a session to be made
        )

    # Until the server handles them, a closed terminal (SIGHUP) or a stray SIGUSR1 must
    # not kill a server that is still loading.
    stray = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in stray}
    try:
        runtime = load()
        model = None
        try:
            controller = parse_budget_spec(budget_spec, runtime, mode)
            model = ServedModel(
                runtime, controller, name=model_name, max_batch=max_batch, mode=mode
            )
            admission = Admission(max_queue=max_queue, timeout_s=request_timeout)
            app = create_app(
                model,
                max_body_bytes=int(max_body_mb * 1024 * 1024),
                token=token,
                admission=admission,
            )
            server = make_server(
                app,
                log_level=log_level,
                tls_cert=tls_cert,
                tls_key=tls_key,
                admission=admission,
                on_sighup=Reloader(model, load).request,
            )
            sock = bind_unix(uds) if uds else bind_tcp(host, port)
            url = address_of(sock)
            if tls_cert is not None:
                url = url.replace("http://", "https://", 1)
            route = f"/v2/models/{model.name}"
            example = (
                f"curl --unix-socket {uds} http://localhost{route}" if uds else f"curl {url}{route}"
            )
            click.echo(
                f"serving model {model.name!r} ({model.platform}, {precision}, mode {model.mode}) "
                f"on {url} with budget "
                f"{budget_spec}; try: {example}",
                err=True,
            )
            run(server, sock)
        finally:
            (runtime if model is None else model.runtime).close()  # a reload may have replaced it
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

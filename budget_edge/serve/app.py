"""The HTTP side of the server: Open Inference Protocol (v2) routes on Starlette.

Handlers stay thin: they read the body (bounded in size and time), parse it in a
worker thread, then run it chunk by chunk, each chunk a turn in the admission queue
(serve/admission.py), so the event loop keeps answering health checks and small
requests are not stuck behind a large one. Every error becomes
`{"error": "<message>"}` with its status code; a 500 means a bug in budget-edge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from budget_edge import __version__
from budget_edge.errors import BudgetEdgeError, InputError
from budget_edge.runtime.request import InferenceRequest, Mask
from budget_edge.runtime.runtime import InferResult
from budget_edge.serve.access import BearerToken
from budget_edge.serve.admission import Admission
from budget_edge.serve.clock import Clock
from budget_edge.serve.errors import (
    NotFoundError,
    PayloadTooLargeError,
    RequestError,
    RequestTimeoutError,
    UnavailableError,
)
from budget_edge.serve.metrics import ServerMetrics
from budget_edge.serve.model import ServedModel
from budget_edge.serve.request import HEADER_LENGTH
from budget_edge.serve.stats import ModelStats

logger = logging.getLogger("budget_edge.serve")

SERVER_NAME = "budget-edge"
# What /v2 advertises: Triton's names for the protocol extensions spoken here.
EXTENSIONS = ["binary_tensor_data", "parameters"]


# Seconds a client has to send a request's whole body once its head has arrived; a
# stalled body would otherwise hold its connection and its buffer without end.
BODY_TIMEOUT_S = 30.0


def create_app(
    model: ServedModel,
    max_body_bytes: int,
    token: str | None = None,
    admission: Admission | None = None,
) -> Any:
    """The ASGI app serving one model; request bodies above `max_body_bytes` get 413;
    with a token, every route but health needs `Authorization: Bearer <token>`.
    `admission` queues requests for the model (a default one if None); the server
    closes it when it begins to stop."""
    admission = admission or Admission()
    clock = admission.clock  # one clock for every deadline of this app
    metrics = ServerMetrics(queue_depth=lambda: admission.waiting)
    stats = ModelStats(model.name, model.version)

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        # A stopping server is not ready: a load balancer should send traffic elsewhere.
        return JSONResponse(
            {"ready": not admission.closing}, status_code=503 if admission.closing else 200
        )

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(request: Request) -> Response:
        _check_model(model, request)
        return JSONResponse(model.metadata())

    async def model_ready(request: Request) -> Response:
        _check_model(model, request)
        return JSONResponse({"name": model.name, "ready": True})

    async def model_config(request: Request) -> Response:
        _check_model(model, request)
        return JSONResponse(model.config())

    async def model_stats(request: Request) -> Response:
        if "name" in request.path_params:
            _check_model(model, request)
        return JSONResponse(stats.as_triton())

    async def repository_index(request: Request) -> Response:
        # Triton's model repository index, as tritonclient's model discovery asks for it.
        return JSONResponse(
            [{"name": model.name, "version": model.version, "state": "READY", "reason": ""}]
        )

    async def prometheus(request: Request) -> Response:
        content, media_type = metrics.exposition()
        return Response(content, headers={"content-type": media_type})

    async def infer(request: Request) -> Response:
        start = time.perf_counter()
        try:
            response, images = await answer(request)
        except Exception:
            stats.request(time.perf_counter() - start, None)
            raise
        stats.request(time.perf_counter() - start, images)
        return response

    async def answer(request: Request) -> tuple[Response, int]:
        _check_model(model, request)
        if request.headers.get("content-encoding", "identity") != "identity":
            raise RequestError(
                f"Content-Encoding {request.headers['content-encoding']!r} is not supported: "
                "send the body uncompressed"
            )
        header_length = request.headers.get(HEADER_LENGTH)
        result = await model.respond(
            await _read_body(request, max_body_bytes, clock),  # held by no frame here
            header_length,
            admission,
            observe_run,
        )
        headers = {} if result.json_length is None else {HEADER_LENGTH: str(result.json_length)}
        binary = result.json_length is not None
        media_type = "application/octet-stream" if binary else "application/json"
        return Response(result.content, media_type=media_type, headers=headers), result.images

    def observe_run(
        part: InferenceRequest, result: InferResult, budget: float | None, waited: float, ran: float
    ) -> None:
        metrics.observe_run(result, _budget_of(part, budget), ran)
        stats.run(waited, ran)

    routes = [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/v2/models/stats", model_stats, methods=["GET"]),
    ]
    # Every model route also answers under /versions/{version}, as tritonclient may ask.
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(prefix, model_metadata, methods=["GET"]),
            Route(prefix + "/ready", model_ready, methods=["GET"]),
            Route(prefix + "/config", model_config, methods=["GET"]),
            Route(prefix + "/stats", model_stats, methods=["GET"]),
            Route(prefix + "/infer", infer, methods=["POST"]),
        ]
    handlers: dict[Any, Any] = {
        HTTPException: _http_error,
        BudgetEdgeError: _project_error,
        Exception: _internal_error,
    }
    app: Any = Starlette(routes=routes, exception_handlers=handlers)
    if token is not None:
        app = BearerToken(app, token)
    return metrics.middleware(app)


def _budget_of(part: InferenceRequest, chosen: float | None) -> float | None:
    """The budget a run used, for the metrics: the server's choice or the request's."""
    if chosen is not None:
        return chosen
    if isinstance(part.decision, Mask) or part.budget is None:
        return None
    return float(np.mean(np.asarray(part.budget, np.float64)))


def _check_model(model: ServedModel, request: Request) -> None:
    name = request.path_params["name"]
    version = request.path_params.get("version")
    if name != model.name:
        raise NotFoundError(f"unknown model {name!r}: this server serves {model.name!r}")
    if version is not None and version != model.version:
        raise NotFoundError(
            f"unknown version {version!r} of model {name!r}: this server has "
            f"version {model.version!r}"
        )


async def _read_body(request: Request, limit: int, clock: Clock) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes,
    and with 408 if it has not all arrived BODY_TIMEOUT_S after the head."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    receiving = asyncio.ensure_future(_receive_body(request, limit))
    try:
        await clock.wait([receiving], until=clock.now() + BODY_TIMEOUT_S)
    except BaseException:
        receiving.cancel()  # this request is being cancelled: stop reading for it
        raise
    if receiving.done():
        return receiving.result()
    receiving.cancel()  # the client was too slow: stop reading
    raise RequestTimeoutError(
        f"the request body did not arrive within {BODY_TIMEOUT_S:g} s: send it at once "
        "after the headers"
    )


async def _receive_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
    except ClientDisconnect as exc:
        # Nobody is left to answer; a 400 keeps this out of the error log.
        raise RequestError("the client disconnected before sending the whole body") from exc
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"request body of {size} bytes or more exceeds the server's limit of {limit} bytes: "
        "send fewer images per request or restart the server with a larger --max-body-mb"
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    # Starlette's own errors: unknown routes (404) and wrong methods (405).
    assert isinstance(exc, HTTPException)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    if exc.status_code == 404:
        message += (
            ": the routes are /v2, /v2/health/live, /v2/health/ready, /v2/repository/index, "
            "/v2/models/stats, /v2/models/{name}[/versions/{v}][/ready|/config|/stats|/infer] "
            "and /metrics"
        )
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _project_error(request: Request, exc: Exception) -> Response:
    # A bad request (or bad input to the runtime) is the client's to fix: 4xx; a busy or
    # stopping server says when to retry (503). Any other project error (a broken
    # artifact, a failing backend) is the server's: 500.
    headers = {}
    if isinstance(exc, UnavailableError):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, RequestError):
        status = exc.status
    elif isinstance(exc, InputError):
        status = 400
    else:
        status = 500
        logger.error("%s %s failed: %s", request.method, request.url.path, exc)
    return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Starlette re-raises the exception after this answer, so uvicorn logs its traceback.
    return JSONResponse(
        {"error": f"internal server error ({type(exc).__name__}: {exc}); see the server log"},
        status_code=500,
    )

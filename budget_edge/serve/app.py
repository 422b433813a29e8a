"""The HTTP side of the server: Open Inference Protocol (v2) routes on Starlette.

Handlers stay thin: they read the body (bounded), hand the work to a worker
thread so the event loop keeps answering health checks while a batch runs, and
turn every error into `{"error": "<message>"}` with its status code.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from budget_edge import __version__
from budget_edge.errors import BudgetEdgeError, InputError
from budget_edge.serve.access import BearerToken
from budget_edge.serve.errors import NotFoundError, PayloadTooLargeError, RequestError
from budget_edge.serve.model import ServedModel
from budget_edge.serve.request import HEADER_LENGTH

logger = logging.getLogger("budget_edge.serve")

SERVER_NAME = "budget-edge"
# What /v2 advertises: Triton's names for the protocol extensions spoken here.
EXTENSIONS = ["binary_tensor_data", "parameters"]


def create_app(model: ServedModel, max_body_bytes: int, token: str | None = None) -> Any:
    """The ASGI app serving one model; request bodies above `max_body_bytes` get 413;
    with a token, every route but health needs `Authorization: Bearer <token>`."""

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": True})

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(
            {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}
        )

    async def model_metadata(request: Request) -> Response:
        _check_model(model, request)
        return JSONResponse(model.metadata())

    async def model_ready(request: Request) -> Response:
        _check_model(model, request)
        return JSONResponse({"name": model.name, "ready": True})

    async def infer(request: Request) -> Response:
        _check_model(model, request)
        if request.headers.get("content-encoding", "identity") != "identity":
            raise RequestError(
                f"Content-Encoding {request.headers['content-encoding']!r} is not supported: "
                "send the body uncompressed"
            )
        body = await _read_body(request, max_body_bytes)
        header_length = request.headers.get(HEADER_LENGTH)
        content, json_length = await run_in_threadpool(model.infer_body, body, header_length)
        headers = {} if json_length is None else {HEADER_LENGTH: str(json_length)}
        media_type = "application/json" if json_length is None else "application/octet-stream"
        return Response(content, media_type=media_type, headers=headers)

    routes = [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
    ]
    # Every model route also answers under /versions/{version}, as tritonclient may ask.
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(prefix, model_metadata, methods=["GET"]),
            Route(prefix + "/ready", model_ready, methods=["GET"]),
            Route(prefix + "/infer", infer, methods=["POST"]),
        ]
    handlers: dict[Any, Any] = {
        HTTPException: _http_error,
        BudgetEdgeError: _project_error,
        Exception: _internal_error,
    }
    app = Starlette(routes=routes, exception_handlers=handlers)
    return app if token is None else BearerToken(app, token)


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


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
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
        message += ": the v2 routes are /v2, /v2/health/*, /v2/models/{name}[/ready|/infer]"
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _project_error(request: Request, exc: Exception) -> Response:
    # A bad request (or bad input to the runtime) is the client's to fix: 4xx.
    # Any other project error (a broken artifact, a failing backend) is the server's: 500.
    if isinstance(exc, RequestError):
        status = exc.status
    elif isinstance(exc, InputError):
        status = 400
    else:
        status = 500
        logger.error("%s %s failed: %s", request.method, request.url.path, exc)
    return JSONResponse({"error": str(exc)}, status_code=status)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Starlette re-raises the exception after this answer, so uvicorn logs its traceback.
    return JSONResponse(
        {"error": f"internal server error ({type(exc).__name__}: {exc}); see the server log"},
        status_code=500,
    )

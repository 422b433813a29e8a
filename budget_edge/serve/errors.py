"""Request errors of the inference server, each carrying the HTTP status it answers with.

They subclass `InputError`: a bad request is bad input to inference, and the
server turns every one into `{"error": "<message>"}` with `status`.
"""

from __future__ import annotations

from budget_edge.errors import InputError


class RequestError(InputError):
    """The request is malformed or does not fit the model (HTTP 400)."""

    status = 400


class NotFoundError(RequestError):
    """The model or route named in the request does not exist (HTTP 404)."""

    status = 404


class PayloadTooLargeError(RequestError):
    """The request body is larger than the server's limit (HTTP 413)."""

    status = 413


class RequestTimeoutError(RequestError):
    """The client did not send its whole request in time (HTTP 408)."""

    status = 408


class UnavailableError(RequestError):
    """The server cannot take the request now: queue full, deadline passed, or shutting
    down (HTTP 503 with Retry-After)."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

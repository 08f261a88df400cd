"""Errors as RFC 9457 problem details (``application/problem+json``), never tracebacks.

Every error the API returns has this shape::

    {"type": "urn:reward3d:problem:<code>", "title": "...", "status": 422,
     "detail": "what was wrong, in one sentence", "instance": "/v1/score",
     "code": "<code>", "errors": [{"loc": [...], "msg": "..."}]}   # "errors" only for 422 fields

The catalogue (code -> status) is :data:`PROBLEMS`; docs/service.md lists when each occurs.
"""

from __future__ import annotations

import logging
import uuid

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.jobs.blobs import BlobStoreUnavailableError

log = logging.getLogger("reward3d.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"

# code -> (status, title)
PROBLEMS: dict[str, tuple[int, str]] = {
    "body-framing": (400, "Malformed request body"),
    "unauthorized": (401, "Missing or invalid API key"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "request-timeout": (408, "The request did not arrive in time"),
    "job-already-ended": (409, "The job has already ended"),
    "body-too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "invalid-request": (422, "Invalid request fields"),
    "invalid-tensor": (422, "Invalid tensor"),
    "video-limits": (422, "Video outside the accepted limits"),
    "invalid-video-file": (422, "Not a decodable video"),
    "idempotency-key-reused": (422, "Idempotency-Key reused with a different request"),
    "queue-full": (429, "The queue is full"),
    "too-many-in-flight": (429, "Too many unfinished jobs for this API key"),
    "too-many-connections": (429, "Too many open connections from this client"),
    "unavailable": (503, "Service unavailable"),
    "not-ready": (503, "Service not ready"),
    "internal-error": (500, "Internal error"),
}


class Problem(Exception):
    """Raise anywhere in a request to answer with this problem."""

    def __init__(self, code: str, detail: str, *, errors: list[dict] | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        if code not in PROBLEMS:
            raise ValueError(f"unknown problem code {code!r}")
        super().__init__(detail)
        self.code = code
        self.status, self.title = PROBLEMS[code]
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


def problem_response(problem: Problem, instance: str) -> Response:
    body = {
        "type": f"urn:reward3d:problem:{problem.code}",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
        "code": problem.code,
    }
    if problem.errors:
        body["errors"] = problem.errors
    headers = dict(problem.headers)
    if problem.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="reward3d"')
    if problem.status in (408, 413):  # the body was not read (all of it): this connection is done
        headers.setdefault("Connection", "close")
    return Response(orjson.dumps(body), status_code=problem.status, headers=headers,
                    media_type=PROBLEM_MEDIA_TYPE)  # fmt: skip


def field_errors(exc: ValidationError | RequestValidationError, prefix: tuple = ()) -> list[dict]:
    """pydantic errors without the offending input echoed back (it may be huge or secret)."""
    errors = []
    for error in exc.errors()[:50]:
        errors.append({"loc": [*prefix, *error.get("loc", ())], "msg": error.get("msg", "invalid"),
                       "type": error.get("type", "value_error")})  # fmt: skip
    return errors


def describe_errors(errors: list[dict]) -> str:
    first = errors[0] if errors else {"loc": [], "msg": "invalid"}
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}" if where else f"{first['msg']}{more}"


def invalid_request(exc: ValidationError, prefix: tuple = ()) -> Problem:
    errors = field_errors(exc, prefix)
    return Problem("invalid-request", describe_errors(errors), errors=errors)


_STATUS_CODES = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized",
                 413: "body-too-large", 415: "unsupported-media-type", 400: "body-framing"}  # fmt: skip


def _allowed_methods(request: Request) -> list[str]:
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)  # PARTIAL: the path matches, the method not
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = field_errors(exc)
        return problem_response(Problem("invalid-request", describe_errors(errors), errors=errors),
                                request.url.path)  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code)
        if code is None:
            code = "internal-error" if exc.status_code >= 500 else "body-framing"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # every method the path supports, not only one route's
            headers["Allow"] = ", ".join(_allowed_methods(request))
        problem = Problem(code, str(exc.detail), headers=headers)
        return problem_response(problem, request.url.path)

    async def _redis_down(request: Request, exc: Exception) -> Response:
        log.warning("Redis unreachable during %s %s: %s", request.method, request.url.path, exc)
        problem = Problem("unavailable", "the job store (Redis) is unreachable; retry shortly",
                          headers={"Retry-After": "2"})  # fmt: skip
        return problem_response(problem, request.url.path)

    app.add_exception_handler(RedisConnectionError, _redis_down)
    app.add_exception_handler(RedisTimeoutError, _redis_down)

    @app.exception_handler(BlobStoreUnavailableError)
    async def _blob_store_down(request: Request, exc: BlobStoreUnavailableError) -> Response:
        log.warning("blob store unavailable during %s %s: %s", request.method, request.url.path, exc)
        problem = Problem("unavailable", "the blob store is unreachable; nothing was accepted, retry "
                          "shortly", headers={"Retry-After": "2"})  # fmt: skip
        return problem_response(problem, request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        error_id = uuid.uuid4().hex[:12]
        log.exception("internal error %s during %s %s", error_id, request.method, request.url.path)
        problem = Problem("internal-error", f"an internal error occurred (error id {error_id})")
        return problem_response(problem, request.url.path)

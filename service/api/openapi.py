"""The OpenAPI document: ``POST /v1/score`` reads its body itself (five formats, streamed), so
its request body and the problem+json errors are described here."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.api.errors import PROBLEMS
from service.api.schemas import JobPublic, JsonScoreRequest

PROBLEM_SCHEMA = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "description": "urn:reward3d:problem:<code>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "code": {"type": "string", "enum": sorted(PROBLEMS)},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def _problem(description: str) -> dict:
    return {"description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}  # fmt: skip


def _job(description: str) -> dict:
    return {"description": description, "model": JobPublic}


SCORE_RESPONSES = {
    200: _job("The job ended within `wait`: results per item."),
    202: _job("Accepted and queued (or still running after `wait`); poll the Location."),
    400: _problem("Malformed body (framing, header length, truncated or extra bytes)."),
    401: _problem("Missing or invalid API key."),
    408: _problem("The body stalled or arrived slower than the minimum upload rate."),
    413: _problem("Body larger than the limit."),
    415: _problem("Unsupported Content-Type."),
    422: _problem("Invalid fields, tensors, video limits, or a reused Idempotency-Key."),
    429: _problem("Queue full or too many unfinished jobs for this key (see Retry-After)."),
    503: _problem("Redis unreachable."),
}

_BINARY = {"schema": {"type": "string", "format": "binary"}}

SCORE_OPENAPI = {
    "parameters": [
        {"name": "Inference-Header-Content-Length", "in": "header", "required": False,
         "schema": {"type": "integer", "minimum": 2},
         "description": "Binary format: bytes of the JSON header at the start of the body."},
        {"name": "Reward3D-Request", "in": "header", "required": False, "schema": {"type": "string"},
         "description": ".npy / safetensors bodies: the request fields (items, options) as JSON."},
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JsonScoreRequest"}},
            "application/octet-stream": _BINARY,
            "application/x-npy": _BINARY,
            "application/x-safetensors": _BINARY,
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {"request": {"type": "string", "description": "RequestFields JSON."},
                               "video": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                "required": ["video"],
            }},
        },
    },
}  # fmt: skip


def _link_jobs(schema: dict) -> None:
    """OpenAPI links from a submitted job to the operations on it: clients and fuzzers
    (schemathesis' stateful phase) follow the real job id instead of guessing one."""
    paths = schema.get("paths", {})
    targets = {"GetJob": ("/v1/jobs/{job_id}", "get"), "CancelJob": ("/v1/jobs/{job_id}", "delete")}
    links = {}
    for name, (path, method) in targets.items():
        operation_id = paths.get(path, {}).get(method, {}).get("operationId")
        if operation_id:
            links[name] = {"operationId": operation_id, "parameters": {"job_id": "$response.body#/id"}}
    score = paths.get("/v1/score", {}).get("post", {})
    for status in ("200", "202"):
        if status in score.get("responses", {}) and links:
            score["responses"][status]["links"] = links


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)  # fmt: skip
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = PROBLEM_SCHEMA
        request_schema = JsonScoreRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(request_schema.pop("$defs", {}))
        components["JsonScoreRequest"] = request_schema
        for path in schema.get("paths", {}).values():  # every 422 is problem+json, not FastAPI's
            for operation in path.values():
                responses = operation.get("responses", {})
                if "422" in responses:
                    responses["422"] = _problem(responses["422"].get("description", "Invalid request."))
        _link_jobs(schema)
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi

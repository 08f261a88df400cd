"""JSON text from a request, parsed with a reason a client can act on.

pydantic's and orjson's parse errors alone lump everything into "invalid JSON"; a caller who
sent a lone surrogate escape, text nested thousands of levels deep or bytes that are not
UTF-8 should be told which, not asked whether their length header is right.
"""

from __future__ import annotations

import orjson

from service.api.errors import Problem

MAX_DEPTH = 1024  # orjson's own limit; deeper text is refused before it can exhaust a stack


def load_json(raw: bytes | str, what: str, *, hint: str = ""):
    """The parsed value of ``raw``, or a 400 ``body-framing`` problem saying what is wrong.
    ``what`` names the text in the message ("the JSON header"); ``hint`` is appended to
    the generic syntax error only (e.g. "is Inference-Header-Content-Length right?")."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem("body-framing", f"{what} is not valid UTF-8 (byte {exc.start})") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        reason = _reason(exc)
        if hint and reason.startswith("not valid JSON"):
            reason += f" ({hint})"
        raise Problem("body-framing", f"{what}: {reason}") from None


def load_json_object(raw: bytes | str, what: str, *, hint: str = "") -> dict:
    value = load_json(raw, what, hint=hint)
    if not isinstance(value, dict):
        raise Problem("body-framing", f"{what} must be a JSON object, not {_kind(value)}")
    return value


def _reason(exc: orjson.JSONDecodeError) -> str:
    message = str(exc).lower()
    if "depth limit" in message or "recursion" in message:
        return f"nested deeper than {MAX_DEPTH} levels"
    if "surrogate" in message:
        return r"contains a lone UTF-16 surrogate escape (such as \ud800), which is not Unicode"
    return f"not valid JSON at line {exc.lineno}, column {exc.colno}"


def _kind(value) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")  # fmt: skip

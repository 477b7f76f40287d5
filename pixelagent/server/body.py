"""Reading request bodies within bounds: a size limit enforced before and while reading, and
the parsers for the JSON and image bodies the routes take, each failing with one clear line."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from pixelagent.server.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

Scope = dict[str, Any]


class BodyLimit:
    """ASGI middleware: a body over ``limit_for(scope)`` bytes gets 413.

    A ``Content-Length`` over the limit is answered at once, before any of the body is read; a
    body without one (chunked) is counted as it arrives and refused the moment it passes the
    limit, so neither way can make the server buffer more than the limit.
    """

    def __init__(self, app: Callable[..., Any], limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, too_large(declared, limit, declared=True))
            return
        received = 0

        async def counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(received, limit, declared=False)
            return message

        await self.app(scope, counted, send)


def too_large(size: int, limit: int, *, declared: bool) -> PayloadTooLarge:
    what = f"is {size:,} bytes" if declared else f"passed {limit:,} bytes"
    return PayloadTooLarge(f"the request body {what}, over this route's limit of {limit:,} bytes "
                           "(max_upload_bytes for image uploads, max_json_bytes for JSON); send less")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None  # a malformed one: uvicorn refuses it
    return None


async def _refuse(send: Callable[..., Any], error: PayloadTooLarge) -> None:
    body = json.dumps({"error": str(error), "type": type(error).__name__}).encode("utf-8")
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def parse_json(body: bytes, example: str) -> Any:
    """The JSON value in ``body``; :class:`BadRequest` naming the problem and ``example``."""
    if not body.strip():
        raise BadRequest(f"the request body is empty; send JSON like {example}")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON ({exc}); send JSON like {example}") from None
    except RecursionError:
        raise BadRequest(f"the request body's JSON is nested too deeply; send JSON like {example}") from None
    except ValueError:  # valid syntax Python will not read: an integer of over 4300 digits
        raise BadRequest("the request body's JSON cannot be read (a number in it has more than 4300 digits); "
                         f"send JSON like {example}") from None


def json_object(value: Any, allowed: set[str], required: set[str], example: str) -> dict[str, Any]:
    """``value`` if it is a JSON object with the ``required`` keys and no others than ``allowed``."""
    if not isinstance(value, dict):
        raise BadRequest(f"the request body must be a JSON object like {example}, not {_json_type(value)}")
    missing = sorted(required - set(value))
    if missing:
        raise BadRequest(f"the request body has no {missing[0]!r} field; send JSON like {example}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise BadRequest(f"unknown field(s) {shown} in the request body; send JSON like {example}")
    return value


def decode_base64(text: Any, max_bytes: int) -> bytes:
    """The bytes of a base64 string (a ``data:...;base64,`` prefix is allowed), at most ``max_bytes``."""
    if not isinstance(text, str):
        raise BadRequest(f"the image field must be a base64 string, not {_json_type(text)}")
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise BadRequest("the image field is a data URL that is not base64; use data:image/png;base64,...")
    if len(text) > -(-max_bytes * 4 // 3) + 4:
        raise upload_too_large(len(text) * 3 // 4, max_bytes)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"the image field is not valid base64 ({exc}); send the file's bytes base64-encoded") from None


def upload_too_large(size: int, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the image is {size:,} bytes or more, over the server's limit of {max_bytes:,} "
                           "bytes (max_upload_bytes); send a smaller or more compressed image")


def content_type(headers: Any) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def check_json_content_type(headers: Any, *, multipart: bool = False) -> None:
    """415 unless the body is JSON (``multipart``: the route also takes multipart/form-data)."""
    kind = content_type(headers)
    if kind not in {"", "application/json", "text/plain"}:
        if multipart:
            raise UnsupportedMediaType(
                f"this route reads multipart/form-data or JSON, not {kind}; send the image as the file field "
                'image (curl -F image=@photo.jpg) or as JSON {"image": "<base64>"}')
        raise UnsupportedMediaType(f"this route reads JSON, not {kind}; send Content-Type: application/json")


def _json_type(value: Any) -> str:
    """What a JSON value is, with its article: "an array", "a string", "null"."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)

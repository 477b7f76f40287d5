"""The server's errors: each a :mod:`pixelagent.errors` class with the HTTP status it answers with.

Engine errors keep their own class (an :class:`~pixelagent.errors.InputError` is a 400 with the
message the CLI prints); these add what only a server can get wrong: a session that does not
exist, a body too large, a full server, a model still loading. The warm CLI raises the same
classes from the server's answers (:func:`error_for_status`), so its one-line messages are the
server's.
"""

from __future__ import annotations

from pixelagent.errors import ImageError, InputError, PixelAgentError, UnknownNameError


class ServerError(PixelAgentError):
    """Something the server refused or could not do; ``status`` is the HTTP status."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(ServerError, InputError):
    """The request was malformed: not JSON, wrong fields or types, bad base64 (400)."""

    status = 400


class UnsupportedMediaType(ServerError, InputError):
    """The body's Content-Type is not one the route reads (415)."""

    status = 415


class PayloadTooLarge(ServerError, InputError):
    """The body, the upload or the image's pixel count is over the server's limit (413)."""

    status = 413


class SessionNotFound(ServerError, UnknownNameError):
    """No session has this id: never made, deleted, or expired (404)."""

    status = 404


class Conflict(ServerError, InputError):
    """The request contradicts an earlier one (409): an Idempotency-Key reused for another question."""

    status = 409


class TooManySessions(ServerError):
    """The server holds ``max_sessions`` sessions already (429)."""

    status = 429


class NotReady(ServerError):
    """The model is still loading, or failed to load (503)."""

    status = 503


#: HTTP status of each engine error the server passes on.
ENGINE_STATUS: dict[type[PixelAgentError], int] = {InputError: 400, ImageError: 400, UnknownNameError: 404}


def status_of(error: PixelAgentError) -> int:
    """The HTTP status to answer ``error`` with (500 for a part that broke its contract)."""
    if isinstance(error, ServerError):
        return error.status
    for kind, status in ENGINE_STATUS.items():
        if isinstance(error, kind):
            return status
    return 500


def error_for_status(status: int, message: str) -> ServerError:
    """The error a client raises for a server's error answer."""
    kinds = {400: BadRequest, 404: SessionNotFound, 409: Conflict, 413: PayloadTooLarge,
             415: UnsupportedMediaType, 429: TooManySessions, 503: NotReady}
    return kinds.get(status, ServerError)(message, status)

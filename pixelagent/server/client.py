"""Talking to a running ``pixelagent serve`` from Python: what the warm CLI uses.

    client = ServerClient("http://127.0.0.1:8000")
    conversation = client.open("photo.png")          # uploads it: a session on the server
    turn = conversation.ask("segment the bottle")      # a pixelagent.schema.TurnRecord
    conversation.close()                               # DELETE the session

The server's errors come back as the same classes and one-line messages
(:func:`pixelagent.server.errors.error_for_status`); an unreachable server is a
:class:`~pixelagent.errors.ConfigError` naming the URL. Needs only httpx (no torch, no model).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import httpx

from pixelagent.errors import ConfigError
from pixelagent.schema import SessionRecord, TurnRecord
from pixelagent.server.errors import NotReady, error_for_status

#: Environment variable naming the server the CLI talks to (same as ``--server``).
SERVER_ENV = "PIXELAGENT_SERVER"


class ServerClient:
    """HTTP calls to one server; ``timeout`` is per request, in seconds (a turn may queue)."""

    def __init__(self, url: str, timeout: float = 600.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--server {url!r} is not an http:// or https:// URL; pass e.g. http://127.0.0.1:8000")
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=5.0), trust_env=False)

    def request(self, method: str, path: str, *, resend: bool = False, **kwargs: Any) -> httpx.Response:
        """The response to one request; an error answer raises its class with the server's message.

        ``resend``: when the connection fails after the request may have gone out (a reset, a
        dropped reply), send it once more; only for requests the server dedupes (an ask with
        its Idempotency-Key)."""
        try:
            try:
                response = self._http.request(method, path, **kwargs)
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
                if not resend:
                    raise
                response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ConfigError(f"cannot reach the pixelagent server at {self.url} ({type(exc).__name__}: {exc}); "
                              f"start one with `pixelagent serve`, or fix --server / ${SERVER_ENV}") from None
        if response.is_success:
            return response
        try:
            message = str(response.json()["error"])
        except (ValueError, KeyError, TypeError):
            message = f"the server at {self.url} answered {response.status_code} to {method} {path}"
        raise error_for_status(response.status_code, message)

    def health(self) -> dict[str, Any]:
        """``GET /health``; :class:`NotReady` while the model loads."""
        try:
            return self.request("GET", "/health").json()
        except NotReady as exc:
            raise NotReady(f"the server at {self.url} is not ready: {exc}") from None

    def open(self, image: str | os.PathLike, data: bytes | None = None, *,
             owns_client: bool = False) -> RemoteConversation:
        """Upload ``image`` (its bytes: ``data``, else read from the path) and open a session;
        with ``owns_client`` the conversation's ``close()`` closes this client too."""
        path = Path(image)
        payload = data if data is not None else path.read_bytes()
        created = self.request("POST", "/v1/sessions", files={"image": (path.name, payload)}).json()
        return RemoteConversation(self, created["id"], tuple(created["image_size"]), created["preset"],
                                  owns_client=owns_client)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteConversation:
    """A session held by the server, with the methods of :class:`pixelagent.conversation.Conversation`."""

    def __init__(self, client: ServerClient, session_id: str, image_size: tuple[int, int], preset: str, *,
                 owns_client: bool = False) -> None:
        self.client, self.id, self.preset, self.owns_client = client, session_id, preset, owns_client
        self.image_size = (int(image_size[0]), int(image_size[1]))

    def ask(self, question: str) -> TurnRecord:
        # a key per ask: if the connection drops before the answer, asking again with the same key
        # gets the turn the server already made instead of a second one
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        response = self.client.request("POST", f"/v1/sessions/{self.id}/ask", json={"question": question},
                                       headers=headers, resend=True)
        return TurnRecord.model_validate(response.json())

    def record(self) -> SessionRecord:
        return SessionRecord.model_validate(self.client.request("GET", f"/v1/sessions/{self.id}").json())

    def reset(self) -> None:
        self.client.request("POST", f"/v1/sessions/{self.id}/reset")

    def close(self) -> None:
        """Delete the session on the server (once; later calls do nothing)."""
        if self.id:
            session_id, self.id = self.id, ""
            try:
                self.client.request("DELETE", f"/v1/sessions/{session_id}")
            except ConfigError:
                pass  # the server went away: the session went with it
            finally:
                if self.owns_client:
                    self.client.close()

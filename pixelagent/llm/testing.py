"""A fake OpenAI-compatible chat server on 127.0.0.1, for offline tests and demos.

It is a real HTTP server (``http.server`` in a thread, port chosen by the OS), so code under test
goes through httpx, sockets, timeouts and retries exactly as against a real endpoint. A
*responder* decides each answer::

    def responder(request: FakeRequest) -> FakeReply | str:
        return '{"elements": []}'          # a str is the reply content, HTTP 200

    with FakeChatServer(responder) as server:
        client = ChatClient(base_url=server.base_url, api_key="test")
        ...
    server.requests, server.max_in_flight   # what was received, peak concurrency

Replies can also misbehave the way real endpoints and proxies do: come late (``delay``), trickle
out a few bytes at a time (``trickle``, optionally the headers too), be huge without the server
holding them in memory (``size``), be sent chunked without a ``Content-Length`` (``chunked``) or
announce a ``Content-Length`` that is not the truth (``content_length``).

It only ever binds 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Union

__all__ = ["FakeChatServer", "FakeReply", "FakeRequest", "chat_body", "scripted"]

_BLOCK = 64 << 10  # generated bodies are written in blocks of this many bytes


@dataclass
class FakeReply:
    """One scripted answer. ``content`` becomes ``choices[0].message.content`` unless ``body``
    (raw bytes/str, or a dict sent as JSON) overrides the whole body; ``delay`` seconds pass first.

    Misbehaviour, for tests of deadlines and size limits:

    - ``trickle``: seconds to wait before each ``piece``-byte piece of the body (after the headers,
      which go out at once unless ``trickle_headers``); a big ``trickle`` is a server that sends
      its headers and then stalls.
    - ``size``: send a chat body of exactly this many bytes (its content a long run of ``x``),
      generated as it is written, never held in memory.
    - ``chunked``: ``Transfer-Encoding: chunked`` and no ``Content-Length``.
    - ``content_length``: announce this instead of the true length (the connection is closed after
      the reply, as a lying server's would have to be).
    """

    content: Optional[str] = None
    status: int = 200
    body: Union[bytes, str, dict, None] = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    trickle: float = 0.0
    piece: int = 1
    trickle_headers: bool = False
    size: Optional[int] = None
    chunked: bool = False
    content_length: Optional[int] = None

    def encode(self) -> bytes:
        if self.body is None:
            payload: Any = chat_body(self.content or "") if self.status < 400 else \
                {"error": {"message": self.content or "error", "type": "fake"}}
            return json.dumps(payload).encode()
        if isinstance(self.body, dict):
            return json.dumps(self.body).encode()
        return self.body.encode() if isinstance(self.body, str) else self.body

    def length(self) -> int:
        """The true length of the body in bytes."""
        if self.size is None:
            return len(self.encode())
        head, tail = _generated_ends()
        return max(self.size, len(head) + len(tail))

    def blocks(self) -> Iterator[bytes]:
        """The body, in pieces of ``piece`` bytes when trickling, else in large blocks."""
        step = max(1, self.piece) if self.trickle > 0 else _BLOCK
        for block in self._whole_blocks():
            for start in range(0, len(block), step):
                yield block[start:start + step]

    def _whole_blocks(self) -> Iterator[bytes]:
        if self.size is None:
            yield self.encode()
            return
        head, tail = _generated_ends()
        yield head
        filler = self.length() - len(head) - len(tail)
        block = b"x" * min(filler, _BLOCK)
        while filler > 0:
            yield block[:filler]
            filler -= len(block)
        yield tail


def _generated_ends() -> tuple[bytes, bytes]:
    """A chat body split around its content, for bodies generated on the fly."""
    marker = "\u0000"
    text = json.dumps(chat_body(marker))
    head, tail = text.split(json.dumps(marker)[1:-1])
    return head.encode(), tail.encode()


@dataclass
class FakeRequest:
    """What the server received: ``index`` counts requests from 0 in arrival order; ``client`` is
    the (host, port) it came from, the same for requests over one kept-alive connection."""

    index: int
    path: str
    headers: dict[str, str]
    body: Any
    client: tuple = ()

    @property
    def messages(self) -> list[dict]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []

    @property
    def text(self) -> str:
        """All text of all messages, joined: handy for routing on prompt contents."""
        return "\n".join(_texts(m.get("content")) for m in self.messages)

    @property
    def image_urls(self) -> list[str]:
        return [part["image_url"]["url"] for m in self.messages if isinstance(m.get("content"), list)
                for part in m["content"] if part.get("type") == "image_url"]


def chat_body(content: str, model: str = "fake") -> dict:
    """A minimal chat-completions response body carrying ``content``."""
    return {"id": "chatcmpl-fake", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}]}


def scripted(replies: Sequence[Union[FakeReply, str]], then: Union[FakeReply, str, None] = None
             ) -> Callable[[FakeRequest], Union[FakeReply, str]]:
    """A responder answering request i with ``replies[i]``, then ``then`` (or the last reply)."""
    def responder(request: FakeRequest) -> Union[FakeReply, str]:
        if request.index < len(replies):
            return replies[request.index]
        return then if then is not None else replies[-1]
    return responder


def _texts(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class FakeChatServer:
    """Serve ``responder``'s answers on ``http://127.0.0.1:<port>/v1`` while the ``with`` block runs."""

    def __init__(self, responder: Callable[[FakeRequest], Union[FakeReply, str]]) -> None:
        self.responder = responder
        self.requests: list[FakeRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()  # wakes handlers that wait (delay, trickle) when stopping

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeChatServer:
        self._stopping.clear()
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _receive(self, path: str, headers: dict[str, str], raw: bytes, client: tuple = ()) -> FakeReply:
        """Record the request and ask the responder; counts it as in flight until ``_done``."""
        try:
            body: Any = json.loads(raw or b"null")
        except ValueError:
            body = None
        with self._lock:
            request = FakeRequest(len(self.requests), path, headers, body, tuple(client))
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        reply = self.responder(request)
        return FakeReply(content=reply) if isinstance(reply, str) else reply

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the server is stopping (then the reply is abandoned)."""
        if seconds > 0 and self._stopping.wait(seconds):
            raise _Abandoned


class _Abandoned(Exception):
    """The server stopped while a reply was waiting to go out."""


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and hang up are part of the script, not errors to print


def _handler_for(fake: FakeChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms ACK stalls

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                reply = fake._receive(self.path, headers, raw, self.client_address)
                fake._pause(reply.delay)
                self._send(reply)
            except (OSError, _Abandoned):
                self.close_connection = True  # the client gave up (timeout): nothing to deliver
            finally:
                fake._done()

        def _send(self, reply: FakeReply) -> None:
            lines = [f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}",
                     "Content-Type: application/json"]
            if reply.chunked:
                lines.append("Transfer-Encoding: chunked")
            else:
                length = reply.length() if reply.content_length is None else reply.content_length
                lines.append(f"Content-Length: {length}")
            lines += [f"{name}: {value}" for name, value in reply.headers.items()]
            if reply.content_length is not None:
                self.close_connection = True  # the framing is a lie: the connection cannot be reused
            if any(n.lower() == "connection" and v.lower() == "close" for n, v in reply.headers.items()):
                self.close_connection = True
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            if reply.trickle_headers and reply.trickle > 0:
                for index in range(len(head)):
                    fake._pause(reply.trickle)
                    self.wfile.write(head[index:index + 1])
            else:
                self.wfile.write(head)
            for block in reply.blocks():
                fake._pause(reply.trickle)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if reply.chunked else block)
            if reply.chunked:
                self.wfile.write(b"0\r\n\r\n")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler

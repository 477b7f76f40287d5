"""A small client for OpenAI-compatible chat-completions endpoints (OpenAI, Azure-style proxies,
vLLM, llama.cpp servers, ...), shared by the data pipeline, the LLM judge and the GPT-4o preset.

It speaks the plain HTTP API through httpx (sync and async), retries what is worth retrying
(429, 5xx, timeouts, dropped connections, malformed bodies) with capped exponential backoff and
jitter, bounds the number of requests in flight per client, and validates JSON replies against
pydantic schemas with a "repair" turn when the model gets the format wrong.

Every attempt has one total deadline (``timeout``: connect, send, wait and the whole reply body;
not per read, so a server that trickles a byte at a time cannot stretch it) and every reply body a
size cap (``max_response_bytes``), counted as it streams in, so neither a stuck nor a huge answer
can hold a caller or its memory.

The API key is held privately: it never appears in ``repr``, logs or error messages (every error
text is scrubbed of it, in case a server echoes the request back).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import os
import random
import re
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, Optional, TypeVar

import httpx
from PIL import Image
from pydantic import BaseModel, ValidationError

from pixelagent.errors import ConfigError, LLMError, LLMSchemaError
from pixelagent.images import ImageInput, load_image

__all__ = ["ChatClient", "LLMError", "LLMSchemaError", "image_content", "extract_json"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
_ERROR_TEXT_LIMIT = 500  # server error bodies can be whole HTML pages; keep messages one-line-ish
#: Default cap on one reply body (decoded). A chat completion is a few KiB of JSON and even a very
#: long answer stays well under 1 MiB; 16 MiB leaves room for verbose proxies, ``n > 1`` and
#: logprobs, while a misrouted download or a hostile endpoint cannot fill the caller's memory.
DEFAULT_MAX_RESPONSE_BYTES = 16 << 20
_ERROR_BODY_LIMIT = 64 << 10  # of a non-2xx body only this much is read: the message shows 500 chars
_DECODE_STEP = 64 << 10  # most decoded bytes one decompression step may produce (bounds a zip bomb)
_ACCEPT_ENCODING = "gzip, deflate"  # what _Body decodes itself, step by step (httpx would add zstd/br)
Model = TypeVar("Model", bound=BaseModel)


class _Retryable(Exception):
    """Internal: this attempt failed in a way that another attempt may fix."""

    def __init__(self, message: str, status: int | None = None, wait: float | None = None) -> None:
        super().__init__(message)
        self.status, self.wait = status, wait


class ChatClient:
    """A rate-limited, retrying client for ``POST {base_url}/chat/completions``.

    Args:
        base_url: endpoint root, e.g. ``http://127.0.0.1:8000/v1``; default ``$OPENAI_BASE_URL``,
            else ``https://api.openai.com/v1``.
        api_key: default ``$OPENAI_API_KEY``; missing → :class:`ConfigError`.
        model: the ``model`` field of every request.
        timeout: the deadline of each HTTP attempt, in seconds: connecting, sending the request,
            waiting for the answer and reading all of its body must fit in it together (a server
            that trickles its answer cannot stretch it). An overrun is retried like any timeout.
        max_response_bytes: the most bytes a reply body may have (after decompression); a bigger
            one is refused at once from its ``Content-Length``, or cut off when the count passes the
            cap, and not retried. Default :data:`DEFAULT_MAX_RESPONSE_BYTES` (16 MiB).
        max_retries: extra attempts after the first for retryable failures.
        max_concurrency: requests in flight at once through this client (sync and async each).
        backoff, max_backoff: the first retry waits about ``backoff`` seconds, doubling per
            attempt, with jitter, never more than ``max_backoff`` (``Retry-After`` is capped too).
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, model: str = "gpt-4o",
                 timeout: float = 60.0, max_retries: int = 5, max_concurrency: int = 4,
                 backoff: float = 1.0, max_backoff: float = 30.0,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self.base_url = _check_base_url(base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or ""
        if not self._api_key:
            raise ConfigError("no API key for the chat endpoint: set OPENAI_API_KEY (or pass api_key=...)")
        _check_limits(timeout, max_retries, max_concurrency, backoff, max_backoff, max_response_bytes)
        self.model, self.timeout, self.max_retries = model, float(timeout), int(max_retries)
        self.max_concurrency, self.backoff, self.max_backoff = int(max_concurrency), float(backoff), float(max_backoff)
        self.max_response_bytes = int(max_response_bytes)
        self._semaphore = threading.Semaphore(self.max_concurrency)
        self._lanes: list[_Lane] = []  # every sync lane made; at most max_concurrency (see _Lane)
        self._idle_lanes: list[_Lane] = []
        self._http_lock = threading.Lock()
        self._ssl: ssl.SSLContext | None = None  # one CA bundle load, shared by the lanes' clients
        self._loop: asyncio.AbstractEventLoop | None = None  # async state is per event loop
        self._asemaphore: asyncio.Semaphore | None = None
        self._ahttp: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return (f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, "
                f"max_concurrency={self.max_concurrency}, max_retries={self.max_retries})")

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json",
                "Accept-Encoding": _ACCEPT_ENCODING}

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced by ``***`` (for anything that may be shown or logged)."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def _take_lane(self) -> _Lane:
        """An idle lane (the caller holds the semaphore, so there is always one to take or make)."""
        with self._http_lock:
            if self._idle_lanes:
                lane = self._idle_lanes.pop()  # the most recently used: its connection is warmest
            else:
                lane = _Lane()
                self._lanes.append(lane)
            if lane.http is None:
                if self._ssl is None:
                    self._ssl = httpx.create_ssl_context()
                lane.http, lane.socket = httpx.Client(verify=self._ssl, timeout=self.timeout), None
            return lane

    def _return_lane(self, lane: _Lane) -> None:
        with self._http_lock:
            self._idle_lanes.append(lane)

    def _async_state(self) -> tuple[asyncio.Semaphore, httpx.AsyncClient]:
        """Semaphore and AsyncClient of the running loop: both are bound to the loop that made them,
        so a client reused across ``asyncio.run`` calls gets fresh ones for each new loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._asemaphore is None or self._ahttp is None:
            self._loop, self._asemaphore = loop, asyncio.Semaphore(self.max_concurrency)
            self._ahttp = httpx.AsyncClient(timeout=self.timeout)
        return self._asemaphore, self._ahttp

    def close(self) -> None:
        """Close the pooled sync connections (the client stays usable; a new pool opens on demand)."""
        with self._http_lock:
            for lane in self._lanes:
                if lane.http is not None:
                    lane.http.close()
                    lane.http, lane.socket = None, None

    async def aclose(self) -> None:
        """Close the async connection pool of the running loop."""
        if self._ahttp is not None and self._loop is asyncio.get_running_loop():
            await self._ahttp.aclose()
        self._ahttp, self._asemaphore, self._loop = None, None, None

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- chat -------------------------------------------------------------------------------
    def _body(self, messages: Sequence[dict], json_mode: bool, temperature: float | None,
              max_tokens: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        if temperature is not None:  # None: leave the endpoint's default in force
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return body

    def chat(self, messages: Sequence[dict], *, json_mode: bool = False, temperature: float | None = None,
             max_tokens: int | None = None) -> str:
        """Send one chat request (retrying as configured) and return the reply text."""
        body = self._body(messages, json_mode, temperature, max_tokens)
        for attempt in range(self.max_retries + 1):
            try:
                with self._semaphore:
                    return _reply_text(self._send_sync(body))
            except _Retryable as exc:
                self._give_up_if_last(attempt, exc)
                time.sleep(self._delay(attempt, exc.wait))
        raise AssertionError("unreachable")  # pragma: no cover

    async def achat(self, messages: Sequence[dict], *, json_mode: bool = False,
                    temperature: float | None = None, max_tokens: int | None = None) -> str:
        """Async :meth:`chat`; requests in flight are bounded by ``max_concurrency``."""
        body = self._body(messages, json_mode, temperature, max_tokens)
        for attempt in range(self.max_retries + 1):
            semaphore, http = self._async_state()
            try:
                async with semaphore:  # released before sleeping, so a backing-off call frees its slot
                    return _reply_text(await self._send_async(http, body))
            except _Retryable as exc:
                self._give_up_if_last(attempt, exc)
                await asyncio.sleep(self._delay(attempt, exc.wait))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- one attempt ------------------------------------------------------------------------
    # The deadline must bound the attempt as a whole. httpx's timeouts bound each socket operation
    # (connect, one send, one recv), so a server sending a byte every few seconds never trips the
    # read timeout. On the sync path three things together make the deadline hold:
    #   1. every httpx timeout is the whole deadline (it is the time left when the attempt starts),
    #      so no single connect/send/recv can outlast it;
    #   2. the body is streamed and the clock is checked after every chunk (a trickle ends there);
    #   3. a watchdog timer shuts the lane's socket down at the deadline, which wakes a recv or
    #      send blocked in this thread (shutdown does; a close from another thread does not, on
    #      Linux) and also covers what 2 cannot see: a trickle of the status line and headers, or
    #      a stall. The failure that follows is then reported as the deadline overrun it is.
    # The watchdog needs to know the socket *before* the headers arrive, and httpx only exposes it
    # afterwards (``response.extensions["network_stream"]``). So each sync request in flight runs
    # in its own lane, an httpx.Client used by one request at a time: its pool then holds at most
    # one live connection, whose socket the ``trace`` extension reports when it connects
    # (``connect_tcp``/``start_tls`` ".complete" events carry the network stream) and which stays
    # the lane's socket while it is reused. Keep-alive is kept, and no private httpx attribute is
    # touched. Not covered: the DNS lookup (no socket yet; the resolver has its own timeouts) and
    # a TLS handshake, whose reads are bounded one by one by 1. only.
    # The async path needs none of this: asyncio.wait_for cancels the whole attempt at the deadline.
    def _send_sync(self, body: dict) -> _Answer:
        lane = self._take_lane()
        watchdog = _Watchdog(lane, self.timeout)
        deadline = time.monotonic() + self.timeout
        try:
            with lane.http.stream("POST", self.url, json=body, headers=self._headers(),
                                  timeout=httpx.Timeout(self.timeout),
                                  extensions={"trace": watchdog.trace}) as response:
                watchdog.watch(response.extensions.get("network_stream"))
                reader = self._body_reader(response)
                for raw in response.iter_raw():
                    if time.monotonic() > deadline:
                        raise self._overrun()
                    if not reader.feed(raw):
                        break
                answer = self._answer(response, reader)
            if watchdog.stop():  # fired before the body was complete: what was read may be cut
                raise self._overrun()
        except httpx.TimeoutException:
            raise self._overrun() from None
        except httpx.TransportError as exc:
            if watchdog.stop():  # the watchdog's shutdown is what broke the connection
                raise self._overrun() from None
            raise _Retryable(f"connection failed ({type(exc).__name__}: {exc})") from None
        finally:
            watchdog.stop()
            self._return_lane(lane)
        return self._check_status(answer)

    async def _send_async(self, http: httpx.AsyncClient, body: dict) -> _Answer:
        try:
            answer = await asyncio.wait_for(self._exchange_async(http, body), self.timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise self._overrun() from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__}: {exc})") from None
        return self._check_status(answer)

    async def _exchange_async(self, http: httpx.AsyncClient, body: dict) -> _Answer:
        async with http.stream("POST", self.url, json=body, headers=self._headers(),
                               timeout=httpx.Timeout(self.timeout)) as response:
            reader = self._body_reader(response)
            async for raw in response.aiter_raw():
                if not reader.feed(raw):
                    break
            return self._answer(response, reader)

    def _overrun(self) -> _Retryable:
        return _Retryable(f"no complete answer within {self.timeout:g} s (timeout={self.timeout:g} is the "
                          "deadline of each attempt, the whole reply included; raise it for a slow endpoint)")

    def _body_reader(self, response: httpx.Response) -> _Body:
        """A reader for this reply's body; refuses at once a 2xx reply whose size announced in
        ``Content-Length`` is over the cap (reading it would only waste the time and memory)."""
        encoding = response.headers.get("content-encoding", "")
        if not response.is_success:  # only the server's message is wanted; it is clipped anyway
            return _Body(encoding, min(self.max_response_bytes, _ERROR_BODY_LIMIT), self.url)
        length = response.headers.get("content-length", "").strip()
        identity = encoding.strip().lower() in ("", "identity")  # else the header counts compressed bytes
        if identity and length.isdigit() and int(length) > self.max_response_bytes:
            raise self._too_big(f"its Content-Length is {int(length)} bytes", response.status_code)
        return _Body(encoding, self.max_response_bytes, self.url)

    def _answer(self, response: httpx.Response, reader: _Body) -> _Answer:
        if reader.overflow and response.is_success:
            raise self._too_big(f"more than {reader.limit} bytes arrived (reading stopped there)",
                                response.status_code)
        return _Answer(response.status_code, response.reason_phrase, response.headers, reader.content(),
                       response.charset_encoding or "utf-8")

    def _too_big(self, size: str, status: int) -> LLMError:
        """Not retried: a server that sends an oversized reply will do it again."""
        return LLMError(f"chat reply from {self.url} is too large: {size}, over max_response_bytes="
                        f"{self.max_response_bytes} ({_human(self.max_response_bytes)}); a chat completion "
                        "is a few KiB, so check the base URL, or raise max_response_bytes if the endpoint "
                        "really sends replies this big", status)

    def _check_status(self, response: _Answer) -> _Answer:
        """Pass 2xx through; retryable statuses become _Retryable; any other status is final."""
        if response.is_success:
            return response
        detail = self.redact(_server_message(response))
        message = f"HTTP {response.status_code} from {self.url}: {detail}"
        if response.status_code in _RETRY_STATUSES:
            raise _Retryable(message, response.status_code, _retry_after(response))
        raise LLMError(f"chat request refused: {message}{_hint(response.status_code)}", response.status_code)

    def _give_up_if_last(self, attempt: int, exc: _Retryable) -> None:
        if attempt >= self.max_retries:
            raise LLMError(f"chat request to {self.url} failed after {attempt + 1} attempt(s): "
                           f"{self.redact(str(exc))}", exc.status) from None

    def _delay(self, attempt: int, server_wait: float | None) -> float:
        """Seconds before the next attempt: the server's Retry-After if any, else exponential
        backoff with jitter (so many clients hit by the same 429 do not retry in lockstep)."""
        if server_wait is not None:
            return min(max(server_wait, 0.0), self.max_backoff)
        ceiling = min(self.backoff * 2 ** attempt, self.max_backoff)
        return ceiling * random.uniform(0.5, 1.0)

    # -- JSON replies -----------------------------------------------------------------------
    def chat_json(self, messages: Sequence[dict], schema: type[Model], *, repair_attempts: int = 2,
                  temperature: float | None = None, max_tokens: int | None = None) -> Model:
        """Ask for a JSON object and validate it as ``schema``; on a bad reply, send one follow-up
        turn quoting the problem and asking for corrected JSON, at most ``repair_attempts`` times."""
        turns, error = list(messages), ""
        for _ in range(repair_attempts + 1):
            reply = self.chat(turns, json_mode=True, temperature=temperature, max_tokens=max_tokens)
            try:
                return parse_json_reply(reply, schema)
            except ValueError as exc:
                error = str(exc)
                turns = _repair_turns(messages, reply, error)
        raise _schema_failure(schema, repair_attempts, self.redact(error))

    async def achat_json(self, messages: Sequence[dict], schema: type[Model], *, repair_attempts: int = 2,
                         temperature: float | None = None, max_tokens: int | None = None) -> Model:
        """Async :meth:`chat_json`."""
        turns, error = list(messages), ""
        for _ in range(repair_attempts + 1):
            reply = await self.achat(turns, json_mode=True, temperature=temperature, max_tokens=max_tokens)
            try:
                return parse_json_reply(reply, schema)
            except ValueError as exc:
                error = str(exc)
                turns = _repair_turns(messages, reply, error)
        raise _schema_failure(schema, repair_attempts, self.redact(error))


# -- helpers ------------------------------------------------------------------------------------
def _check_base_url(url: str) -> str:
    if not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(f"chat endpoint base URL must start with http:// or https://, got {url!r}")
    return url.rstrip("/")


def _check_limits(timeout: float, max_retries: int, max_concurrency: int, backoff: float,
                  max_backoff: float, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
    problems = [name for name, ok in [("timeout > 0", timeout > 0), ("max_retries >= 0", max_retries >= 0),
                                      ("max_concurrency >= 1", max_concurrency >= 1),
                                      ("backoff >= 0", backoff >= 0), ("max_backoff >= 0", max_backoff >= 0),
                                      ("max_response_bytes >= 1", max_response_bytes >= 1)]
                if not ok]
    if problems:
        raise ConfigError(f"invalid ChatClient settings: need {', '.join(problems)}")


def _reply_text(response: _Answer) -> str:
    """``choices[0].message.content``; a body without it is malformed (worth another attempt:
    truncated or garbled bodies from overloaded proxies are usually transient)."""
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Retryable(f"malformed response body (no choices[0].message.content): "
                         f"{_clip(response.text)!r}", response.status_code) from None
    if not isinstance(content, str):
        raise _Retryable(f"reply has no text content: {_clip(response.text)!r}", response.status_code)
    return content


def _server_message(response: _Answer) -> str:
    """The server's own explanation: OpenAI's ``{"error": {"message": ...}}`` or the raw text."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and error.get("message"):
        return _clip(str(error["message"]))
    if isinstance(error, str) and error:
        return _clip(error)
    return _clip(response.text) or response.reason_phrase or "no details"


def _hint(status: int) -> str:
    return {401: " (check OPENAI_API_KEY)", 403: " (the key may lack access to this model)",
            404: " (check the base URL and the model name)"}.get(status, "")


def _retry_after(response: _Answer) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, ``Retry-After`` seconds or HTTP date."""
    millis = response.headers.get("retry-after-ms")
    value = response.headers.get("retry-after")
    try:
        if millis is not None:
            return float(millis) / 1000.0
        if value is not None:
            return float(value)
    except ValueError:
        pass
    if value:
        try:
            return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return None


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[:_ERROR_TEXT_LIMIT] + "…"


# -- transport pieces ----------------------------------------------------------------------------
class _Answer:
    """A reply read in full (within the cap): what the status check and the parsers need."""

    __slots__ = ("status_code", "reason_phrase", "headers", "content", "encoding")

    def __init__(self, status_code: int, reason_phrase: str, headers: httpx.Headers, content: bytes,
                 encoding: str) -> None:
        self.status_code, self.reason_phrase, self.headers = status_code, reason_phrase, headers
        self.content, self.encoding = content, encoding

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        try:
            return self.content.decode(self.encoding, errors="replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Body:
    """Collects a streamed body up to ``limit`` decoded bytes, decompressing gzip/deflate itself in
    bounded steps, so neither a long body nor a small compressed bomb holds more than about
    ``limit + _DECODE_STEP`` bytes. ``feed`` returns False (and ``overflow`` is set) once past the cap."""

    def __init__(self, content_encoding: str, limit: int, url: str) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",")]
        codings = [c for c in codings if c not in ("", "identity")]
        if codings and (len(codings) > 1 or codings[0] not in ("gzip", "x-gzip", "deflate")):
            raise LLMError(f"chat reply from {url} uses Content-Encoding {content_encoding!r}, which this "
                           f"client did not ask for (it accepts {_ACCEPT_ENCODING}); check the endpoint or proxy")
        # MAX_WBITS | 32: accept both the zlib wrapper (HTTP "deflate") and the gzip one
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 32) if codings else None
        self.limit, self.size, self.overflow = limit, 0, False
        self._parts: list[bytes] = []

    def feed(self, raw: bytes) -> bool:
        for piece in self._decoded(raw):
            if not self._keep(piece):
                return False
        return True

    def content(self) -> bytes:
        if self._zlib is not None and not self.overflow:
            try:
                self._keep(self._zlib.flush())
            except zlib.error:
                raise _Retryable("malformed response body (bad compressed data)") from None
        return b"".join(self._parts)

    def _keep(self, piece: bytes) -> bool:
        room = self.limit - self.size
        self.size += len(piece)
        if len(piece) > room:
            self._parts.append(piece[:room])
            self.overflow = True
            return False
        self._parts.append(piece)
        return True

    def _decoded(self, raw: bytes) -> Iterator[bytes]:
        if self._zlib is None:
            yield raw  # httpcore reads at most 64 KiB at a time
            return
        data = raw
        try:
            while data:
                yield self._zlib.decompress(data, _DECODE_STEP)
                data = self._zlib.unconsumed_tail
        except zlib.error:
            raise _Retryable("malformed response body (bad compressed data)") from None


class _Lane:
    """What one sync request in flight uses: an httpx.Client of its own (so its pool holds at most
    one live connection) and that connection's socket, for the watchdog (see ``_send_sync``)."""

    __slots__ = ("http", "socket")

    def __init__(self) -> None:
        self.http: httpx.Client | None = None
        self.socket: socket.socket | None = None


class _Watchdog:
    """Shuts the lane's socket down when the attempt's deadline passes, unless stopped first."""

    def __init__(self, lane: _Lane, seconds: float) -> None:
        self._lane, self._lock = lane, threading.Lock()
        self._fired = self._stopped = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: dict) -> None:
        """httpcore's ``trace`` extension: learn the socket as soon as a connection is made."""
        if event.endswith("connect_tcp.started"):
            with self._lock:
                self._lane.socket = None  # the lane's old connection is gone; the new one is coming
        elif event.endswith(".complete"):
            self.watch(info.get("return_value"))

    def watch(self, stream: Any) -> None:
        """Take the socket of a network stream (if it is one); shut it at once if already late."""
        extra = getattr(stream, "get_extra_info", None)
        sock = extra("socket") if callable(extra) else None
        if sock is None:
            return
        with self._lock:
            self._lane.socket = sock
            if self._fired and not self._stopped:
                _shutdown(sock)

    def stop(self) -> bool:
        """Disarm; True if the deadline had already fired (what the attempt read may be cut)."""
        with self._lock:
            self._stopped = True
        self._timer.cancel()
        return self._fired

    def _fire(self) -> None:
        with self._lock:  # under the lock: an attempt that already stopped keeps its connection
            if not self._stopped:
                self._fired = True
                _shutdown(self._lane.socket)


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed (a stale socket object has fileno -1: no risk of a reused fd)
            pass


def _human(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} bytes"


# -- JSON parsing and repair ---------------------------------------------------------------------
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """Parse the JSON of a model reply, tolerating ```json fences and prose around one object."""
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):  # "[[[[…" nested past the parser's depth is not JSON either
            continue
    raise ValueError(f"the reply is not valid JSON: {_clip(text)[:200]!r}")


def parse_json_reply(text: str, schema: type[Model]) -> Model:
    """``schema`` validated from a reply; ValueError with a readable list of problems otherwise."""
    data = extract_json(text)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
                             for e in exc.errors()[:8])
        raise ValueError(f"the JSON does not match the {schema.__name__} format: {problems}") from None


def _repair_turns(messages: Sequence[dict], reply: str, error: str) -> list[dict]:
    """The original request, the bad reply, and one user turn asking for a corrected version.
    Only the latest bad reply is kept, so repeated repairs do not grow the prompt."""
    request = (f"Your previous reply could not be used: {error}\n"
               "Reply again with the corrected JSON object only, following the requested output "
               "format exactly, with no other text.")
    return [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": request}]


def _schema_failure(schema: type[BaseModel], repairs: int, error: str) -> LLMSchemaError:
    return LLMSchemaError(f"no valid {schema.__name__} reply after {repairs} repair attempt(s); "
                          f"last error: {error}")


# -- images ---------------------------------------------------------------------------------------
def image_content(image: ImageInput, *, format: str = "jpeg", quality: int = 90,
                  detail: Optional[str] = None) -> dict:
    """An OpenAI vision content part, ``{"type": "image_url", "image_url": {"url": "data:..."}}``.

    ``image`` is anything :func:`pixelagent.images.load_image` reads (array, PIL image, path,
    bytes); it is re-encoded as JPEG (default: photos stay small) or PNG (lossless, for text-heavy
    crops). ``detail`` ("low", "high", "auto") is passed through when given.
    """
    fmt = format.lower().replace("jpg", "jpeg")
    if fmt not in {"jpeg", "png"}:
        raise ConfigError(f"image format must be 'jpeg' or 'png', got {format!r}")
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt == "jpeg" else {}
    Image.fromarray(load_image(image)).save(buffer, format=fmt.upper(), **options)
    url = f"data:image/{fmt};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
    part: dict[str, Any] = {"url": url}
    if detail is not None:
        part["detail"] = detail
    return {"type": "image_url", "image_url": part}

"""A small client for OpenAI-compatible chat-completions endpoints (OpenAI, Azure-style proxies,
vLLM, llama.cpp servers, ...), shared by the data pipeline, the LLM judge and the GPT-4o preset.

It speaks the plain HTTP API through httpx (sync and async), retries what is worth retrying
(429, 5xx, timeouts, dropped connections, malformed bodies) with capped exponential backoff and
jitter, bounds the number of requests in flight per client, and validates JSON replies against
pydantic schemas with a "repair" turn when the model gets the format wrong.

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
import threading
import time
from collections.abc import Sequence
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
        timeout: seconds per HTTP attempt (connect, read, write and pool each).
        max_retries: extra attempts after the first for retryable failures.
        max_concurrency: requests in flight at once through this client (sync and async each).
        backoff, max_backoff: the first retry waits about ``backoff`` seconds, doubling per
            attempt, with jitter, never more than ``max_backoff`` (``Retry-After`` is capped too).
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, model: str = "gpt-4o",
                 timeout: float = 60.0, max_retries: int = 5, max_concurrency: int = 4,
                 backoff: float = 1.0, max_backoff: float = 30.0) -> None:
        self.base_url = _check_base_url(base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or ""
        if not self._api_key:
            raise ConfigError("no API key for the chat endpoint: set OPENAI_API_KEY (or pass api_key=...)")
        _check_limits(timeout, max_retries, max_concurrency, backoff, max_backoff)
        self.model, self.timeout, self.max_retries = model, float(timeout), int(max_retries)
        self.max_concurrency, self.backoff, self.max_backoff = int(max_concurrency), float(backoff), float(max_backoff)
        self._semaphore = threading.Semaphore(self.max_concurrency)
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()
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
        return {"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"}

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced by ``***`` (for anything that may be shown or logged)."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def _sync_http(self) -> httpx.Client:
        with self._http_lock:  # one pooled client, created on first use by whichever thread
            if self._http is None:
                self._http = httpx.Client(timeout=self.timeout)
            return self._http

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
            if self._http is not None:
                self._http.close()
                self._http = None

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

    def _send_sync(self, body: dict) -> httpx.Response:
        try:
            response = self._sync_http().post(self.url, json=body, headers=self._headers())
        except httpx.TimeoutException as exc:
            raise _Retryable(f"no answer within {self.timeout:g} s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__}: {exc})") from None
        return self._check_status(response)

    async def _send_async(self, http: httpx.AsyncClient, body: dict) -> httpx.Response:
        try:
            response = await http.post(self.url, json=body, headers=self._headers())
        except httpx.TimeoutException as exc:
            raise _Retryable(f"no answer within {self.timeout:g} s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__}: {exc})") from None
        return self._check_status(response)

    def _check_status(self, response: httpx.Response) -> httpx.Response:
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
                  max_backoff: float) -> None:
    problems = [name for name, ok in [("timeout > 0", timeout > 0), ("max_retries >= 0", max_retries >= 0),
                                      ("max_concurrency >= 1", max_concurrency >= 1),
                                      ("backoff >= 0", backoff >= 0), ("max_backoff >= 0", max_backoff >= 0)]
                if not ok]
    if problems:
        raise ConfigError(f"invalid ChatClient settings: need {', '.join(problems)}")


def _reply_text(response: httpx.Response) -> str:
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


def _server_message(response: httpx.Response) -> str:
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


def _retry_after(response: httpx.Response) -> float | None:
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
        except ValueError:
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

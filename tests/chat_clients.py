"""Chat clients for tests against the fake OpenAI server, closed after each test (see conftest)."""

from __future__ import annotations

from pixelagent.llm import ChatClient

_open: list[ChatClient] = []


def client_for(server, key: str, **overrides) -> ChatClient:
    """A client of ``server`` with tiny backoffs; closed when the test ends."""
    settings = dict(base_url=server.base_url, api_key=key, max_retries=2, backoff=0.001, max_backoff=0.01)
    _open.append(ChatClient(**{**settings, **overrides}))
    return _open[-1]


def close_all() -> None:
    """Close every client made so far: pooled sockets must not outlive a test."""
    while _open:
        _open.pop().close()

"""Hostile HTTP endpoints against ChatClient and the ``openai-chat`` backbone: servers that
trickle, stall, never answer, or send far more than a chat completion.

The promise: one total deadline per attempt (``timeout``) and a cap on the reply body
(``max_response_bytes``); a bad endpoint fails with one clear line within about 1.5x the
deadline, in bounded memory, and retries stay as they are.
"""

from __future__ import annotations

import asyncio
import socket
import time
import tracemalloc

import numpy as np
import pytest

from pixelagent.llm import ChatClient, LLMError
from pixelagent.llm.testing import FakeChatServer, FakeReply, scripted

KEY = "sk-test-hostile-0123456789"
HELLO = [{"role": "user", "content": "hello"}]
DEADLINE = 1.5
WITHIN = 1.5 * DEADLINE + 0.3  # the promise, plus a little for thread start-up on busy cores

pytestmark = pytest.mark.hostile("http client", timeout=15)

_clients: list[ChatClient] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _clients:
        _clients.pop().close()


def client_of(base_url: str, **overrides) -> ChatClient:
    settings = dict(base_url=base_url, api_key=KEY, timeout=DEADLINE, max_retries=0,
                    backoff=0.001, max_backoff=0.01)
    _clients.append(ChatClient(**{**settings, **overrides}))
    return _clients[-1]


def run_async(client: ChatClient):
    async def main():
        try:
            return await client.achat(HELLO)
        finally:
            await client.aclose()
    return asyncio.run(main())


def trickle() -> FakeReply:
    """One byte every 0.25 s: a ~170-byte reply would take ~40 s with a per-read timeout."""
    return FakeReply(content="a perfectly good answer", trickle=0.25)


def test_a_trickling_server_fails_within_the_deadline(expect_clear_error):
    with FakeChatServer(scripted([trickle()])) as server:
        client = client_of(server.base_url)
        started = time.monotonic()
        expect_clear_error(lambda: client.chat(HELLO), "no complete answer within 1.5 s", "timeout",
                           kind=LLMError, within_s=WITHIN)
        assert time.monotonic() - started >= DEADLINE - 0.05  # the deadline, not something shorter
    assert len(server.requests) == 1


def test_a_trickling_server_fails_within_the_deadline_async(expect_clear_error):
    with FakeChatServer(scripted([trickle()])) as server:
        client = client_of(server.base_url)
        expect_clear_error(lambda: run_async(client), "no complete answer within 1.5 s", "timeout",
                           kind=LLMError, within_s=WITHIN)


def test_trickled_headers_on_a_kept_alive_connection(expect_clear_error):
    replies = ["fine", FakeReply(content="late", trickle=0.25, trickle_headers=True)]
    with FakeChatServer(scripted(replies)) as server:
        client = client_of(server.base_url)
        assert client.chat(HELLO) == "fine"
        expect_clear_error(lambda: client.chat(HELLO), "no complete answer", kind=LLMError, within_s=WITHIN)


def test_a_server_that_accepts_and_never_answers(expect_clear_error):
    with socket.socket() as listener:  # the kernel completes the handshake; nobody ever reads
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        client = client_of(f"http://127.0.0.1:{listener.getsockname()[1]}/v1")
        expect_clear_error(lambda: client.chat(HELLO), "no complete answer", "timeout",
                           kind=LLMError, within_s=WITHIN)
        expect_clear_error(lambda: run_async(client), "no complete answer", kind=LLMError, within_s=WITHIN)


def test_a_server_that_sends_headers_then_stalls(expect_clear_error):
    with FakeChatServer(scripted([FakeReply(content="never", trickle=60)])) as server:
        client = client_of(server.base_url)
        expect_clear_error(lambda: client.chat(HELLO), "no complete answer", "timeout",
                           kind=LLMError, within_s=WITHIN)


def test_a_trickle_is_still_retried(expect_clear_error):
    with FakeChatServer(scripted([trickle()])) as server:
        client = client_of(server.base_url, timeout=1.0, max_retries=1)
        expect_clear_error(lambda: client.chat(HELLO), "2 attempt(s)", "no complete answer within 1 s",
                           kind=LLMError, within_s=2 * 1.5 * 1.0 + 0.3)
    assert len(server.requests) == 2


def test_a_huge_body_with_an_honest_content_length_is_refused_at_once(expect_clear_error):
    with FakeChatServer(scripted([FakeReply(size=50 << 30)])) as server:  # 50 GiB announced
        client = client_of(server.base_url, max_retries=3)
        error = expect_clear_error(lambda: client.chat(HELLO), "too large", "53687091200 bytes",
                                   "max_response_bytes=16777216", kind=LLMError, within_s=1.0)
    assert error.status == 200 and len(server.requests) == 1  # not retried


def test_a_chunked_body_far_over_the_cap_is_cut_off_in_bounded_memory(expect_clear_error):
    with FakeChatServer(scripted([FakeReply(size=200 << 20, chunked=True)])) as server:
        client = client_of(server.base_url, max_response_bytes=1 << 20, timeout=10)
        tracemalloc.start()
        try:
            expect_clear_error(lambda: client.chat(HELLO), "too large", "more than 1048576 bytes",
                               "max_response_bytes", kind=LLMError, within_s=5.0)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB for a 1 MiB cap"


def test_a_chunked_body_over_the_cap_async(expect_clear_error):
    with FakeChatServer(scripted([FakeReply(size=64 << 20, chunked=True)])) as server:
        client = client_of(server.base_url, max_response_bytes=1 << 20, timeout=10)
        expect_clear_error(lambda: run_async(client), "too large", "max_response_bytes",
                           kind=LLMError, within_s=5.0)


def test_the_gpt4o_preset_keeps_the_deadline_and_the_cap(monkeypatch, expect_clear_error):
    from pixelagent import Agent

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    image = np.full((48, 64, 3), 90, dtype=np.uint8)
    with FakeChatServer(scripted([trickle(), FakeReply(size=8 << 20)])) as server:
        settings = {"base_url": server.base_url, "timeout": DEADLINE, "max_retries": 0}
        agent = Agent("gpt4o-bbox", llm={"settings": settings})
        expect_clear_error(lambda: agent.session(image).ask("Segment the bottle."), "no complete answer",
                           "timeout", kind=LLMError, within_s=WITHIN)
        capped = Agent("gpt4o-bbox", llm={"settings": {**settings, "max_response_bytes": 1 << 20}})
        expect_clear_error(lambda: capped.session(image).ask("Segment the bottle."), "too large",
                           "max_response_bytes", kind=LLMError, within_s=WITHIN)

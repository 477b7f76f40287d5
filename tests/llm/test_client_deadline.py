"""ChatClient's per-attempt deadline and reply-size cap, against the fake server on 127.0.0.1.

Deadlines here are short (well under a second) so the file stays quick; tests/hostile has the
end-to-end versions with the suite's time and memory limits.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import tracemalloc
import zlib

import pytest

from pixelagent.errors import ConfigError
from pixelagent.llm import ChatClient, LLMError
from pixelagent.llm.client import DEFAULT_MAX_RESPONSE_BYTES
from pixelagent.llm.testing import FakeChatServer, FakeReply, chat_body, scripted

KEY = "sk-test-SECRET-0123456789abcdef"
HELLO = [{"role": "user", "content": "hello"}]
SLACK = 0.5  # seconds allowed past 1.5 x the deadline: thread start-up on 2 busy cores

_open_clients: list[ChatClient] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _open_clients:
        _open_clients.pop().close()


def make_client(server: FakeChatServer, **overrides) -> ChatClient:
    settings = dict(base_url=server.base_url, api_key=KEY, model="gpt-test", timeout=0.6,
                    max_retries=0, backoff=0.001, max_backoff=0.01)
    settings.update(overrides)
    _open_clients.append(ChatClient(**settings))
    return _open_clients[-1]


def arun(client: ChatClient, coroutine_function, *args, **kwargs):
    async def main():
        try:
            return await coroutine_function(*args, **kwargs)
        finally:
            await client.aclose()
    return asyncio.run(main())


def timed(call):
    """(the LLMError ``call`` raised, seconds it took)."""
    started = time.monotonic()
    with pytest.raises(LLMError) as info:
        call()
    return info.value, time.monotonic() - started


def assert_overrun(error: LLMError, elapsed: float, deadline: float) -> None:
    message = str(error)
    assert "\n" not in message
    assert f"no complete answer within {deadline:g} s" in message and "timeout=" in message
    assert elapsed <= 1.5 * deadline + SLACK, f"took {elapsed:.2f} s for a {deadline} s deadline"


# -- settings --------------------------------------------------------------------------------------
def test_max_response_bytes_is_validated_and_defaults_to_16_mib():
    with pytest.raises(ConfigError, match="max_response_bytes >= 1"):
        ChatClient(base_url="http://127.0.0.1:9/v1", api_key=KEY, max_response_bytes=0)
    client = ChatClient(base_url="http://127.0.0.1:9/v1", api_key=KEY)
    assert client.max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES == 16 << 20


def test_the_openai_plugin_passes_both_settings(monkeypatch):
    from pixelagent_openai import ChatSettings, _build_chat

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    backbone = _build_chat(ChatSettings(base_url="http://127.0.0.1:9/v1", timeout=2.5,
                                        max_response_bytes=4096), None)
    assert backbone.client.timeout == 2.5 and backbone.client.max_response_bytes == 4096
    assert ChatSettings().max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES


# -- the deadline ----------------------------------------------------------------------------------
def test_a_trickling_body_fails_at_the_deadline_not_per_read():
    # 172 bytes at 0.1 s each would take 17 s with a per-read timeout.
    with FakeChatServer(scripted([FakeReply(content="hi", trickle=0.1)])) as server:
        error, elapsed = timed(lambda: make_client(server).chat(HELLO))
    assert_overrun(error, elapsed, 0.6)
    assert elapsed >= 0.55 and error.status is None


def test_a_trickling_body_fails_at_the_deadline_async():
    with FakeChatServer(scripted([FakeReply(content="hi", trickle=0.1)])) as server:
        client = make_client(server)
        error, elapsed = timed(lambda: arun(client, client.achat, HELLO))
    assert_overrun(error, elapsed, 0.6)


def test_trickled_headers_on_a_reused_connection_are_cut_at_the_deadline():
    # The watchdog must know the socket before any header arrives, on a kept-alive connection too.
    replies = ["first", FakeReply(content="late", trickle=0.1, trickle_headers=True)]
    with FakeChatServer(scripted(replies)) as server:
        client = make_client(server)
        assert client.chat(HELLO) == "first"
        error, elapsed = timed(lambda: client.chat(HELLO))
    assert server.requests[0].client == server.requests[1].client  # one connection, reused
    assert_overrun(error, elapsed, 0.6)


def test_headers_then_a_stall_fail_at_the_deadline_sync_and_async():
    with FakeChatServer(scripted([FakeReply(content="never", trickle=30)])) as server:
        client = make_client(server)
        assert_overrun(*timed(lambda: client.chat(HELLO)), 0.6)
        assert_overrun(*timed(lambda: arun(client, client.achat, HELLO)), 0.6)


def test_a_deadline_overrun_is_retried_like_a_timeout():
    replies = [FakeReply(content="slow", trickle=0.1), "fast"]
    with FakeChatServer(scripted(replies)) as server:
        assert make_client(server, max_retries=1).chat(HELLO) == "fast"
    assert len(server.requests) == 2


def test_the_final_error_counts_the_attempts():
    with FakeChatServer(scripted([FakeReply(content="slow", trickle=0.1)])) as server:
        client = make_client(server, max_retries=1, timeout=0.4)
        error, elapsed = timed(lambda: client.chat(HELLO))
    assert "2 attempt(s)" in str(error) and "within 0.4 s" in str(error)
    assert len(server.requests) == 2 and elapsed <= 2 * 1.5 * 0.4 + SLACK


def test_the_deadline_does_not_touch_quick_replies_and_keeps_the_connection():
    with FakeChatServer(scripted(["a", "b", "c"])) as server:
        client = make_client(server, timeout=0.3)
        assert [client.chat(HELLO) for _ in range(3)] == ["a", "b", "c"]
        time.sleep(0.4)  # past any deadline: a late watchdog must not break the idle connection
        assert client.chat(HELLO) == "c"
    assert len({request.client for request in server.requests}) == 1


# -- the size cap ----------------------------------------------------------------------------------
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_cap_is_accepted_one_byte_more_is_not(chunked):
    replies = [FakeReply(size=4096, chunked=chunked), FakeReply(size=4097, chunked=chunked)]
    with FakeChatServer(scripted(replies)) as server:
        client = make_client(server, max_response_bytes=4096, max_retries=3)
        assert set(client.chat(HELLO)) == {"x"}
        with pytest.raises(LLMError) as info:
            client.chat(HELLO)
    message = str(info.value)
    assert "too large" in message and "max_response_bytes=4096" in message and "\n" not in message
    assert ("Content-Length is 4097 bytes" if not chunked else "more than 4096 bytes") in message
    assert len(server.requests) == 2  # refused, not retried: the server would send it again
    assert info.value.status == 200


def test_a_huge_content_length_is_refused_before_reading():
    with FakeChatServer(scripted([FakeReply(size=1 << 30)])) as server:
        client = make_client(server, max_response_bytes=1 << 20, timeout=5)
        started = time.monotonic()
        expected = r"Content-Length is 1073741824 bytes, over max_response_bytes=1048576 \(1 MiB\)"
        with pytest.raises(LLMError, match=expected):
            client.chat(HELLO)
        assert time.monotonic() - started < 1.0


def test_the_cap_holds_async():
    with FakeChatServer(scripted([FakeReply(size=1 << 22, chunked=True)])) as server:
        client = make_client(server, max_response_bytes=1 << 16, timeout=5)
        with pytest.raises(LLMError, match="more than 65536 bytes arrived"):
            arun(client, client.achat, HELLO)


def test_a_lying_short_content_length_does_not_smuggle_a_big_body():
    # The client trusts the announced length and reads no further; the cut JSON is malformed.
    with FakeChatServer(scripted([FakeReply(size=1 << 20, content_length=40)])) as server:
        with pytest.raises(LLMError, match="malformed response body"):
            make_client(server, max_response_bytes=1 << 16, timeout=5).chat(HELLO)


def test_a_lying_long_content_length_is_a_dropped_connection():
    with FakeChatServer(scripted([FakeReply(content="short", content_length=5000)])) as server:
        with pytest.raises(LLMError, match="connection failed"):
            make_client(server, timeout=5).chat(HELLO)


def test_gzip_replies_are_decoded_and_a_gzip_bomb_is_cut_off_in_bounded_memory():
    small = gzip.compress(b'{"choices": [{"message": {"content": "zipped"}}]}')
    bomb = gzip.compress(b'{"choices": [{"message": {"content": "' + b"0" * (64 << 20) + b'"}}]}')
    assert len(bomb) < 128 << 10
    replies = [FakeReply(body=small, headers={"Content-Encoding": "gzip"}),
               FakeReply(body=bomb, headers={"Content-Encoding": "gzip"})]
    with FakeChatServer(scripted(replies)) as server:
        client = make_client(server, max_response_bytes=1 << 20, timeout=5)
        assert client.chat(HELLO) == "zipped"
        tracemalloc.start()
        try:
            with pytest.raises(LLMError, match="more than 1048576 bytes"):
                client.chat(HELLO)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while cutting a 64 MiB bomb at 1 MiB"
    assert server.requests[0].headers["accept-encoding"] == "gzip, deflate"


def test_deflate_replies_are_decoded():
    body = zlib.compress(b'{"choices": [{"message": {"content": "deflated"}}]}')
    with FakeChatServer(scripted([FakeReply(body=body, headers={"Content-Encoding": "deflate"})])) as server:
        assert make_client(server).chat(HELLO) == "deflated"


def test_an_encoding_not_asked_for_is_a_clear_error():
    with FakeChatServer(scripted([FakeReply(body=b"\x00\x01", headers={"Content-Encoding": "br"})])) as server:
        with pytest.raises(LLMError, match="Content-Encoding 'br'.*gzip, deflate"):
            make_client(server, max_retries=2).chat(HELLO)
    assert len(server.requests) == 1


def test_bad_compressed_data_is_a_malformed_body():
    with FakeChatServer(scripted([FakeReply(body=b"not gzip", headers={"Content-Encoding": "gzip"})])) as server:
        with pytest.raises(LLMError, match="malformed response body"):
            make_client(server, max_retries=1).chat(HELLO)
    assert len(server.requests) == 2


def test_a_huge_error_body_is_read_only_in_part_and_still_retried():
    replies = [FakeReply(status=503, size=8 << 20), "recovered"]
    with FakeChatServer(scripted(replies)) as server:
        assert make_client(server, max_retries=1, timeout=5).chat(HELLO) == "recovered"
    with FakeChatServer(scripted([FakeReply(status=503, size=8 << 20)])) as server:
        with pytest.raises(LLMError, match="HTTP 503") as info:
            make_client(server, timeout=5).chat(HELLO)
    assert len(str(info.value)) < 1000


def test_the_fake_server_streams_generated_bodies_of_the_stated_size():
    reply = FakeReply(size=200_000)
    body = b"".join(reply.blocks())
    assert len(body) == reply.length() == 200_000
    assert chat_body("")["choices"][0]["message"]["content"] == ""
    assert set(json.loads(body)["choices"][0]["message"]["content"]) == {"x"}

"""ChatClient against a real HTTP server on 127.0.0.1 that answers like the OpenAI API."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from pydantic import BaseModel

from pixelagent.errors import ConfigError, PixelAgentError
from pixelagent.llm import ChatClient, LLMError, LLMSchemaError, extract_json, image_content
from pixelagent.llm.testing import FakeChatServer, FakeReply, scripted

KEY = "sk-test-SECRET-0123456789abcdef"
HELLO = [{"role": "user", "content": "hello"}]


_open_clients: list[ChatClient] = []


@pytest.fixture(autouse=True)
def _close_clients():
    """Close every client a test made: pooled sockets must not outlive the test."""
    yield
    while _open_clients:
        _open_clients.pop().close()


def make_client(server: FakeChatServer, **overrides) -> ChatClient:
    settings = dict(base_url=server.base_url, api_key=KEY, model="gpt-test", timeout=2.0,
                    max_retries=3, backoff=0.001, max_backoff=0.01)
    settings.update(overrides)
    _open_clients.append(ChatClient(**settings))
    return _open_clients[-1]


def arun(client: ChatClient, coroutine_function, *args, **kwargs):
    """Run one async client call in a fresh event loop, closing the loop's connection pool after."""
    async def main():
        try:
            return await coroutine_function(*args, **kwargs)
        finally:
            await client.aclose()
    return asyncio.run(main())


class Answer(BaseModel):
    answer: int
    why: str


# -- configuration --------------------------------------------------------------------------------
def test_missing_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        ChatClient(base_url="http://127.0.0.1:9/v1")


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="http"):
        ChatClient(base_url="127.0.0.1:8000", api_key=KEY)
    with pytest.raises(ConfigError, match="max_concurrency"):
        ChatClient(base_url="http://127.0.0.1:9/v1", api_key=KEY, max_concurrency=0)


def test_environment_defaults_and_request_shape(monkeypatch):
    with FakeChatServer(scripted(["hi there"])) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url + "/")
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        client = ChatClient(model="gpt-test")
        _open_clients.append(client)
        assert client.chat(HELLO, json_mode=True, temperature=0.2, max_tokens=50) == "hi there"
    request = server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body == {"model": "gpt-test", "messages": HELLO, "temperature": 0.2,
                            "max_tokens": 50, "response_format": {"type": "json_object"}}


def test_temperature_is_left_to_the_endpoint_by_default():
    with FakeChatServer(scripted(["ok"])) as server:
        make_client(server).chat(HELLO)
    assert "temperature" not in server.requests[0].body
    assert "response_format" not in server.requests[0].body


def test_repr_and_errors_never_show_the_key():
    # A hostile or debugging proxy that echoes the Authorization header back in its errors.
    def echo(request):
        status = 500 if request.index < 2 else 400
        return FakeReply(status=status, content=f"bad auth {request.headers['authorization']}")

    with FakeChatServer(echo) as server:
        client = make_client(server, max_retries=1)
        assert KEY not in repr(client) and "gpt-test" in repr(client)
        with pytest.raises(LLMError) as first:
            client.chat(HELLO)
        with pytest.raises(LLMError) as second:
            client.chat(HELLO)
    for error in (first.value, second.value):
        assert KEY not in str(error) and KEY not in repr(error.args)
        assert "***" in str(error)


# -- retries ----------------------------------------------------------------------------------------
def test_retries_5xx_then_succeeds():
    replies = [FakeReply(status=500, content="boom"), FakeReply(status=503, content="busy"), "done"]
    with FakeChatServer(scripted(replies)) as server:
        assert make_client(server).chat(HELLO) == "done"
    assert len(server.requests) == 3


def test_429_honours_retry_after():
    replies = [FakeReply(status=429, content="slow down", headers={"Retry-After": "0.3"}), "ok"]
    with FakeChatServer(scripted(replies)) as server:
        client = make_client(server, max_backoff=5.0)
        start = time.monotonic()
        assert client.chat(HELLO) == "ok"
        assert time.monotonic() - start >= 0.3  # backoff alone would wait ~1 ms


def test_retry_after_is_capped_by_max_backoff():
    replies = [FakeReply(status=429, content="later", headers={"Retry-After": "120"}), "ok"]
    with FakeChatServer(scripted(replies)) as server:
        start = time.monotonic()
        assert make_client(server, max_backoff=0.05).chat(HELLO) == "ok"
        assert time.monotonic() - start < 2.0


def test_gives_up_after_max_retries_with_status_and_message():
    with FakeChatServer(scripted([FakeReply(status=502, content="upstream down")])) as server:
        with pytest.raises(LLMError, match="4 attempt.*HTTP 502.*upstream down") as info:
            make_client(server, max_retries=3).chat(HELLO)
    assert info.value.status == 502 and isinstance(info.value, PixelAgentError)
    assert len(server.requests) == 4


def test_other_4xx_fail_at_once_with_the_server_message():
    with FakeChatServer(scripted([FakeReply(status=400, content="messages must be non-empty")])) as server:
        with pytest.raises(LLMError, match="HTTP 400.*messages must be non-empty") as info:
            make_client(server).chat(HELLO)
    assert info.value.status == 400 and len(server.requests) == 1


def test_401_says_to_check_the_key():
    with FakeChatServer(scripted([FakeReply(status=401, content="invalid api key")])) as server:
        with pytest.raises(LLMError, match="OPENAI_API_KEY"):
            make_client(server).chat(HELLO)


def test_slow_answers_time_out_and_are_retried():
    with FakeChatServer(scripted([FakeReply(content="late", delay=1.0), "fast"])) as server:
        assert make_client(server, timeout=0.2).chat(HELLO) == "fast"
    assert len(server.requests) == 2


def test_connection_errors_are_retried_then_reported():
    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ChatClient(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=2,
                        backoff=0.001, max_backoff=0.01, timeout=1.0)
    _open_clients.append(client)
    with pytest.raises(LLMError, match="3 attempt.*connection failed") as info:
        client.chat(HELLO)
    assert info.value.status is None


def test_malformed_bodies_are_retried():
    replies = [FakeReply(body="<html>oops</html>"), FakeReply(body={"choices": []}),
               FakeReply(body={"object": "chat.completion"}), "finally"]
    with FakeChatServer(scripted(replies)) as server:
        assert make_client(server).chat(HELLO) == "finally"
    assert len(server.requests) == 4


def test_malformed_bodies_give_a_clear_error_after_retries():
    with FakeChatServer(scripted([FakeReply(body="{not json")])) as server:
        with pytest.raises(LLMError, match="malformed response body"):
            make_client(server, max_retries=2).chat(HELLO)
    assert len(server.requests) == 3


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    client = ChatClient(base_url="http://127.0.0.1:9/v1", api_key=KEY, backoff=1.0, max_backoff=5.0)
    for attempt, ceiling in enumerate([1.0, 2.0, 4.0, 5.0, 5.0]):
        delays = [client._delay(attempt, None) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1
    assert client._delay(0, 3.0) == 3.0 and client._delay(0, 60.0) == 5.0


# -- concurrency -------------------------------------------------------------------------------------
def test_sync_concurrency_limit_is_shared_by_threads():
    with FakeChatServer(scripted([FakeReply(content="x", delay=0.1)])) as server:
        client = make_client(server, max_concurrency=3)
        with ThreadPoolExecutor(max_workers=10) as pool:
            assert list(pool.map(lambda _: client.chat(HELLO), range(10))) == ["x"] * 10
    assert server.max_in_flight == 3


def test_async_concurrency_limit_and_reuse_across_event_loops():
    with FakeChatServer(scripted([FakeReply(content="y", delay=0.05)])) as server:
        client = make_client(server, max_concurrency=2)

        async def many():
            try:
                return await asyncio.gather(*(client.achat(HELLO) for _ in range(8)))
            finally:
                await client.aclose()

        assert asyncio.run(many()) == ["y"] * 8
        assert asyncio.run(many()) == ["y"] * 8  # a second event loop gets its own semaphore
    assert server.max_in_flight == 2 and len(server.requests) == 16


def test_async_retries():
    replies = [FakeReply(status=429, content="x", headers={"Retry-After": "0"}),
               FakeReply(body="garbage"), "async ok"]
    with FakeChatServer(scripted(replies)) as server:
        client = make_client(server)
        assert arun(client, client.achat, HELLO) == "async ok"
    assert len(server.requests) == 3


# -- JSON replies -----------------------------------------------------------------------------------
def test_chat_json_accepts_fenced_blocks():
    fenced = 'Here you go:\n```json\n{"answer": 42, "why": "because"}\n```'
    with FakeChatServer(scripted([fenced])) as server:
        result = make_client(server).chat_json(HELLO, Answer)
    assert result == Answer(answer=42, why="because")
    assert server.requests[0].body["response_format"] == {"type": "json_object"}


def test_chat_json_repairs_invalid_then_valid():
    replies = ['{"answer": "many"}', '{"answer": 7, "why": "fixed"}']
    with FakeChatServer(scripted(replies)) as server:
        assert make_client(server).chat_json(HELLO, Answer).answer == 7
    repair = server.requests[1].messages
    assert repair[:1] == HELLO and repair[1] == {"role": "assistant", "content": '{"answer": "many"}'}
    assert repair[2]["role"] == "user" and "answer" in repair[2]["content"] and "why" in repair[2]["content"]


def test_chat_json_gives_up_naming_the_schema():
    with FakeChatServer(scripted(["not json at all"])) as server:
        with pytest.raises(LLMSchemaError, match="Answer.*2 repair.*not valid JSON"):
            make_client(server).chat_json(HELLO, Answer, repair_attempts=2)
    assert len(server.requests) == 3
    assert all(len(r.messages) == 3 for r in server.requests[1:])  # one repair turn, not a growing pile


def test_achat_json_repairs():
    replies = ["```json\n{\"answer\": 1}\n```", '{"answer": 1, "why": "ok"}']
    with FakeChatServer(scripted(replies)) as server:
        client = make_client(server)
        assert arun(client, client.achat_json, HELLO, Answer).why == "ok"


def test_extract_json_variants():
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('noise {"a": {"b": 2}} trailing') == {"a": {"b": 2}}
    with pytest.raises(ValueError, match="not valid JSON"):
        extract_json("nothing here")


# -- images ------------------------------------------------------------------------------------------
def _decode(part: dict) -> Image.Image:
    header, data = part["image_url"]["url"].split(",", 1)
    assert header.startswith("data:image/") and header.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_image_content_from_array_pil_and_path(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (12, 20, 3), dtype=np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(pixels).save(path)
    png = image_content(pixels, format="png", detail="low")
    assert png["type"] == "image_url" and png["image_url"]["detail"] == "low"
    assert np.array_equal(np.asarray(_decode(png)), pixels)  # PNG is lossless
    for source in (Image.fromarray(pixels), path, str(path)):
        decoded = _decode(image_content(source))
        assert decoded.format == "JPEG" and decoded.size == (20, 12)
    with pytest.raises(ConfigError):
        image_content(pixels, format="gif")


def test_error_messages_are_json_safe_and_one_line():
    with FakeChatServer(scripted([FakeReply(status=418, body="line one\nline two")])) as server:
        with pytest.raises(LLMError) as info:
            make_client(server).chat(HELLO)
    assert "\n" not in str(info.value)
    json.dumps(str(info.value))

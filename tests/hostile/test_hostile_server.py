"""Hostile input to ``pixelagent serve``: a real uvicorn on 127.0.0.1 over the shipped miras-tiny,
driven over real sockets.

The promise: every request gets a JSON answer with a one-line ``error`` and the right status
(400 bad input, 404 unknown session, 413 too large, 429 full), never a 500, a hang or a dropped
turn; bodies over the limit are refused before they are read whole; the server's memory stays
within the suite's ceiling (the server runs in this process, under it).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import secrets
import select
import socket
import struct
import time
import zlib

import httpx
import pytest
from PIL import Image

from pixelagent.server import ServerSettings, create_app
from pixelagent.server.testing import ServerThread

server_kind = pytest.mark.hostile("server")
MAX_UPLOAD = 256 * 1024
MAX_SESSIONS = 40


@pytest.fixture(scope="module")
def server(tiny_agent):
    settings = ServerSettings(max_upload_bytes=MAX_UPLOAD, max_sessions=MAX_SESSIONS, max_image_pixels=1024 * 1024,
                              workers=2)
    with ServerThread(create_app(settings, agent=tiny_agent)) as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http
    for session_id in _opened:  # leave room for the next case
        httpx.delete(f"{server.url}/v1/sessions/{session_id}")
    _opened.clear()


_opened: list[str] = []


@pytest.fixture(scope="module")
def png() -> bytes:
    from pixelagent.demo import demo_scenes

    buffer = io.BytesIO()
    Image.fromarray(demo_scenes(1)[0].image).save(buffer, format="PNG")
    return buffer.getvalue()


def open_session(client, png) -> str:
    response = client.post("/v1/sessions", files={"image": ("scene.png", png, "image/png")})
    assert response.status_code == 201, response.text
    _opened.append(response.json()["id"])
    return response.json()["id"]


def refused(response, status: int, *words: str) -> str:
    """The response is the JSON error we promise: ``status``, one line, each of ``words``."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    message = response.json()["error"]
    assert message and "\n" not in message and "Traceback" not in message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return message


def raw(port: int, head: str, body: bytes = b"", timeout: float = 5.0) -> tuple[int, dict]:
    """Send ``head`` (and ``body``) on a bare socket; the status and JSON of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = connection.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.partition(b"\r\n\r\n")[2] or b"{}")


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 30


def png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header claims ``width`` x ``height`` (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096, 9))
            + chunk(b"IEND", b""))


# -- sizes --------------------------------------------------------------------------------------------
@server_kind
def test_a_huge_content_length_is_refused_before_the_body(server):
    started = time.perf_counter()
    status, body = raw(server.port, "POST /v1/sessions HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                                    f"Content-Length: {10 ** 12}\n")
    assert status == 413 and "over this route's limit" in body["error"]
    assert time.perf_counter() - started < 2.0  # answered without waiting for a terabyte


@server_kind
@pytest.mark.parametrize("kind", ["multipart", "json"])
def test_a_chunked_upload_without_length_is_cut_off_at_the_limit(server, kind):
    """Chunked (no Content-Length): the answer comes once the limit is passed, not at the end."""
    content_type, start = (("multipart/form-data; boundary=xyz",
                            b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
                            b"Content-Type: image/png\r\n\r\n") if kind == "multipart"
                           else ("application/json", b'{"image": "'))
    head = (f"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    piece = b"A" * 65536
    sent, answer = 0, b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(head + b"%x\r\n%s\r\n" % (len(start), start))
        while sent < 64 << 20 and not answer:  # offer 64 MiB, 64 KiB at a time, until it answers
            try:
                connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except OSError:  # it answered and closed while we still sent
                break
            sent += len(piece)
            if select.select([connection], [], [], 0)[0]:
                answer = connection.recv(65536)
        while b"}" not in answer:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"over this route's limit" in answer
    assert sent < 16 << 20  # answered long before the end (the limit is ~350 KB; kernel buffers hold some)


@server_kind
def test_an_upload_over_max_upload_bytes(client):
    refused(client.post("/v1/sessions", files={"image": ("big.png", b"\x89PNG" + b"0" * (MAX_UPLOAD + 10))}),
            413, "max_upload_bytes")
    encoded = base64.b64encode(b"0" * (MAX_UPLOAD + 10)).decode()
    refused(client.post("/v1/sessions", json={"image": encoded}), 413)


@server_kind
@pytest.mark.parametrize("width, height", [(100_000, 100_000), (5000, 5000), (2 ** 31 - 1, 2 ** 31 - 1)])
def test_decompression_bombs(client, width, height):
    refused(client.post("/v1/sessions", files={"image": ("bomb.png", png_claiming(width, height))}),
            413, "max_image_pixels")


@server_kind
def test_a_real_bomb_within_the_header_limit_but_not_pillows_is_refused(client):
    image = Image.new("L", (4000, 4000))  # 16 MP of zeros: ~16 KB as PNG
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    assert len(buffer.getvalue()) < MAX_UPLOAD
    refused(client.post("/v1/sessions", files={"image": ("zeros.png", buffer.getvalue())}), 413, "pixels")


@server_kind
def test_an_oversized_json_body(client, server, png):
    session_id = open_session(client, png)
    body = json.dumps({"question": "x" * (2 << 20)}).encode()
    refused(client.post(f"/v1/sessions/{session_id}/ask", content=body, headers={"content-type": "application/json"}),
            413, "max_json_bytes")


# -- bytes that are not what they claim ------------------------------------------------------------------
@server_kind
@pytest.mark.parametrize("data", [b"", b"hello world", b"\x89PNG\r\n\x1a\n", b"GIF89a" + b"\0" * 20,
                                  b"\xff\xd8\xff" + b"\0" * 100, bytes(range(256)) * 4])
def test_non_image_bytes(client, data):
    response = client.post("/v1/sessions", files={"image": ("x.png", data, "image/png")})
    refused(response, 400, "empty" if not data else "not a readable image")


@server_kind
@pytest.mark.parametrize("payload, words", [
    ({"image": "not base64!"}, "not valid base64"),
    ({"image": "QUJ"}, "not valid base64"),
    ({"image": 12}, "must be a base64 string, not a number"),
    ({"image": None}, "not null"),
    ({"image": ["a"]}, "not an array"),
    ({"image": "data:image/png,abc"}, "not base64"),
    ({"picture": "QUJD"}, "no 'image' field"),
    ({"image": "QUJD", "extra": 1}, "unknown field"),
    ([1, 2], "must be a JSON object"),
    ("QUJD", "must be a JSON object"),
    ({"image": base64.b64encode(b"plain").decode()}, "not a readable image"),
])
def test_bad_base64_and_wrong_shapes(client, payload, words):
    refused(client.post("/v1/sessions", json=payload), 400, words)


@server_kind
@pytest.mark.parametrize("body", [b"{", b'{"question": }', b'{"question": "a"', b"\xff\xfe\x00garbage", b"[" * 200_000,
                                  b'{"question": "a"} trailing', b"NaN", b" ", b'{"question": "\\x"}'])
def test_malformed_json(client, png, body):
    session_id = open_session(client, png)
    message = refused(client.post(f"/v1/sessions/{session_id}/ask", content=body,
                                  headers={"content-type": "application/json"}), 400)
    assert "JSON" in message or "json" in message


@server_kind
def test_a_100k_character_question_is_refused_fast(client, png):
    session_id = open_session(client, png)
    started = time.perf_counter()
    refused(client.post(f"/v1/sessions/{session_id}/ask", json={"question": "x" * 100_000}), 400,
            "100,000 characters", "limits.max_question_chars")
    assert time.perf_counter() - started < 1.0
    assert client.get(f"/v1/sessions/{session_id}").json()["turns"] == 0


@server_kind
@pytest.mark.parametrize("escaped", ["\\ud800", "hi \\udcff", "\\udfff\\ud800", "\\ud83d"])
def test_lone_surrogates_as_json_escapes(client, png, escaped):
    session_id = open_session(client, png)
    body = ('{"question": "%s"}' % escaped).encode("ascii")
    refused(client.post(f"/v1/sessions/{session_id}/ask", content=body, headers={"content-type": "application/json"}),
            400, "lone surrogate")
    assert client.get(f"/v1/sessions/{session_id}").json()["turns"] == 0


@server_kind
@pytest.mark.parametrize("question", [None, 5, 1.5, True, [], ["a"], {}, {"text": "a"}])
def test_questions_of_the_wrong_type(client, png, question):
    session_id = open_session(client, png)
    refused(client.post(f"/v1/sessions/{session_id}/ask", json={"question": question}), 400, "must be a str")


@server_kind
def test_a_wrong_content_type_and_extra_fields(client, png):
    session_id = open_session(client, png)
    refused(client.post(f"/v1/sessions/{session_id}/ask", content=b"question=hi",
                        headers={"content-type": "application/x-www-form-urlencoded"}), 415)
    refused(client.post(f"/v1/sessions/{session_id}/ask", json={"question": "hi", "admin": True}), 400, "unknown field")
    refused(client.post("/v1/sessions", files={"photo": ("x.png", b"abc")}), 400, "no file field 'image'")


# -- ids ------------------------------------------------------------------------------------------------
@server_kind
def test_ids_are_unguessable(client, png):
    ids = {open_session(client, png) for _ in range(8)}
    assert len(ids) == 8
    for session_id in ids:
        assert len(session_id) >= 22 and set(session_id) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@server_kind
@pytest.mark.parametrize("session_id", [secrets.token_urlsafe(16), "1", "0" * 22, "a" * 10_000, "null", "%00",
                                        "%ff%fe", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%5c..%5cwindows",
                                        "%E2%80%AE", "%ED%A0%80", "%F0%9F%98%80"])
def test_unknown_and_guessed_ids_are_404(client, session_id):
    for method, path in [("GET", ""), ("POST", "/ask"), ("DELETE", ""), ("GET", "/turns/1/overlay.png"),
                         ("POST", "/reset")]:
        kwargs = {"json": {"question": "hi"}} if path == "/ask" else {}
        response = client.request(method, f"/v1/sessions/{session_id}{path}", **kwargs)
        message = refused(response, 404)
        assert len(message) < 400  # a long id is not echoed back whole


@server_kind
@pytest.mark.parametrize("path", ["/v1/sessions/../../etc/passwd", "/v1/sessions/a/b/c/ask", "/v1/sessions//ask",
                                  "/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e/server/app.py",
                                  "/v1/samples/..%2f..%2fetc.png"])
def test_path_tricks(server, path):
    status, body = raw(server.port, f"GET {path} HTTP/1.1\nHost: x\nConnection: close\n")
    assert status in (400, 404), (status, body)
    assert "\n" not in body.get("error", "x") and "import" not in json.dumps(body)


@server_kind
@pytest.mark.parametrize("turn", ["0", "-1", "3", "99999999999999999999", "abc", "1.5"])
def test_turn_numbers_out_of_range_or_not_numbers(client, png, turn):
    session_id = open_session(client, png)
    response = client.get(f"/v1/sessions/{session_id}/turns/{turn}/overlay.png")
    assert response.status_code in (400, 404) and "\n" not in response.json()["error"]


# -- many clients ---------------------------------------------------------------------------------------
@server_kind
def test_sessions_past_the_maximum_are_refused_then_allowed(client, png):
    ids = [open_session(client, png) for _ in range(MAX_SESSIONS)]
    for _ in range(3):
        response = client.post("/v1/sessions", files={"image": ("s.png", png)})
        refused(response, 429, "max_sessions")
        assert response.headers["retry-after"] == "1"
    assert client.delete(f"/v1/sessions/{ids[0]}").status_code == 204
    _opened.remove(ids[0])
    open_session(client, png)


@server_kind(timeout=90)
def test_two_clients_on_one_session_are_serialised_and_none_is_lost(server, png):
    questions = {"a": ["Segment the orange book in this image.", "And the title on it?", "What colour is it?"],
                 "b": ["Now just its title panel.", "Now segment the black book.", "Where is it?"]}

    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            session_id = (await http.post("/v1/sessions", files={"image": ("s.png", png)})).json()["id"]
            _opened.append(session_id)

            async def talk(name):
                return [(await http.post(f"/v1/sessions/{session_id}/ask", json={"question": q})).json()
                        for q in questions[name]]

            replies = await asyncio.gather(talk("a"), talk("b"))
            document = (await http.get(f"/v1/sessions/{session_id}")).json()
            await http.delete(f"/v1/sessions/{session_id}")
            return replies, document

    replies, document = asyncio.run(main())
    numbers = sorted(r["turn"] for client_replies in replies for r in client_replies)
    assert numbers == [1, 2, 3, 4, 5, 6]
    history = [t["question"] for t in document["history"]]
    assert sorted(history) == sorted(questions["a"] + questions["b"])
    for name, client_replies in zip("ab", replies):  # each client's turns in its own order
        assert [history[r["turn"] - 1] for r in client_replies] == questions[name]


@server_kind(timeout=180)
def test_32_clients_at_once(server, png):
    async def client_run(http, index):
        created = await http.post("/v1/sessions", files={"image": (f"s{index}.png", png)})
        assert created.status_code == 201, created.text
        session_id = created.json()["id"]
        turns = []
        for question in ("Segment the orange book in this image.", "Now just its title panel."):
            response = await http.post(f"/v1/sessions/{session_id}/ask", json={"question": question})
            assert response.status_code == 200, response.text
            turns.append(response.json()["turn"])
        document = (await http.get(f"/v1/sessions/{session_id}")).json()
        assert (await http.delete(f"/v1/sessions/{session_id}")).status_code == 204
        return turns, document["turns"]

    async def main():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=150, limits=limits) as http:
            return await asyncio.gather(*(client_run(http, i) for i in range(32)))

    results = asyncio.run(main())
    assert results == [([1, 2], 2)] * 32
    assert httpx.get(server.url + "/health").json()["sessions"] == 0

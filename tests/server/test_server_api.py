"""The HTTP API end to end: real uvicorn on 127.0.0.1, real HTTP through httpx, the shipped miras-tiny."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from pixelagent.logs import TurnLog
from pixelagent.mask import Mask
from pixelagent.schema import SessionRecord, TurnRecord, session_record
from pixelagent.server.store import REENCODED_NOTE


@pytest.fixture(scope="module")
def server(start_server):
    return start_server()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def open_session(client, scene_png) -> str:
    response = client.post("/v1/sessions", files={"image": ("scene.png", scene_png, "image/png")})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_health_presets_and_openapi(client):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["preset"] == "miras-tiny"
    presets = client.get("/v1/presets").json()
    assert presets["loaded"] == "miras-tiny" and "miras-tiny" in {p["name"] for p in presets["presets"]}
    schema = client.get("/openapi.json").json()
    assert {"/v1/sessions", "/v1/sessions/{session_id}/ask", "/v1/sessions/{session_id}/turns/{k}/overlay.png",
            "/health", "/v1/presets"} <= set(schema["paths"])
    assert "TurnRecord" in schema["components"]["schemas"]
    ask = schema["paths"]["/v1/sessions/{session_id}/ask"]["post"]
    assert ask["requestBody"]["content"]["application/json"]["schema"]["required"] == ["question"]


def test_a_turn_over_http_is_the_turn_a_local_session_gives(client, scene_png, tiny_agent, tiny_scene):
    session_id = open_session(client, scene_png)
    local = tiny_agent.session(tiny_scene.image)
    for index, question in enumerate(tiny_scene.requests[:2], start=1):
        response = client.post(f"/v1/sessions/{session_id}/ask", json={"question": question})
        assert response.status_code == 200, response.text
        remote = TurnRecord.model_validate(response.json())
        local.ask(question)
        expected = session_record(local).history[-1]
        assert remote.schema_version == 1 and remote.turn == index
        assert remote.model_dump(exclude={"time"}) == expected.model_dump(exclude={"time"})
    document = client.get(f"/v1/sessions/{session_id}").json()
    record = SessionRecord.model_validate(document)
    assert document["id"] == session_id and document["turns"] == 2 and record.image_size == (256, 256)
    assert [f.relation for f in record.intent.focuses] == ["first", "refine"]
    assert record.reply == record.history[-1]
    assert client.get(f"/v1/sessions/{session_id}/turns/2").json() == document["history"][1]


def test_json_base64_upload_and_a_data_url(client, scene_png):
    encoded = base64.b64encode(scene_png).decode("ascii")
    for image in (encoded, "data:image/png;base64," + encoded):
        response = client.post("/v1/sessions", json={"image": image, "name": "scene.png"})
        assert response.status_code == 201 and response.json()["image_size"] == [256, 256]


def test_overlay_and_mask_pngs(client, scene_png, tiny_scene):
    session_id = open_session(client, scene_png)
    turn = client.post(f"/v1/sessions/{session_id}/ask", json={"question": tiny_scene.requests[0]}).json()
    mask = Mask.from_rle(turn["targets"][0]["mask"])
    overlay = np.asarray(Image.open(io.BytesIO(client.get(f"/v1/sessions/{session_id}/turns/1/overlay.png").content)))
    assert overlay.shape == tiny_scene.image.shape
    assert (overlay[~mask.array] == tiny_scene.image[~mask.array]).all()
    assert (overlay[mask.array] != tiny_scene.image[mask.array]).any()
    response = client.get(f"/v1/sessions/{session_id}/turns/1/mask.png")
    assert response.headers["content-type"] == "image/png" and "turn01_mask.png" in response.headers["content-disposition"]
    assert Mask.from_png(response.content) == mask
    missing = client.get(f"/v1/sessions/{session_id}/turns/2/overlay.png")
    assert missing.status_code == 404 and "no turn 2" in missing.json()["error"]


def test_reset_and_delete(client, scene_png, tiny_scene):
    session_id = open_session(client, scene_png)
    client.post(f"/v1/sessions/{session_id}/ask", json={"question": tiny_scene.requests[0]})
    assert client.post(f"/v1/sessions/{session_id}/reset").status_code == 200
    assert client.get(f"/v1/sessions/{session_id}").json()["history"] == []
    assert client.post(f"/v1/sessions/{session_id}/ask", json={"question": "hello"}).json()["turn"] == 1
    assert client.delete(f"/v1/sessions/{session_id}").status_code == 204
    for response in (client.get(f"/v1/sessions/{session_id}"), client.delete(f"/v1/sessions/{session_id}"),
                     client.post(f"/v1/sessions/{session_id}/ask", json={"question": "hello"})):
        assert response.status_code == 404 and response.json()["type"] == "SessionNotFound"
        assert "POST /v1/sessions to open one" in response.json()["error"]


def test_errors_are_json_with_one_line_and_the_right_status(client, scene_png):
    session_id = open_session(client, scene_png)
    cases = [
        (client.post(f"/v1/sessions/{session_id}/ask", json={"question": ""}), 400, "the question is empty"),
        (client.post(f"/v1/sessions/{session_id}/ask", json={"question": 7}), 400, "a question must be a str"),
        (client.post(f"/v1/sessions/{session_id}/ask", content=b"{", headers={"content-type": "application/json"}),
         400, "not valid JSON"),
        # valid JSON that Python refuses to read: an integer of more than 4300 digits
        (client.post(f"/v1/sessions/{session_id}/ask", content=b'{"question": ' + b"1" * 5000 + b"}",
                     headers={"content-type": "application/json"}), 400, "cannot be read"),
        (client.post("/v1/sessions", content=b'{"image": ' + b"9" * 5000 + b"}",
                     headers={"content-type": "application/json"}), 400, "cannot be read"),
        (client.post("/v1/sessions", files={"image": ("x.txt", b"plain text")}), 400, "not a readable image"),
        (client.post("/v1/sessions", content=b"x", headers={"content-type": "image/png"}), 415,
         "reads multipart/form-data or JSON, not image/png"),
        (client.post(f"/v1/sessions/{session_id}/ask", content=b"x", headers={"content-type": "text/csv"}), 415,
         "reads JSON, not text/csv"),
        (client.get("/v1/nothing"), 404, "no route GET /v1/nothing"),
        (client.put("/health"), 405, "not allowed"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert words in body["error"] and "\n" not in body["error"] and body["type"]


def test_evicted_sessions_encode_again_and_say_so(start_server, scene_png, tiny_scene):
    server = start_server(max_encoded_sessions=1)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        first, second = open_session(client, scene_png), open_session(client, scene_png)
        ask = lambda session_id, question: client.post(f"/v1/sessions/{session_id}/ask", json={"question": question}).json()
        assert ask(first, tiny_scene.requests[0])["notes"] == []
        assert ask(second, tiny_scene.requests[0])["notes"] == []  # first's encodings dropped here
        assert client.get("/health").json()["encoded_sessions"] == 1
        again = ask(first, tiny_scene.requests[1])
        assert REENCODED_NOTE in again["notes"] and again["turn"] == 2
        assert again["intent"]["relation"] == "refine"  # the dialogue survived the eviction
        assert REENCODED_NOTE in client.get(f"/v1/sessions/{first}").json()["history"][1]["notes"]
        assert ask(first, tiny_scene.requests[2])["notes"] == []


def test_idle_sessions_expire_and_the_maximum_holds(start_server, scene_png):
    server = start_server(idle_expiry_s=0.3, max_sessions=2)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        ids = [open_session(client, scene_png) for _ in range(2)]
        full = client.post("/v1/sessions", files={"image": ("s.png", scene_png)})
        assert full.status_code == 429 and "max_sessions" in full.json()["error"]
        time.sleep(0.8)
        assert all(client.get(f"/v1/sessions/{i}").status_code == 404 for i in ids)
        assert client.get("/health").json()["sessions"] == 0
        open_session(client, scene_png)


def test_model_work_never_blocks_the_event_loop(server, scene_png, tiny_scene):
    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            ids = [(await client.post("/v1/sessions", files={"image": ("s.png", scene_png)})).json()["id"]
                   for _ in range(4)]
            turns = [asyncio.create_task(client.post(f"/v1/sessions/{i}/ask", json={"question": q}))
                     for i in ids for q in tiny_scene.requests[:2]]
            await asyncio.sleep(0.05)
            probes = []
            while not all(t.done() for t in turns):
                started = time.perf_counter()
                assert (await client.get("/health")).status_code == 200
                probes.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)
            replies = [(await t).json() for t in turns]
            return ids, replies, probes
    ids, replies, probes = asyncio.run(main())
    assert probes and max(probes) < 0.25, probes  # a turn takes ~0.1-0.5 s; the loop answered meanwhile
    by_session = {}
    for (session_id, question), reply in zip([(i, q) for i in ids for q in tiny_scene.requests[:2]], replies):
        by_session.setdefault(session_id, []).append((reply["turn"], reply["question"]))
    for turns in by_session.values():  # serialised per session, first come first served
        assert turns == [(1, tiny_scene.requests[0]), (2, tiny_scene.requests[1])]


def test_turns_go_to_the_log_under_a_digest_of_the_id(start_server, scene_png, tiny_scene, tmp_path):
    server = start_server(log=str(tmp_path / "log.db"))
    with httpx.Client(base_url=server.url, timeout=60) as client:
        session_id = open_session(client, scene_png)
        client.post(f"/v1/sessions/{session_id}/ask", json={"question": tiny_scene.requests[0]})
    with TurnLog(tmp_path / "log.db") as log:
        (entry,) = log.entries()
    assert entry["source"] == "serve" and entry["image"] == "scene.png" and entry["preset"] == "miras-tiny"
    assert entry["conversation"] != session_id and session_id not in str(entry)
    assert entry["turn"]["targets"][0]["mask"]["size"] == [256, 256]


def test_a_model_that_fails_to_load_is_503_with_the_reason():
    from pixelagent.server import ServerSettings, create_app
    from pixelagent.server.testing import ServerThread

    with ServerThread(create_app(ServerSettings(preset="no-such-preset"))) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            deadline = time.monotonic() + 20
            while client.get("/health").json()["status"] == "loading" and time.monotonic() < deadline:
                time.sleep(0.05)
            health = client.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "failed"
            assert "unknown preset 'no-such-preset'" in health.json()["error"]
            response = client.post("/v1/sessions", files={"image": ("s.png", b"x")})
            assert response.status_code == 503 and response.headers["retry-after"] == "1"
            assert response.json()["error"].startswith("the model failed to load: unknown preset")


def test_a_client_hanging_up_mid_upload_leaves_no_traceback_and_the_server_serving(server, scene_png):
    import logging
    import socket

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    collect = Collect()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(collect)
    try:
        host, port = server.url.removeprefix("http://").split(":")
        for content_type in ("multipart/form-data; boundary=xyz", "application/json"):
            with socket.create_connection((host, int(port))) as raw:
                raw.sendall(f"POST /v1/sessions HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                            f"Content-Length: 100000\r\n\r\n".encode() + b"--xyz\r\n" + b"a" * 1000)
                time.sleep(0.3)  # the route is reading the body when the client goes
        time.sleep(0.5)
        assert httpx.get(f"{server.url}/health").status_code == 200
    finally:
        logger.removeHandler(collect)
    assert not [line for line in collect.lines if "Exception in ASGI application" in line], collect.lines


def test_an_ask_retried_with_its_idempotency_key_returns_the_turn_already_made(client, scene_png, tiny_scene):
    session_id = open_session(client, scene_png)
    ask = lambda question, key: client.post(f"/v1/sessions/{session_id}/ask", json={"question": question},
                                            headers={"Idempotency-Key": key})
    first = ask(tiny_scene.requests[0], "k-1")
    again = ask(tiny_scene.requests[0], "k-1")
    assert first.status_code == again.status_code == 200 and again.json() == first.json()
    assert len(client.get(f"/v1/sessions/{session_id}").json()["history"]) == 1
    assert ask(tiny_scene.requests[1], "k-2").json()["turn"] == 2
    reused = ask(tiny_scene.requests[2], "k-1")
    assert reused.status_code == 409 and "use a new key for each new question" in reused.json()["error"]
    for bad in ("é" * 3, "x" * 201, "a\x7fb"):
        response = ask(tiny_scene.requests[2], bad) if bad.isascii() else client.post(
            f"/v1/sessions/{session_id}/ask", json={"question": "hi"}, headers={"Idempotency-Key": bad.encode()})
        assert response.status_code == 400 and "Idempotency-Key" in response.json()["error"]
    assert client.post(f"/v1/sessions/{session_id}/reset").status_code == 200
    assert ask(tiny_scene.requests[0], "k-1").json()["turn"] == 1  # reset forgot the keys with the turns


def test_a_client_that_hung_up_before_its_answer_retries_without_a_second_turn(server, client, scene_png, tiny_scene):
    import socket
    import threading

    session_id = open_session(client, scene_png)
    body = json.dumps({"question": tiny_scene.requests[0]}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as raw:  # sends the whole ask, then goes away
        raw.sendall(f"POST /v1/sessions/{session_id}/ask HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
                    f"\r\nIdempotency-Key: lost-1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    results = []

    def retry():  # two retries at once: both wait for the first ask and get its turn
        with httpx.Client(base_url=server.url, timeout=60) as http:
            results.append(http.post(f"/v1/sessions/{session_id}/ask", json={"question": tiny_scene.requests[0]},
                                     headers={"Idempotency-Key": "lost-1"}).json())

    threads = [threading.Thread(target=retry) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r["turn"] for r in results] == [1, 1] and results[0] == results[1]
    assert len(client.get(f"/v1/sessions/{session_id}").json()["history"]) == 1


def test_the_client_resends_an_ask_whose_answer_was_lost_and_gets_one_turn(server, scene_png, tiny_scene, tmp_path):
    from pixelagent.server.client import ServerClient

    image = tmp_path / "scene.png"
    image.write_bytes(scene_png)
    client = ServerClient(server.url)
    conversation = client.open(image)
    real, calls = client._http.request, []

    def lose_the_first_answer(method, path, **kwargs):
        calls.append((method, path, kwargs.get("headers")))
        response = real(method, path, **kwargs)  # the server did the work...
        if path.endswith("/ask") and len(calls) == 1:
            raise httpx.ReadError("connection reset by peer")  # ...and the answer never came
        return response

    client._http.request = lose_the_first_answer
    try:
        record = conversation.ask(tiny_scene.requests[0])
        assert record.turn == 1 and len(calls) == 2 and calls[0][2] == calls[1][2]  # the same key twice
        assert len(conversation.record().history) == 1
        assert conversation.ask(tiny_scene.requests[1]).turn == 2  # a new ask: a new key
        keys = [headers["Idempotency-Key"] for _, path, headers in calls if path.endswith("/ask")]
        assert len(keys) == 3 and keys[0] == keys[1] != keys[2]
    finally:
        client._http.request = real
        conversation.close()
        client.close()

"""The HTTP API and the web page: ``create_app(settings)`` is an ASGI app (FastAPI) that loads
the agent once and keeps sessions.

Routes (JSON unless said; the OpenAPI schema is at ``/openapi.json``):

- ``GET /`` the web page; ``GET /health`` 200 once the model is loaded, 503 before;
  ``GET /v1/presets``; ``GET /v1/samples`` (+ ``/v1/samples/{name}.png``) images to try;
- ``POST /v1/sessions`` an image (multipart field ``image``, or JSON ``{"image": "<base64>"}``)
  → 201 ``{"id", "image_size": [H, W], ...}``;
- ``POST /v1/sessions/{id}/ask`` ``{"question": ...}`` → the turn, as
  :class:`pixelagent.schema.TurnRecord` (what ``segment --json`` gives per turn); with an
  ``Idempotency-Key`` header, asking again with the same key (a retry after a dropped
  connection) returns the turn already made instead of making another;
- ``GET /v1/sessions/{id}`` history and intent; ``POST /v1/sessions/{id}/reset``;
  ``GET /v1/sessions/{id}/turns/{k}`` (+ ``/overlay.png``, ``/mask.png``); ``DELETE /v1/sessions/{id}``.

Errors are ``{"error": "<one line>", "type": "<class>"}`` with the status of
:func:`pixelagent.server.errors.status_of`: 400 bad input, 404 unknown session or turn, 413 too
large, 409 an Idempotency-Key reused for another question, 415 wrong content type, 429 too many
sessions, 503 model not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import logging
import threading
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from pixelagent import __version__
from pixelagent.errors import ImageError, PixelAgentError
from pixelagent.limits import check_question
from pixelagent.results import Turn
from pixelagent.schema import SessionRecord, TurnRecord, session_record, turn_record
from pixelagent.server import body as bodies
from pixelagent.server.errors import BadRequest, Conflict, NotReady, PayloadTooLarge, SessionNotFound, status_of
from pixelagent.server.render import PALETTE, hex_colour, mask_png, overlay_png
from pixelagent.server.runner import ThreadRunner, TurnRunner
from pixelagent.server.settings import ServerSettings
from pixelagent.server.store import REENCODED_NOTE, Entry, SessionStore
from pixelagent.session import Session

if TYPE_CHECKING:
    import numpy as np

    from pixelagent.agent import Agent
    from pixelagent.logs import TurnLog

logger = logging.getLogger("pixelagent.server")
STATIC = Path(__file__).with_name("static")
ASK_EXAMPLE = '{"question": "What is on the label?"}'
IMAGE_EXAMPLE = '{"image": "<base64 of the image file>"}'


# -- the documents the API returns (besides the schema's turn and session records) ------------------
class SessionCreated(BaseModel):
    id: str
    image_size: tuple[int, int]
    preset: str
    idle_expiry_s: float


class ServerSessionRecord(SessionRecord):
    """A session as the server holds it: the session record plus its id and bookkeeping."""

    id: str
    preset: str
    name: str
    created: datetime
    turns: int


class AskRequest(BaseModel):
    """The body of ``POST /v1/sessions/{id}/ask``."""

    question: str


class ImageUpload(BaseModel):
    """The JSON form of ``POST /v1/sessions`` (or send multipart/form-data with a file field ``image``)."""

    image: str
    name: Optional[str] = None


def _request_body(model: type[BaseModel], multipart: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": model.model_json_schema()}}
    if multipart:
        content["multipart/form-data"] = {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary"}}}}
    return {"requestBody": {"required": True, "content": content}}


# -- the server's state ---------------------------------------------------------------------------
class ServerState:
    """The agent (loaded in the background unless given), the sessions, the runner and the log."""

    def __init__(self, settings: ServerSettings, agent: Agent | None, runner: TurnRunner | None) -> None:
        self.settings = settings
        self.agent = agent
        self.load_error: str | None = None
        self.store = SessionStore(settings.max_sessions, settings.idle_expiry_s, settings.max_encoded_sessions)
        self.runner: TurnRunner = runner or ThreadRunner(settings.workers)
        self.log: TurnLog | None = None
        self._samples: list[Any] | None = None
        self._sample_lock = threading.Lock()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        if self.settings.log:
            from pixelagent.logs import TurnLog

            self.log = TurnLog(self.settings.log)
        if self.agent is None:
            threading.Thread(target=self._load, name="pixelagent-load", daemon=True).start()
        sweeper = asyncio.create_task(self._sweep())
        try:
            yield
        finally:
            sweeper.cancel()
            close = getattr(self.runner, "close", None)
            if close is not None:
                close()
            if self.log is not None:
                self.log.close()

    def _load(self) -> None:
        from pixelagent.agent import Agent

        overrides = {"device": self.settings.device} if self.settings.device else {}
        try:
            agent = Agent(self.settings.preset, **overrides)
        except Exception as exc:  # the server stays up and says why on /health
            self.load_error = f"{exc}" if isinstance(exc, PixelAgentError) else f"unexpected {type(exc).__name__}: {exc}"
            logger.error("pixelagent: the model failed to load: %s", self.load_error)
            return
        self.agent = agent
        logger.info("pixelagent: %s loaded; ready", agent.preset.name)

    async def _sweep(self) -> None:
        interval = min(max(self.settings.idle_expiry_s / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(interval)
            gone = self.store.expire()
            if gone:
                logger.info("pixelagent: %d idle session(s) expired", gone)

    def require_agent(self) -> Agent:
        agent = self.agent
        if agent is not None:
            return agent
        if self.load_error:
            raise NotReady(f"the model failed to load: {self.load_error}; fix it and restart the server")
        name = self.settings.preset or "the default model"
        raise NotReady(f"the model ({name}) is still loading; retry when GET /health answers 200")

    @contextlib.asynccontextmanager
    async def using(self, session_id: str) -> AsyncIterator[Entry]:
        """The entry of ``session_id`` with its turn lock held (so it reads a finished state)."""
        entry = self.store.get(session_id)
        entry.busy += 1
        try:
            async with entry.lock:
                yield entry
        finally:
            entry.busy -= 1
            self.store.touch(entry)

    def samples(self) -> list[Any]:
        """The demo's PRIST-Synth scenes, made on first use (the shipped model knows such scenes)."""
        with self._sample_lock:
            if self._samples is None:
                from pixelagent.demo import demo_scenes

                self._samples = demo_scenes(3)
            return self._samples


# -- the app ------------------------------------------------------------------------------------------
def create_app(settings: ServerSettings | None = None, *, agent: Agent | None = None,
               runner: TurnRunner | None = None) -> FastAPI:
    """The ASGI app. With ``agent`` it is ready at once; else it loads ``settings.preset`` in the
    background on start-up (``/health`` says 503 until then). ``runner`` replaces the
    :class:`~pixelagent.server.runner.ThreadRunner` (the batching seam)."""
    settings = settings or ServerSettings()
    state = ServerState(settings, agent, runner)
    app = FastAPI(title="pixelagent", version=__version__, lifespan=state.lifespan, docs_url=None, redoc_url=None,
                  description="Pixel-level reasoning segmentation through multi-turn conversation.")
    app.state.pixelagent = state
    app.add_middleware(bodies.BodyLimit, limit_for=functools.partial(_body_limit, settings))
    _add_error_handlers(app)
    _add_meta_routes(app, state)
    _add_session_routes(app, state)
    _add_turn_routes(app, state)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _body_limit(settings: ServerSettings, scope: dict[str, Any]) -> int:
    if scope.get("method") == "POST" and scope.get("path", "").rstrip("/") == "/v1/sessions":
        return settings.max_session_body_bytes
    return settings.max_json_bytes


def error_response(error: PixelAgentError) -> JSONResponse:
    status = status_of(error)
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return JSONResponse({"error": str(error).replace("\n", " "), "type": type(error).__name__},
                        status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    from starlette.requests import ClientDisconnect

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, error: ClientDisconnect) -> Response:
        # The client hung up while sending its body: nobody will read an answer, and it is no
        # server fault (uvicorn would log a traceback for every one). 499 as nginx logs it.
        logger.info("pixelagent: %s %s: the client disconnected before sending its whole body",
                    request.method, request.url.path[:200])
        return Response(status_code=499)

    @app.exception_handler(PixelAgentError)
    async def engine_error(request: Request, error: PixelAgentError) -> JSONResponse:
        if status_of(error) >= 500:
            logger.error("pixelagent: %s %s failed: %s", request.method, request.url.path, error)
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:3])
        return error_response(BadRequest(f"invalid request: {problems}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = str(error.detail)
        if error.status_code == 404:
            message = f"no route {request.method} {request.url.path[:200]}; see /openapi.json for the API"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path[:200]}; see /openapi.json"
        return JSONResponse({"error": message, "type": "HTTPError"}, status_code=error.status_code,
                            headers=getattr(error, "headers", None))


def _add_meta_routes(app: FastAPI, state: ServerState) -> None:
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    config = json.dumps({"palette": [hex_colour(c) for c in PALETTE]})
    page = page.replace("__PIXELAGENT_CONFIG__", config)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health", summary="200 once the model is loaded; 503 while it loads or if it failed")
    async def health() -> JSONResponse:
        agent = state.agent
        if agent is None:
            status = "failed" if state.load_error else "loading"
            return JSONResponse({"status": status, "error": state.load_error, "version": __version__},
                                status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"status": "ok", "preset": agent.preset.name, "version": __version__,
                             "sessions": len(state.store), "encoded_sessions": state.store.encoded,
                             "max_sessions": state.settings.max_sessions, "workers": state.settings.workers})

    @app.get("/v1/presets", summary="The registered presets and the one this server runs")
    async def presets() -> dict[str, Any]:
        from pixelagent.registry import get_registry

        listing = [{"name": s.name, "aliases": list(s.aliases), "plugin": s.plugin,
                    "description": s.preset.description} for s in get_registry().presets()]
        loaded = state.agent.preset.name if state.agent is not None else None
        return {"loaded": loaded, "presets": listing}

    @app.get("/v1/samples", summary="Images to try (PRIST-Synth scenes the shipped model never saw)")
    async def samples() -> list[dict[str, Any]]:
        scenes = await state.runner.call(state.samples)
        return [{"name": s.name, "url": f"/v1/samples/{s.name}.png", "image_size": list(s.image.shape[:2]),
                 "questions": list(s.requests)} for s in scenes]

    @app.get("/v1/samples/{name}.png", response_class=Response, summary="A sample image")
    async def sample_png(name: str) -> Response:
        scenes = {s.name: s for s in await state.runner.call(state.samples)}
        if name not in scenes:
            raise SessionNotFound(f"no sample {name[:40]!r}; GET /v1/samples lists them")
        return Response(await state.runner.call(_png_of, scenes[name].image), media_type="image/png")


def _add_session_routes(app: FastAPI, state: ServerState) -> None:
    @app.post("/v1/sessions", status_code=201, response_model=SessionCreated,
              openapi_extra=_request_body(ImageUpload, multipart=True),
              summary="Open a session about an image (multipart field image, or JSON base64)")
    async def create_session(request: Request) -> JSONResponse:
        agent = state.require_agent()
        data, name = await _read_image(request, state.settings)
        pixels = await state.runner.call(_decode_upload, data, state.settings.max_image_pixels)
        entry = state.store.add(Session(agent, pixels), name)
        created = SessionCreated(id=entry.id, image_size=entry.session.image_size, preset=agent.preset.name,
                                 idle_expiry_s=state.settings.idle_expiry_s)
        return JSONResponse(created.model_dump(mode="json"), status_code=201)

    @app.get("/v1/sessions/{session_id}", response_model=ServerSessionRecord,
             summary="The session: every turn (masks as COCO RLE) and the intent")
    async def get_session(session_id: str) -> Response:
        async with state.using(session_id) as entry:
            record = session_record(entry.session, entry.notes)
        agent = entry.session.agent
        document = ServerSessionRecord(**dict(record), id=entry.id, preset=agent.preset.name, name=entry.name,
                                       created=entry.created, turns=len(record.history))
        return _json(document)

    @app.post("/v1/sessions/{session_id}/reset", response_model=SessionCreated,
              summary="Forget the dialogue and the intent; keep the image and its encodings")
    async def reset_session(session_id: str) -> JSONResponse:
        async with state.using(session_id) as entry:
            entry.session.reset()
            entry.notes.clear()
            entry.asked.clear()  # the turns those keys made are gone
        created = SessionCreated(id=entry.id, image_size=entry.session.image_size,
                                 preset=entry.session.agent.preset.name, idle_expiry_s=state.settings.idle_expiry_s)
        return JSONResponse(created.model_dump(mode="json"))

    @app.delete("/v1/sessions/{session_id}", status_code=204, summary="Delete the session")
    async def delete_session(session_id: str) -> Response:
        state.store.remove(session_id)
        return Response(status_code=204)


def _add_turn_routes(app: FastAPI, state: ServerState) -> None:
    @app.post("/v1/sessions/{session_id}/ask", response_model=TurnRecord, openapi_extra=_request_body(AskRequest),
              summary="Ask the next question; the reply with its targets (COCO RLE) and intent step")
    async def ask(session_id: str, request: Request) -> Response:
        agent = state.require_agent()
        bodies.check_json_content_type(request.headers)
        payload = bodies.json_object(bodies.parse_json(await request.body(), ASK_EXAMPLE),
                                     {"question"}, {"question"}, ASK_EXAMPLE)
        question = check_question(payload["question"], agent.preset.limits)  # refused before queueing
        key = _idempotency_key(request.headers)
        async with state.using(session_id) as entry:
            if key is not None and key in entry.asked:  # a retry of an ask that already made its turn
                return _json(_repeated_ask(entry, key, question))
            notes = [REENCODED_NOTE] if entry.evicted else []
            turn, focus = await state.runner.ask(entry.session, question)
            if notes:
                entry.notes[turn.index] = notes
            if key is not None:
                entry.remember_ask(key, turn.index, question)
            state.store.used(entry)
        record = TurnRecord.of(turn, focus, notes)
        if state.log is not None:
            await state.runner.call(functools.partial(
                state.log.record, record, conversation=entry.log_id, source="serve", preset=agent.preset.name,
                image=entry.name or "upload"))
        return _json(record)

    @app.get("/v1/sessions/{session_id}/turns/{k}", response_model=TurnRecord, summary="Turn k (from 1)")
    async def get_turn(session_id: str, k: int) -> Response:
        async with state.using(session_id) as entry:
            turn = _turn(entry, k)
            record = turn_record(turn, entry.session.intent, entry.notes.get(k, ()))
        return _json(record)

    @app.get("/v1/sessions/{session_id}/turns/{k}/overlay.png", response_class=Response,
             summary="The image with turn k's targets drawn over it, one colour each")
    async def overlay(session_id: str, k: int) -> Response:
        async with state.using(session_id) as entry:
            turn = _turn(entry, k, with_target=True)
        data = await state.runner.call(overlay_png, entry.session.image, turn)
        return Response(data, media_type="image/png")

    @app.get("/v1/sessions/{session_id}/turns/{k}/mask.png", response_class=Response,
             summary="Turn k's mask (the union of its targets) as a 1-bit PNG")
    async def mask(session_id: str, k: int) -> Response:
        async with state.using(session_id) as entry:
            turn = _turn(entry, k, with_target=True)
        data = await state.runner.call(mask_png, turn)
        headers = {"Content-Disposition": f'attachment; filename="turn{k:02d}_mask.png"'}
        return Response(data, media_type="image/png", headers=headers)


def _turn(entry: Entry, k: int, with_target: bool = False) -> Turn:
    history = entry.session.history
    if not 1 <= k <= len(history):
        raise SessionNotFound(f"this session has {len(history)} turn(s); there is no turn {k} (turns count from 1)")
    turn = history[k - 1]
    if with_target and turn.reply.no_target:
        raise SessionNotFound(f"turn {k} has no target, so there is no mask to draw")
    return turn


def _idempotency_key(headers: Any) -> str | None:
    """The ask's ``Idempotency-Key`` header (as Stripe and the IETF draft name it), if sent."""
    key = headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= 200 or not key.isascii() or not key.isprintable():
        raise BadRequest("the Idempotency-Key header must be 1-200 printable ASCII characters (a UUID, say)")
    return key


def _repeated_ask(entry: Entry, key: str, question: str) -> TurnRecord:
    """The turn an earlier ask with ``key`` made, for a client that did not get the answer; 409
    when the key came with another question (a client bug: keys name one ask)."""
    index, asked = entry.asked[key]
    if asked != question:
        raise Conflict(f"Idempotency-Key {key[:40]!r} was sent with another question before (turn {index}); "
                       "use a new key for each new question")
    turn = _turn(entry, index)
    return turn_record(turn, entry.session.intent, entry.notes.get(index, ()))


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


async def _read_image(request: Request, settings: ServerSettings) -> tuple[bytes, str]:
    """The uploaded image's bytes and file name, from multipart or JSON, within the byte limit."""
    kind = bodies.content_type(request.headers)
    limit = settings.max_upload_bytes
    if kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4, max_part_size=64 * 1024)
        try:
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise BadRequest("the multipart body has no file field 'image'; send the image as the file "
                                 "field image (curl -F image=@photo.jpg)")
            data = await upload.read(limit + 1)
            name = upload.filename or ""
        finally:
            await form.close()
    else:
        bodies.check_json_content_type(request.headers, multipart=True)
        payload = bodies.json_object(bodies.parse_json(await request.body(), IMAGE_EXAMPLE),
                                     {"image", "name"}, {"image"}, IMAGE_EXAMPLE)
        data = bodies.decode_base64(payload["image"], limit)
        name = payload.get("name") if isinstance(payload.get("name"), str) else ""
    if len(data) > limit:
        raise bodies.upload_too_large(len(data), limit)
    if not data:
        raise BadRequest("the image is empty (0 bytes); send an image file")
    return data, name[:200]


def _decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """The upload as RGB pixels; 413 when its header claims more than ``max_pixels``."""
    from PIL import Image

    from pixelagent.images import load_image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        width = height = None  # Pillow's own limit spoke: certainly over ours
    except Exception:  # not an image at all: load_image says so in its own words
        width = height = 0
    if width is None or width * height > max_pixels:
        size = "far too large" if width is None else f"{width}x{height} ({width * height:,} pixels)"
        raise PayloadTooLarge(f"the image is {size}, over the server's limit of {max_pixels:,} pixels "
                              "(max_image_pixels); send a smaller image")
    try:
        return load_image(data, max_pixels=max_pixels)
    except ImageError as exc:
        raise ImageError(str(exc).replace("<bytes>", "the uploaded image", 1)) from None


def _png_of(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()

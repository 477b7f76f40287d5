"""What ``pixelagent serve`` is allowed to hold and accept: every bound of the server, in one place.

The defaults are sized so that a server on a laptop stays within a few GB whatever its clients
send: at most ``max_sessions`` images (each at most ``max_image_pixels``: 48 MB as RGB at the
default) with their dialogues (``limits.max_turns`` turns each), and at most
``max_encoded_sessions`` sessions' image encodings cached at once.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

#: 20 MiB: a 24-megapixel JPEG from a camera is 8-12 MB; a PNG screenshot of a 4K screen ~15 MB.
DEFAULT_MAX_UPLOAD_BYTES = 20 << 20
#: 4096 x 4096: larger than the 1024-pixel side SAM works at, and 48 MB as RGB.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
#: 1 MiB for JSON bodies other than an image upload: a question at its limit (8,000 characters,
#: up to 6 bytes each as JSON escapes) is under 50 KB, so the engine's own limit speaks first.
DEFAULT_MAX_JSON_BYTES = 1 << 20


class ServerSettings(BaseModel):
    """The server's settings (``pixelagent serve --help`` names each option).

    Attributes:
        preset: the model to load (a preset name, file or model directory; None: the default).
        device: ``auto`` / ``cpu`` / ``cuda`` for the model (None: the preset's).
        host, port: where to listen; 127.0.0.1 by default, so nothing outside this machine can
            connect unless you say so.
        workers: how many turns run at once (threads off the event loop; turns of one session
            always run one after the other). Turns running together share the LLM's forward
            passes, so more workers than cores raise throughput (8 on 2 cores: 1.6-1.8x of 2).
        max_sessions: sessions held at once; one more is refused (429) until one is deleted or
            expires.
        idle_expiry_s: a session nobody used for this long is deleted.
        max_encoded_sessions: sessions whose image encodings stay cached; beyond it the least
            recently used idle session's encodings are dropped, and recomputed (and said so in
            the turn's notes) on its next turn.
        max_upload_bytes: largest image upload (the encoded file; base64 JSON may be 4/3 of it).
            Larger requests get 413 before their body is read.
        max_image_pixels: largest width x height decoded (413 beyond it, read from the header).
        max_json_bytes: largest JSON body other than an image upload (413 beyond it).
        log: an SQLite conversation log to append every turn to (:mod:`pixelagent.logs`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Optional[str] = None
    device: Optional[str] = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(8, ge=1, le=256)
    max_sessions: int = Field(64, ge=1)
    idle_expiry_s: float = Field(900.0, gt=0)
    max_encoded_sessions: int = Field(16, ge=1)
    max_upload_bytes: int = Field(DEFAULT_MAX_UPLOAD_BYTES, ge=1024)
    max_image_pixels: int = Field(DEFAULT_MAX_IMAGE_PIXELS, ge=1)
    max_json_bytes: int = Field(DEFAULT_MAX_JSON_BYTES, ge=1024)
    log: Optional[str] = None

    @property
    def max_session_body_bytes(self) -> int:
        """Largest body of ``POST /v1/sessions``: the upload as base64 JSON, plus room for the
        multipart headers or the JSON around it."""
        return -(-self.max_upload_bytes * 4 // 3) + 64 * 1024

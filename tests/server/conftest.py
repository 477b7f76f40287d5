"""Fixtures for the server's tests: the shipped miras-tiny built once, real uvicorn on 127.0.0.1."""

from __future__ import annotations

import io

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the server tests need the serve extra: pip install -e '.[serve]'")


@pytest.fixture(scope="session")
def tiny_agent():
    from pixelagent import Agent

    return Agent("miras-tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_scene():
    """A PRIST-Synth scene the shipped model narrows on: book → title panel → title."""
    from pixelagent.demo import demo_scenes

    return demo_scenes(1)[0]


@pytest.fixture(scope="session")
def scene_png(tiny_scene) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(tiny_scene.image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def start_server(tiny_agent):
    """``start_server(**settings)``: a ServerThread over the shared agent; all stopped at the end."""
    from pixelagent.server import ServerSettings, create_app
    from pixelagent.server.testing import ServerThread

    servers = []

    def start(**settings):
        server = ServerThread(create_app(ServerSettings(**settings), agent=tiny_agent)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()

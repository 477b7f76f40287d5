"""``pixelagent serve``: the HTTP API, the web page and the client the warm CLI uses.

Needs the ``serve`` extra (``pip install 'pixelagent[serve]'``: FastAPI, uvicorn,
python-multipart)::

    from pixelagent.server import ServerSettings, create_app, serve
    serve(ServerSettings(preset="miras-tiny", port=8000))     # blocks; Ctrl-C stops it
    app = create_app(ServerSettings(), agent=my_agent)          # an ASGI app to mount elsewhere
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixelagent.errors import MissingDependencyError
from pixelagent.server.settings import ServerSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from pixelagent.agent import Agent

__all__ = ["ServerSettings", "create_app", "require_serve_extra", "serve"]


def require_serve_extra() -> None:
    """Raise a one-line :class:`MissingDependencyError` unless FastAPI and uvicorn import."""
    import importlib.util

    wanted = {"fastapi": ("fastapi",), "uvicorn": ("uvicorn",), "python-multipart": ("python_multipart", "multipart")}
    missing = [name for name, modules in wanted.items()
               if not any(importlib.util.find_spec(module) for module in modules)]
    if missing:
        raise MissingDependencyError(f"the server needs {', '.join(missing)}; install the serve extra: "
                                     "pip install 'pixelagent[serve]'")


def create_app(settings: ServerSettings | None = None, *, agent: Agent | None = None, runner: Any = None) -> FastAPI:
    """The ASGI app (see :func:`pixelagent.server.app.create_app`)."""
    require_serve_extra()
    from pixelagent.server.app import create_app as create

    return create(settings, agent=agent, runner=runner)


def serve(settings: ServerSettings, *, agent: Agent | None = None) -> None:
    """Run the server in this process until interrupted (uvicorn, one process: sessions live here)."""
    import uvicorn

    app = create_app(settings, agent=agent)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                timeout_graceful_shutdown=5)

"""A real server on 127.0.0.1 in a background thread, for tests and notebooks::

    with ServerThread(create_app(ServerSettings(), agent=agent)) as server:
        httpx.get(server.url + "/health")
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class ServerThread:
    """uvicorn serving ``app`` on ``host``:``port`` (a free one by default) in a daemon thread.

    ``start()`` returns once the socket is listening (the app's start-up has run); ``stop()``
    asks uvicorn to finish and waits. Also a context manager.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int | None = None, **config: Any) -> None:
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        settings = {"log_level": "warning", "access_log": False, "lifespan": "on", **config}
        self.server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, **settings))
        self._thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the server on {self.url} stopped while starting (see its log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start within {timeout:g} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

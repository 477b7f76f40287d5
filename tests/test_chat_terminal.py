"""`pixelagent chat` on a real terminal (a pty): line editing and history, Ctrl-C, Ctrl-D."""

import os
import pty
import select
import signal
import sys
import time

import numpy as np
import pytest
from PIL import Image


def _read_until(fd, text, timeout=120.0):
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {text!r} within {timeout} s; got {seen[-400:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen.decode(errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_chat_on_a_terminal_edits_recalls_cancels_and_quits(tmp_path):
    image = tmp_path / "scene.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(image)
    # pty.fork: the child leads a session with the pty as its controlling terminal, so Ctrl-C
    # becomes SIGINT as it does for a person at a terminal
    pid, controller = pty.fork()
    if pid == 0:
        os.environ.update(TERM="xterm", HF_HUB_OFFLINE="1")
        # as a person's shell leaves it: a test run in the background (`pytest &` in a script)
        # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execv(sys.executable, [sys.executable, "-m", "pixelagent", "chat", str(image), "--preset", "miras-tiny"])
    try:
        _read_until(controller, "you> ")
        os.write(controller, b"what colour is it?\r")
        first = _read_until(controller, "you> ")
        assert "pixelagent> " in first
        os.write(controller, b"half a line")
        time.sleep(0.3)
        os.write(controller, b"\x03")  # Ctrl-C: the line goes, the conversation stays
        cancelled = _read_until(controller, "you> ")
        assert "the line is cancelled" in cancelled
        os.write(controller, b"\x1b[A")  # Up: the earlier question comes back, editable
        recalled = _read_until(controller, "what colour is it?")
        assert "what colour is it?" in recalled
        os.write(controller, b"\r")
        assert "pixelagent> " in _read_until(controller, "you> ")
        os.write(controller, b"\x04")  # Ctrl-D leaves
        _read_until(controller, "\n", timeout=30)
        assert _exit_status(pid, 30) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(controller)


def _exit_status(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    raise AssertionError("chat did not exit after Ctrl-D")

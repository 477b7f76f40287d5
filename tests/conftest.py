"""Shared fixtures: the in-memory fake plugin, registered and unregistered around each test."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a missing model must fail at once, never download

import chat_clients  # noqa: E402
import fake_plugin  # noqa: E402  (tests/ is on sys.path: pytest's rootdir conftest import mode)

from pixelagent.plugins import load_plugins, pm  # noqa: E402


@pytest.fixture
def fake():
    """Register the fake plugin as 'fake-plugin' for one test; yields its module."""
    load_plugins()
    pm.register(fake_plugin, name="fake-plugin")
    try:
        yield fake_plugin
    finally:
        pm.unregister(name="fake-plugin")


@pytest.fixture
def scene():
    return fake_plugin.make_scene()


@pytest.fixture(autouse=True)
def _close_chat_clients():
    """Close the chat clients a test made with ``chat_clients.client_for``."""
    yield
    chat_clients.close_all()

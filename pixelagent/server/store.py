"""The sessions a server holds: bounded in number, expired when idle, encodings evicted LRU.

Everything here runs on the event loop's thread, so the bookkeeping needs no lock; the model
work a session does runs elsewhere (:mod:`pixelagent.server.runner`). Each entry has an
``asyncio.Lock`` that serialises its turns: a second request to a busy session waits its turn
(first come, first served) instead of running beside it.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pixelagent.server.errors import SessionNotFound, TooManySessions
from pixelagent.session import Session

#: What a turn after an eviction says in its notes.
REENCODED_NOTE = ("the image was encoded again for this turn: this session's cached encodings had been "
                  "dropped while it was idle (the server keeps max_encoded_sessions of them)")


#: How many Idempotency-Keys of recent asks a session remembers (a client retries its latest few).
MAX_IDEMPOTENCY_KEYS = 64


def new_session_id() -> str:
    """128 random bits, URL-safe: unguessable, and safe in a path segment."""
    return secrets.token_urlsafe(16)


@dataclass(eq=False)
class Entry:
    """One session held by the server and what the server knows about it."""

    id: str
    session: Session
    name: str = ""  # the uploaded file's name, for logs
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    busy: int = 0  # requests using it now or waiting for its lock
    evicted: bool = False  # its encodings were dropped; the next turn recomputes them
    notes: dict[int, list[str]] = field(default_factory=dict)  # server notes per turn index
    #: Idempotency-Key of a recent ask → (the turn it made, its question); the latest few only
    asked: OrderedDict[str, tuple[int, str]] = field(default_factory=OrderedDict)

    def remember_ask(self, key: str, turn: int, question: str) -> None:
        """Record that the ask sent with ``key`` made turn ``turn`` (bounded: the latest 64 keys)."""
        self.asked[key] = (turn, question)
        self.asked.move_to_end(key)
        while len(self.asked) > MAX_IDEMPOTENCY_KEYS:
            self.asked.popitem(last=False)

    @property
    def log_id(self) -> str:
        """What the log calls this conversation: a digest, never the id (the id is a capability)."""
        return hashlib.sha256(self.id.encode("ascii")).hexdigest()[:16]


class SessionStore:
    """At most ``max_sessions`` entries; idle ones expire after ``idle_expiry_s``; at most
    ``max_encoded`` keep their image encodings (least recently used dropped first)."""

    def __init__(self, max_sessions: int, idle_expiry_s: float, max_encoded: int) -> None:
        self.max_sessions = max_sessions
        self.idle_expiry_s = idle_expiry_s
        self.max_encoded = max_encoded
        self._entries: dict[str, Entry] = {}
        self._encoded: OrderedDict[str, Entry] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def encoded(self) -> int:
        """How many sessions hold cached encodings now."""
        return len(self._encoded)

    def add(self, session: Session, name: str = "") -> Entry:
        """Hold ``session`` under a new id; :class:`TooManySessions` when full (after expiring)."""
        self.expire()
        if len(self._entries) >= self.max_sessions:
            raise TooManySessions(
                f"the server holds {len(self._entries)} sessions, its maximum (max_sessions); DELETE a session "
                f"you are done with, or wait for idle ones to expire ({self.idle_expiry_s:g} s), or start the "
                "server with a larger --max-sessions")
        entry = Entry(id=new_session_id(), session=session, name=name)
        self._entries[entry.id] = entry
        return entry

    def get(self, session_id: str) -> Entry:
        """The entry of ``session_id`` (marked used), or :class:`SessionNotFound`."""
        entry = self._entries.get(session_id)
        if entry is None:
            shown = session_id if len(session_id) <= 48 else session_id[:48] + "..."
            raise SessionNotFound(
                f"no session {shown!r} on this server: it was never made, was deleted, or expired after "
                f"{self.idle_expiry_s:g} s idle; POST /v1/sessions to open one")
        entry.last_used = time.monotonic()
        return entry

    def remove(self, session_id: str) -> Entry:
        entry = self.get(session_id)
        self._drop(entry)
        return entry

    def touch(self, entry: Entry) -> None:
        """``entry`` was just used: its idle time starts again."""
        entry.last_used = time.monotonic()

    def used(self, entry: Entry) -> None:
        """After a turn: ``entry`` holds encodings now; drop the least recently used others'."""
        entry.last_used = time.monotonic()
        entry.evicted = False
        if entry.id not in self._entries:
            return  # deleted while its turn ran
        self._encoded[entry.id] = entry
        self._encoded.move_to_end(entry.id)
        for other in list(self._encoded.values()):
            if len(self._encoded) <= self.max_encoded:
                break
            if other is not entry and not other.busy:
                self.evict(other)

    def evict(self, entry: Entry) -> None:
        """Drop ``entry``'s encodings (history and intent stay); its next turn recomputes them."""
        entry.session.forget_caches()
        entry.evicted = True
        self._encoded.pop(entry.id, None)

    def expire(self, now: float | None = None) -> int:
        """Delete sessions idle for ``idle_expiry_s`` (never a busy one); how many went."""
        now = time.monotonic() if now is None else now
        stale = [e for e in self._entries.values() if not e.busy and now - e.last_used >= self.idle_expiry_s]
        for entry in stale:
            self._drop(entry)
        return len(stale)

    def _drop(self, entry: Entry) -> None:
        self._entries.pop(entry.id, None)
        self._encoded.pop(entry.id, None)

"""The conversation log: every turn, with its masks' RLE, in one SQLite file (``llm logs``'s habit).

Off unless asked for: ``--log PATH`` on ``segment``, ``chat``, ``batch`` and ``serve``, or
``$PIXELAGENT_LOG`` naming the database. ``pixelagent logs [--json]`` reads it back::

    log = TurnLog("pixelagent-log.db")
    log.record(record, conversation="3f2a...", source="chat", preset="miras-tiny", image="photo.png")
    log.entries(limit=20)     # newest last: [{"id", "conversation", "source", "preset", "image", "turn": {...}}]

One row per turn: the turn's :class:`~pixelagent.schema.TurnRecord` as JSON (question, answer,
targets with their COCO RLE masks, the intent step), plus columns to filter on. Writes are
serialised by a lock and SQLite's WAL journal, so one log may be shared by threads (the
server's workers) and by several processes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from pixelagent.errors import ConfigError
from pixelagent.schema import TurnRecord

__all__ = ["LOG_ENV", "TurnLog", "open_log"]

#: Environment variable naming the log database; unset means no log.
LOG_ENV = "PIXELAGENT_LOG"
_LOG_VERSION = 1  # PRAGMA user_version of the table layout below

_SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT NOT NULL,
    turn INTEGER NOT NULL,
    time TEXT NOT NULL,
    source TEXT NOT NULL,
    preset TEXT NOT NULL,
    image TEXT NOT NULL,
    question TEXT NOT NULL,
    text TEXT NOT NULL,
    targets INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS turns_conversation ON turns (conversation, turn);
"""


class TurnLog:
    """An SQLite file of turns (created on first use). ``path`` is the database file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        if self.path.exists() and not self.path.is_file():
            raise ConfigError(f"the log {self.path} is not a regular file; pass a file path for the SQLite log")
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
            self._prepare()
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot use {self.path} as the pixelagent log ({exc}); pass the path of another file "
                              "(--log to write one, --db to read one)") from None

    def _prepare(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "turns" not in tables:
            raise sqlite3.DatabaseError("it is an SQLite database of something else")
        if version > _LOG_VERSION:
            raise sqlite3.DatabaseError(f"its layout version {version} is newer than this pixelagent's")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={_LOG_VERSION}")
        self._db.commit()

    def record(self, turn: TurnRecord, *, conversation: str, source: str, preset: str, image: str) -> None:
        """Append one turn. ``conversation`` groups the turns of one session."""
        row = (conversation, turn.turn, turn.time.isoformat(), source, preset, image, turn.question,
               turn.text, len(turn.targets), turn.model_dump_json())
        with self._lock:
            try:
                self._db.execute("INSERT INTO turns (conversation, turn, time, source, preset, image, question, "
                                 "text, targets, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                self._db.commit()
            except sqlite3.Error as exc:
                raise ConfigError(f"cannot write to the log {self.path} ({exc})") from None

    def entries(self, limit: int | None = 20, conversation: str | None = None) -> list[dict[str, Any]]:
        """The latest ``limit`` turns (all when None), oldest first, each with its record parsed."""
        where, args = ("WHERE conversation = ?", [conversation]) if conversation else ("", [])
        query = (f"SELECT id, conversation, source, preset, image, record FROM turns {where} "
                 "ORDER BY id DESC" + ("" if limit is None else " LIMIT ?"))
        with self._lock:
            try:
                rows = self._db.execute(query, [*args, *([] if limit is None else [limit])]).fetchall()
            except sqlite3.Error as exc:
                raise ConfigError(f"cannot read the log {self.path} ({exc})") from None
        return [{"id": i, "conversation": c, "source": s, "preset": p, "image": im, "turn": json.loads(r)}
                for i, c, s, p, im, r in reversed(rows)]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> TurnLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_log(path: str | os.PathLike | None) -> TurnLog | None:
    """The log at ``path``, else at ``$PIXELAGENT_LOG``, else None (no log)."""
    chosen = path or os.environ.get(LOG_ENV)
    return TurnLog(chosen) if chosen else None

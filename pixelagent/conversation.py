"""One conversation about one image, in this process or on a server: what the CLI drives.

``segment``, ``chat`` and ``batch`` talk to a :class:`Conversation`, so the same code prints,
saves and logs a turn whether the model runs here (:class:`LocalConversation`, over a
:class:`~pixelagent.Session`) or in a running ``pixelagent serve``
(:class:`~pixelagent.server.client.RemoteConversation`). Both give
:class:`~pixelagent.schema.TurnRecord` and :class:`~pixelagent.schema.SessionRecord`, the one
JSON form of a turn and a session.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Protocol

from pixelagent.schema import SessionRecord, TurnRecord, session_record, turn_record

if TYPE_CHECKING:
    from pixelagent.logs import TurnLog
    from pixelagent.session import Session


class Conversation(Protocol):
    """What the CLI needs of a conversation."""

    image_size: tuple[int, int]
    preset: str

    def ask(self, question: str) -> TurnRecord:
        """Answer the next question; the turn's record."""

    def record(self) -> SessionRecord:
        """Every turn so far and the intent."""

    def reset(self) -> None:
        """Forget the dialogue and the intent."""

    def close(self) -> None:
        """Let go of the session (a server deletes it)."""


class LocalConversation:
    """A :class:`~pixelagent.Session` in this process."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.image_size = session.image_size
        self.preset = session.agent.preset.name

    def ask(self, question: str) -> TurnRecord:
        self.session.ask(question)
        return turn_record(self.session.history[-1], self.session.intent)

    def record(self) -> SessionRecord:
        return session_record(self.session)

    def reset(self) -> None:
        self.session.reset()

    def close(self) -> None:
        pass


class LoggedConversation:
    """``conversation`` with each turn also appended to ``log`` (see :mod:`pixelagent.logs`);
    ``close()`` closes the log too when ``owns_log``."""

    def __init__(self, conversation: Conversation, log: TurnLog, source: str, image: str, *,
                 owns_log: bool = False) -> None:
        self.inner, self.log, self.source, self.image, self.owns_log = conversation, log, source, image, owns_log
        self.id = uuid.uuid4().hex[:16]
        self.image_size, self.preset = conversation.image_size, conversation.preset

    def ask(self, question: str) -> TurnRecord:
        turn = self.inner.ask(question)
        self.log.record(turn, conversation=self.id, source=self.source, preset=self.preset, image=self.image)
        return turn

    def record(self) -> SessionRecord:
        return self.inner.record()

    def reset(self) -> None:
        self.inner.reset()
        self.id = uuid.uuid4().hex[:16]  # a new dialogue: a new conversation in the log

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            if self.owns_log:
                self.log.close()

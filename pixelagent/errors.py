"""Every error pixelagent raises on purpose.

Each message says what was wrong and how to fix it; the CLI prints ``str(error)`` as one line.
"""

from __future__ import annotations


def single_line(text: str, limit: int = 300) -> str:
    """``text`` squeezed onto one line (library messages may span several) and cut at ``limit``."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


class PixelAgentError(Exception):
    """Base class: catch this to handle any expected pixelagent failure."""


class ConfigError(PixelAgentError, ValueError):
    """A preset, override or config file is invalid. The message lists every problem found."""


class UnknownNameError(PixelAgentError, LookupError):
    """A part, preset or plugin name is not registered; the message lists the available names."""


class PluginError(PixelAgentError):
    """A plugin misbehaved: a duplicate registration, a bad builder, a failing import."""


class InputError(PixelAgentError, ValueError):
    """An argument to the API is invalid (an empty question, say)."""


class ImageError(PixelAgentError, ValueError):
    """An image could not be read or is unsafe to decode (unreadable, unsupported, too large)."""


class MaskError(PixelAgentError, ValueError):
    """A mask is malformed (wrong shape or dtype, bad RLE, size mismatch)."""


class PartError(PixelAgentError):
    """A part broke its contract at run time (wrong output type, shape or count)."""


class WeightsNotFoundError(PixelAgentError, FileNotFoundError):
    """Model weights are missing; the message names the file or hub id expected and how to point at it."""


class MissingDependencyError(PixelAgentError, ImportError):
    """An optional library (or program) a feature needs is not installed; the message names it."""


class LLMError(PixelAgentError):
    """A chat request to an OpenAI-compatible endpoint failed for good.

    ``status`` is the last HTTP status (None: no response at all).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LLMSchemaError(LLMError):
    """The model's replies never validated against the expected schema, even after repair turns."""


class CheckpointError(PixelAgentError):
    """A checkpoint or saved model could not be written or read; the message names the file and the fix."""


class OutputError(PixelAgentError, OSError):
    """A file or folder pixelagent was asked to write cannot be written; the message names it and why.

    ``errno`` and ``filename`` are those of the ``OSError`` behind it, when there was one.
    """

    def __str__(self) -> str:  # OSError's own would read "[Errno 28] None: 'path'" once errno is set
        return str(self.args[0]) if self.args else ""

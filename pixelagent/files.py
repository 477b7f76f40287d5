"""Opening the files users name: regular files only, UTF-8 text, sizes bounded; and the files
and folders they ask to be written, checked before the work that fills them.

Every file pixelagent reads because a user (or a dataset, or a calling model) named it goes
through here, so that a FIFO, a device, a directory, a huge file or bytes that are not UTF-8
fail at once with one line naming the file, instead of blocking forever (``open()`` on a FIFO
waits for a writer), filling memory (``/dev/zero``) or raising a bare ``UnicodeDecodeError``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pixelagent.errors import ConfigError, OutputError, PixelAgentError

__all__ = ["DEFAULT_MAX_TEXT_BYTES", "check_output_file", "check_output_folder", "check_regular_file",
           "make_output_folder", "read_bytes", "read_text", "writing"]

#: Largest text file (JSON, YAML, JSON Lines) read whole by default: 1 GiB. The published PRIST
#: split is 1.6 MB and a LabelMe file with its image embedded a few MB; anything near this is a
#: mistake (a video, a disk image) or an attack, and reading it would take minutes and gigabytes.
DEFAULT_MAX_TEXT_BYTES = 1 << 30

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def check_regular_file(path: str | os.PathLike, what: str = "file",
                       error: type[PixelAgentError] = ConfigError) -> Path:
    """``path`` as a Path if it names a regular file (symlinks followed), else ``error``.

    Uses ``stat``, which never blocks, so a FIFO is refused before anything opens it.
    """
    name = os.fsdecode(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{what} {name} does not exist; check the path") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise error(f"cannot read {what} {name}: {getattr(exc, 'strerror', None) or exc}") from None
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        hint = ("; pass the path of one file" if stat.S_ISDIR(mode)
                else "; pass a regular file (save piped data to a file first)")
        raise error(f"{what} {name} is {kind}, not a regular file{hint}")
    return Path(path)


def read_bytes(path: str | os.PathLike, what: str = "file", *, max_bytes: int | None = DEFAULT_MAX_TEXT_BYTES,
               error: type[PixelAgentError] = ConfigError) -> bytes:
    """The bytes of a regular file no larger than ``max_bytes`` (None: no bound)."""
    path = check_regular_file(path, what, error)
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if max_bytes is not None and size > max_bytes:
                raise error(f"{what} {path} is {size:,} bytes, over the {max_bytes:,}-byte limit for "
                            "files read whole; is it the right file?")
            # read at most one byte past the limit: a file growing while we read cannot blow it
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f"{what} {path} grew past the {max_bytes:,}-byte limit while being read")
    return data


def read_text(path: str | os.PathLike, what: str = "file", *, max_bytes: int | None = DEFAULT_MAX_TEXT_BYTES,
              error: type[PixelAgentError] = ConfigError) -> str:
    """A regular file's text, decoded as UTF-8 (a leading BOM is dropped); undecodable bytes
    raise ``error`` naming the file and the offset, never a bare ``UnicodeDecodeError``."""
    data = read_bytes(path, what, max_bytes=max_bytes, error=error)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {os.fsdecode(path)} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                    f"{exc.start}); save it as UTF-8") from None


# -- outputs -------------------------------------------------------------------------------------
_WHY = {errno.ENOENT: "no such file or folder there", errno.ENOTDIR: "a file stands where a folder should be",
        errno.EISDIR: "it is a folder", errno.EEXIST: "a file of that name is in the way",
        errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EROFS: "the file system is read-only",
        errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
        errno.ENAMETOOLONG: "the name is too long"}


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return _WHY.get(exc.errno or -1) or exc.strerror or str(exc)
    return str(exc)  # ValueError: a NUL byte in the path


@contextlib.contextmanager
def writing(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``what`` at ``path`` into one-line :class:`OutputError`
    (chained to it, with its ``errno``)."""
    try:
        yield
    except OutputError:
        raise
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError) and "null" not in str(exc).lower():
            raise  # only a NUL byte in the path is the path's fault
        error = OutputError(f"cannot write {what} {os.fsdecode(path)}: {_why(exc)}; name another path")
        if isinstance(exc, OSError):  # for callers that look (e.errno == errno.ENOSPC)
            error.errno, error.filename = exc.errno, exc.filename
        raise error from exc


def _probe(folder: Path) -> None:
    """Create and remove a file in ``folder``: the only test that tells (root ignores permission bits,
    ``/proc`` and read-only mounts refuse what ``os.access`` allows)."""
    with tempfile.TemporaryFile(dir=folder, prefix=".pixelagent-probe-"):
        pass


def _nearest_existing(path: Path) -> Path:
    """``path`` or the closest of its parents that exists (``.`` for a relative path's start)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """``path`` as a Path if a file can be written there now, else :class:`OutputError`.

    For checks before slow work (building a model); it creates and changes nothing. A file that
    exists (``/dev/stdout`` too) must be writable itself; a new one needs an existing folder
    that takes new files. ``path`` must not be a folder.
    """
    path = Path(path)
    name = os.fsdecode(path)
    if path.is_dir():
        raise OutputError(f"{what} {name} is a folder; name a file, such as {os.path.join(name, 'mask.png')}")
    if path.exists():  # overwritten in place: the folder's own permissions do not matter
        if not os.access(path, os.W_OK):
            raise OutputError(f"cannot write {what} {name}: permission denied; name another path")
        return path
    folder = path.parent
    if not folder.is_dir():
        why = "is a file, not a folder" if folder.exists() else "does not exist; create it first"
        raise OutputError(f"cannot write {what} {name}: its folder {os.fsdecode(folder)} {why}")
    with writing(path, what):
        _probe(folder)
    return path


def check_output_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` as a Path if it is, or can be made, a folder that takes new files; else
    :class:`OutputError`. Creates nothing (a run that fails later leaves no empty folder):
    the closest existing folder on the way is the one tried."""
    path = Path(path)
    name = os.fsdecode(path)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        if existing == path:
            raise OutputError(f"{what} {name} is a file, not a folder; name a folder (it is created if missing)")
        raise OutputError(f"cannot make {what} {name}: {os.fsdecode(existing)} is a file, not a folder; "
                          "name another folder")
    with writing(path, what):
        _probe(existing)
    return path


def make_output_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` created with its parents if missing (see :func:`check_output_folder`); the folder as a Path."""
    path = check_output_folder(path, what)
    with writing(path, what):
        path.mkdir(parents=True, exist_ok=True)
    return path

"""Writing output files (plans, outputs .npz, traces) atomically and safely.

A reader sees the old file or the whole new one, never half: bytes go to a
temporary file in the same folder, are flushed and fsynced, and the temporary
file is renamed over the target. On top of that:

* only a regular file (or nothing) is replaced: a symlink, a directory, a
  device node (``/dev/full``, ``/dev/null``) or a FIFO at the path is refused,
  because renaming over it would silently replace the node or the link rather
  than write where the user pointed;
* a file that is replaced keeps its permission bits (a new file gets
  ``0666 & ~umask``, as ``open()`` would give it, not mkstemp's ``0600``);
* every failure (full disk, read-only folder, missing folder) becomes one
  :class:`~turnip.errors.OutputError` naming the path, and the temporary file
  is removed, also when the process is interrupted (Ctrl-C, or SIGTERM turned
  into an exception by the command line).

:func:`check_target` runs the same checks without writing, so a command can
refuse a bad ``--trace`` or ``--output`` path before a long run rather than
after it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from typing import IO, Iterator

from .errors import OutputError


def _describe(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_target(path: str | os.PathLike[str], what: str = "output") -> os.stat_result | None:
    """Refuse ``path`` unless it is a regular file or absent in an existing, writable folder.

    Returns the ``lstat`` of the existing file (None if absent). Raises
    :class:`OutputError` (one line, naming the fix).
    """
    p = os.fspath(path)
    if not p:
        raise OutputError(f"{what} path is empty; name a file to write")
    try:
        st: os.stat_result | None = os.lstat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(f"cannot write {what} {p!r}: {e.strerror}") from e
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(f"refusing to write {what} {p!r}: it is {_describe(st.st_mode)}, not a regular file; pick another path")
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(folder):
        raise OutputError(f"cannot write {what} {p!r}: folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {p!r}: folder {folder!r} is not writable; pick another path")
    return st


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], what: str = "output", text: bool = False) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically.

    >>> with atomic_write("out.json", "trace", text=True) as f:
    ...     f.write("{}")
    """
    p = os.fspath(path)
    old = check_target(p, what)
    folder = os.path.dirname(os.path.abspath(p))
    base = os.path.basename(p)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise OutputError(f"cannot write {what} {p!r}: {e.strerror}") from e
    try:
        try:
            with os.fdopen(fd, "w" if text else "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            if old is not None:
                mode = stat.S_IMODE(old.st_mode)
            else:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            os.chmod(tmp, mode)
            os.replace(tmp, p)
        except OSError as e:
            raise OutputError(f"cannot write {what} {p!r}: {e.strerror or e}; nothing was written, free space or pick another path") from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes, what: str = "output") -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, what) as f:
        f.write(data)

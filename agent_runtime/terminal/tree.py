"""The workspace's tree as the tools see it: walked without being led outside it, and files
opened without getting stuck on one that is not a regular file.

Standard library only: the search worker process imports it too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

# Not searched: version-control internals and installed dependencies.
SKIPPED_DIRECTORIES = frozenset(
    {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", ".mypy_cache"}
)


class NotRegularFile(OSError):
    """A FIFO, socket or device where a file tool expected a file: opening it could block."""

    def __init__(self, path: Path) -> None:
        super().__init__(errno.EINVAL, "not a regular file", str(path))


class Stopped(Exception):
    """The caller gave up (Ctrl-C): work running off the event loop ends at its next check."""


def real_path(path: Path) -> Path:
    """`path` with every symlink resolved. A symlink loop is left in place (not an error
    here): whatever then opens the path fails with ELOOP, an ordinary OSError."""
    return Path(os.path.realpath(path))


def open_regular(path: Path, flags: int = os.O_RDONLY, mode: int = 0o666) -> int:
    """A descriptor on the regular file at `path`; NotRegularFile for anything else.

    O_NONBLOCK: opening a FIFO never waits for its other end. O_NOFOLLOW: `path` is a real
    path, so a symlink there now was swapped in after it was checked, and is not followed."""
    with contextlib.suppress(FileNotFoundError):  # a new file, to be created
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise NotRegularFile(path)  # without opening it: O_CREAT|O_NONBLOCK on a FIFO fails
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced meanwhile
            raise NotRegularFile(path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def walk(
    root: Path,
    top: Path,
    *,
    recursive: bool,
    all_dirs: bool,
    stop: threading.Event | None = None,
) -> Iterator[Path]:
    """Entries under `top` that are inside `root` (a symlink out is left out); directories too
    when `all_dirs`, else the skipped directories are not entered. Symlinked directories are
    not descended into. Raises Stopped once `stop` is set."""
    for directory, dirs, files in os.walk(top):
        dirs.sort()
        if not all_dirs:
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRECTORIES]
        here = Path(directory)
        for name in sorted(dirs + files) if all_dirs else sorted(files):
            if stop is not None and stop.is_set():
                raise Stopped
            entry = here / name
            if real_path(entry).is_relative_to(root):
                yield entry
        if not recursive:
            return

"""Write files so that a crash or an error never leaves a half-written file behind.

Data goes to a temporary file in the destination directory; on success it is flushed,
fsync'ed, renamed over the final name (atomic on POSIX) and the directory is fsync'ed so
the rename itself survives a power cut. On failure the temporary file is removed and the
previous file, if any, is untouched.
"""
from __future__ import annotations

import contextlib
import os
import secrets


def temp_path_for(path: str) -> str:
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def fsync_dir(path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    try:
        fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(tmp: str, path: str) -> None:
    """fsync ``tmp``, rename it to ``path`` and fsync the directory."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path)


def discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


class AtomicFile:
    """A file object that appears under ``path`` only when closed with ``commit=True``."""

    def __init__(self, path: str, mode: str = "w", encoding: str | None = "utf-8"):
        if "r" in mode or "a" in mode:
            raise ValueError("AtomicFile is for writing whole files (mode 'w' or 'wb')")
        self.path = str(path)
        self.tmp = temp_path_for(self.path)
        self._f = open(self.tmp, mode, encoding=None if "b" in mode else encoding)
        self.closed = False

    def write(self, data):
        return self._f.write(data)

    def close(self, commit_: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._f.flush()
        finally:
            self._f.close()
        if commit_:
            commit(self.tmp, self.path)
        else:
            discard(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(exc_type is None)
        return False


def write_bytes(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with AtomicFile(path, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def locked(path: str):
    """Hold an exclusive ``fcntl`` lock on ``<path>.lock`` (created beside ``path``, kept
    there) for a load-update-save of ``path``: concurrent writers then take turns instead of
    overwriting each other's update. Readers need no lock (saves are atomic renames)."""
    import fcntl

    fd = os.open(os.fspath(path) + ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # closing the descriptor releases the lock

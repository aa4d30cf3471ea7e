"""Write files so that a crash or an error never leaves a half-written file behind.

Data goes to a temporary file in the destination directory; on success it is flushed,
fsync'ed, renamed over the final name (atomic on POSIX) and the directory is fsync'ed so
the rename itself survives a power cut. On failure the temporary file is removed and the
previous file, if any, is untouched.

Temporary names are ``.NAME.tmp-PID-RANDOM``. A process killed by SIGKILL or a power cut
cannot remove its own; :func:`temp_path_for` sweeps those of ``NAME`` whose process is gone
(:func:`sweep_stale`) each time a new one is made, so they never pile up.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets

_TMP_RE = re.compile(r"\.(?P<base>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                  # EPERM: someone else's process, alive
        return True
    return True


def sweep_stale(path: str, prefix: str | None = None, suffix: str = "") -> int:
    """Remove temporary files left in ``path``'s directory by processes that no longer run: those of
    ``path`` itself, or (``prefix``) of any name starting with ``prefix`` and ending with
    ``suffix`` (the segments of one recording). Files of live processes are never touched.
    Returns how many were removed."""
    d, base = os.path.split(os.path.abspath(path))
    try:
        names = os.listdir(d)
    except OSError:
        return 0
    removed = 0
    me = os.getpid()
    for name in names:
        m = _TMP_RE.fullmatch(name)
        if m is None:
            continue
        b = m["base"]
        if b != base and not (prefix is not None and b.startswith(prefix) and b.endswith(suffix)):
            continue
        pid = int(m["pid"])
        if pid == me or _alive(pid):
            continue
        try:
            os.unlink(os.path.join(d, name))
            removed += 1
        except OSError:
            pass
    return removed


def temp_path_for(path: str) -> str:
    """A new temporary name beside ``path`` (stale ones of dead processes swept first)."""
    sweep_stale(path)
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
    """Remove ``tmp`` if it is there (best effort: on a read-only or failing file system there is
    nothing more to do, and the caller is already reporting the error that matters)."""
    try:
        os.unlink(tmp)
    except OSError:
        pass


class AtomicFile:
    """A file object that appears under ``path`` only when closed with ``commit=True``.

    Any failure (the open, a write, the flush, the fsync or the rename, e.g. ENOSPC) leaves no
    temporary file; the OSError reaches the caller, who names the file in its message.
    :meth:`finish` flushes and fsyncs without committing, so a caller writing several files can
    make each one durable before it renames any (nothing half-written across them).
    """

    def __init__(self, path: str, mode: str = "w", encoding: str | None = "utf-8"):
        if "r" in mode or "a" in mode:
            raise ValueError("AtomicFile is for writing whole files (mode 'w' or 'wb')")
        self.path = str(path)
        self.tmp = temp_path_for(self.path)
        self._f = open(self.tmp, mode, encoding=None if "b" in mode else encoding)
        self.closed = False

    def write(self, data):
        return self._f.write(data)

    def finish(self) -> None:
        """Flush and fsync the temporary file (the step where a full disk shows)."""
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self, commit_: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            try:
                self._f.flush()
            finally:
                self._f.close()
            if commit_:
                commit(self.tmp, self.path)
        except OSError:
            discard(self.tmp)
            if commit_:
                raise
            return
        if not commit_:
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

"""Files written whole or not at all: :func:`atomic_write` (a temp file beside the target, fsync, rename), the temp
files a killed write leaves (:func:`stale_temps`), the process umask read safely, and a file type in words."""

from __future__ import annotations

import glob
import hashlib
import os
import stat
import tempfile
import threading
from pathlib import Path


def file_kind(mode: int) -> str:
    """What a file of this st_mode is, in words (for a refusal)."""
    for test, kind in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO (named pipe)"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "symbolic link")):
        if test(mode):
            return kind
    return "special file"


_UMASK_LOCK = threading.Lock()

def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status): setting it to 0
    and back, the only portable way, would let another thread (the server's) create a world-writable file."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)  # briefly the strictest mask, never a looser one
        os.umask(mask)
    return mask

def temp_beside(path: Path) -> Path:
    """A new empty temp file next to ``path`` (same file system: ``os.replace`` onto ``path`` is atomic), with the
    permissions a plain ``open()`` would give under the umask (``mkstemp`` makes 0600 files)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    return Path(tmp)

def stale_temps(path: Path) -> list[Path]:
    """Temp files :func:`temp_beside` made for ``path`` and a killed process left behind."""
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))

def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then move the temp file over ``path``: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (corpora, archives)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

"""Rolls on disk: one folder per roll under the run's output dir, capped in count, bytes and age.

A roll id is 32 random hex digits and a file name one of a fixed pattern; both are checked against those
patterns before any path is built, so no request can name a file outside its roll's folder. A variation's
MIDI, WAV and PNG are made on their first GET (by the ``make`` callback) and kept: a roll costs only its
roll.json until someone downloads, listens or looks. Writing and rendering four variations takes seconds of
CPU, sampling them a fraction of one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from theremin.errors import ThereminError
from theremin.fsio import atomic_write

log = logging.getLogger("theremin.serve")

ROLL_ID = re.compile(r"[0-9a-f]{32}")
FILE_NAME = re.compile(r"(variation_\d{2}\.(mid|wav|png)|prompt\.mid)")
MEDIA_TYPES = {".mid": "audio/midi", ".wav": "audio/wav", ".png": "image/png"}


class NotFound(ThereminError):
    """No such roll or file; the message says which."""


@dataclass
class StoreLimits:
    max_rolls: int = 500
    max_mb: float = 1024
    max_age_hours: float = 24


class RollStore:
    def __init__(self, root: str | Path, limits: StoreLimits, make):
        """``make(folder, path)`` writes a variation file that is not there yet."""
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.limits, self.make = limits, make
        self._lock = threading.Lock()
        self._rendering: dict[Path, threading.Lock] = {}
        self._last_prune = 0.0

    def new(self) -> tuple[str, Path]:
        roll_id = uuid.uuid4().hex
        folder = self.root / roll_id
        folder.mkdir()
        return roll_id, folder

    def folder(self, roll_id: str) -> Path:
        if not ROLL_ID.fullmatch(roll_id):
            raise NotFound(f"roll {roll_id!r}: not a roll id (32 hex digits)")
        folder = self.root / roll_id
        if not (folder / "roll.json").is_file():
            raise NotFound(f"roll {roll_id}: no such roll (never made, or removed by the store's size/age cap)")
        return folder

    def meta(self, roll_id: str) -> dict:
        return json.loads((self.folder(roll_id) / "roll.json").read_text())

    def file(self, roll_id: str, name: str) -> Path:
        """The path of one file of a roll, made first if it is a variation file not made yet."""
        if not FILE_NAME.fullmatch(name):
            raise NotFound(f"file {name!r}: a roll holds prompt.mid and variation_NN.mid/.wav/.png")
        folder = self.folder(roll_id)
        path = folder / name
        if name.startswith("variation_") and not path.is_file():
            index = int(path.stem.rsplit("_", 1)[1])
            if not 1 <= index <= len(self.meta(roll_id)["variations"]):
                raise NotFound(f"roll {roll_id} has no variation {index}")
            with self._lock:
                lock = self._rendering.setdefault(path, threading.Lock())
            with lock:  # two GETs of one file render it once
                if not path.is_file():
                    self.make(folder, path)
            with self._lock:
                self._rendering.pop(path, None)
        if not path.is_file():
            raise NotFound(f"roll {roll_id} has no file {name}")
        return path

    def save_meta(self, folder: Path, meta: dict) -> None:
        atomic_write(folder / "roll.json", lambda tmp: tmp.write_text(json.dumps(meta)))

    def prune(self, keep: str | None = None, every_s: float = 0.0) -> int:
        """Remove rolls past the age cap, then the oldest while over the count or size cap; returns how many.
        ``every_s``: skip when the last prune is more recent (it stats every file: not for every request)."""
        now = time.time()
        with self._lock:
            if now - self._last_prune < every_s:
                return 0
            self._last_prune = now
        rolls = []
        for d in self.root.iterdir():
            if d.is_dir() and ROLL_ID.fullmatch(d.name):
                try:
                    size = sum(f.stat().st_size for f in d.iterdir())
                    rolls.append((d.stat().st_mtime, size, d))
                except FileNotFoundError:  # removed meanwhile
                    continue
        rolls.sort()
        total = sum(s for _, s, _ in rolls)
        removed = 0
        for mtime, size, d in rolls:
            over = (len(rolls) - removed > self.limits.max_rolls or total > self.limits.max_mb * 2**20
                    or now - mtime > self.limits.max_age_hours * 3600)
            if not over:
                break
            if d.name == keep:
                continue
            shutil.rmtree(d, ignore_errors=True)
            total -= size
            removed += 1
        return removed

"""Rolls on disk: one folder per roll under the run's output dir, capped in count, bytes and age.

A roll id is 32 random hex digits and a file name one the API hands out (``prompt.mid``,
``variation_NN.mid/.wav/.png`` with NN the variation's index as ``{index:02d}``); both are checked, ASCII-exact,
before any path is built, so no request can name a file outside its roll's folder, nor make one twice under
another spelling. A variation's MIDI, WAV and PNG are made on their first GET (by the ``make`` callback) and
kept: a roll costs only its roll.json until someone downloads, listens or looks. Writing and rendering four
variations takes seconds of CPU, sampling them a fraction of one.

The caps hold when files are written, not on some later request: the store keeps a running account of its
rolls (count, bytes, age) and, after each roll.json saved and each file made, evicts the oldest rolls (by
creation) while any cap is exceeded. A full rescan of the disk (which stats every file) runs at start and
every ``rescan_every_s``.
"""

from __future__ import annotations

import collections
import json
import logging
import os
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

ROLL_ID = re.compile(r"[0-9a-f]{32}", re.ASCII)
# the names the API hands out; NN is checked to be exactly f"{index:02d}" (no 1, 001, 00, ٠١, 𝟎𝟏, ...)
FILE_NAME = re.compile(r"(?:prompt\.mid|variation_(?P<index>[0-9]{2,3})(?:\.(?:mid|wav|png)|_new\.mid))", re.ASCII)
MEDIA_TYPES = {".mid": "audio/midi", ".wav": "audio/wav", ".png": "image/png"}
TRASH = ".evicted-"  # an evicted roll's folder is renamed to this + its id, then removed


class NotFound(ThereminError):
    """No such roll or file; the message says which."""


class NoRoom(ThereminError):
    """A file that the store cannot hold within ``store.max_mb``: bigger than the cap on its own
    (``never`` is True), or bigger than what the rolls being written or rendered right now leave free."""

    def __init__(self, message: str, never: bool):
        super().__init__(message)
        self.never = never


@dataclass
class StoreLimits:
    max_rolls: int = 500
    max_mb: float = 1024
    max_age_hours: float = 24


@dataclass
class _Roll:
    created: float  # wall-clock seconds: when new() made it (roll.json's mtime for a roll found on disk)
    seq: int  # creation order among rolls of equal ``created``
    bytes: int


class RollStore:
    """The rolls of one server: ``new`` → (the service writes prompt.mid) → ``save_meta`` → ``file`` on GET.

    Caps (:class:`StoreLimits`): after :meth:`save_meta` and after each file :meth:`file` makes, the saved rolls
    number at most ``max_rolls``, hold at most ``max_mb`` MiB and none is older than ``max_age_hours``: the
    oldest rolls by creation are evicted first, only as many as needed. A roll being written (between
    :meth:`new` and :meth:`save_meta`, not counted until saved) or rendered (inside ``make``) is never evicted,
    nor is the roll just saved or rendered. All methods are thread-safe.

    Budget check before a render (call it from ``make``, before writing a byte):

    ``room(nbytes: int, keep: str | None = None) -> bool``
        Whether a file of ``nbytes`` bytes fits under ``max_mb`` once every roll that may be evicted is: the
        bytes that stay are those of the rolls being rendered (inside ``make`` the roll itself is one), of
        the roll ``keep`` and of held reservations. Changes nothing (no eviction, no reservation).

    ``reserve(path: Path, nbytes: int) -> None``
        Make room for ``path`` (the path ``make`` was given, in a saved roll's folder, not written yet;
        ``nbytes`` an estimate of its size): evict the oldest rolls needed so that the store plus ``nbytes``
        is within ``max_mb`` (no more), and, called from ``make`` (while :meth:`file` renders ``path``), hold
        ``nbytes`` against the cap until the render ends, when the file's real size replaces it (and the caps
        are enforced again: an estimate too low costs one more eviction, never the cap). Outside a render it
        only makes room. Raises :class:`NoRoom` (a ThereminError; the app answers 422), naming the roll, the
        file, its size and ``store.max_mb``, evicting nothing, when ``nbytes`` is over ``max_mb`` on its own
        (``never=True``) or over what the rolls being rendered right now leave (``never=False``: try again
        later); :class:`NotFound` when the roll is gone. Called again for one path, it replaces the
        reservation. E.g. in ``make``: ``store.reserve(path, wav_seconds * sample_rate * 2 * channels + 44)``.

    Also: :meth:`prune` (enforce now, rescan the disk when due), :meth:`rescan` (the full walk),
    :meth:`discard` (drop a roll being written that failed), :meth:`usage` (count and bytes accounted).
    """

    def __init__(self, root: str | Path, limits: StoreLimits, make, rescan_every_s: float = 600.0):
        """``make(folder, path)`` writes a variation file that is not there yet."""
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.limits, self.make = limits, make
        self.rescan_every_s = rescan_every_s
        self._lock = threading.Lock()
        self._rendering: dict[Path, list] = {}  # path → [its lock, how many threads want it]
        self._rolls: collections.OrderedDict[str, _Roll] = collections.OrderedDict()  # saved, oldest first
        self._bytes = 0  # sum of the saved rolls' bytes
        self._writing: dict[str, _Roll] = {}  # made by new(), roll.json not saved yet
        self._busy: collections.Counter[str] = collections.Counter()  # rolls with a render in progress
        self._reserved: dict[Path, int] = {}  # bytes held by reserve() for files being rendered
        self._seq = 0
        self._scanned = 0.0
        self.rescan()

    # ---- rolls ------------------------------------------------------------------------------------------
    def new(self) -> tuple[str, Path]:
        with self._lock:
            roll_id = uuid.uuid4().hex
            folder = self.root / roll_id
            folder.mkdir()
            self._seq += 1
            self._writing[roll_id] = _Roll(time.time(), self._seq, 0)
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
        m = FILE_NAME.fullmatch(name)
        index = m["index"] if m else None
        if m is None or (index is not None and (f"{int(index):02d}" != index or int(index) < 1)):
            raise NotFound(f"file {name!r}: a roll holds prompt.mid and variation_NN.mid/.wav/.png/_new.mid "
                           "(NN as the roll lists it: 01, 02, ...)")
        folder = self.folder(roll_id)
        path = folder / name
        if index is not None and not path.is_file():
            try:
                count = len(self.meta(roll_id)["variations"])
            except FileNotFoundError:
                raise NotFound(f"roll {roll_id}: no such roll (removed by the store's size/age cap)") from None
            if not 1 <= int(index) <= count:
                raise NotFound(f"roll {roll_id} has no variation {int(index)} (it has {count})")
            self._render(roll_id, folder, path)
        if not path.is_file():
            raise NotFound(f"roll {roll_id} has no file {name}")
        return path

    def _render(self, roll_id: str, folder: Path, path: Path) -> None:
        with self._lock:
            if roll_id not in self._rolls:
                raise NotFound(f"roll {roll_id}: no such roll (removed by the store's size/age cap)")
            self._busy[roll_id] += 1
            slot = self._rendering.setdefault(path, [threading.Lock(), 0])
            slot[1] += 1
        trash: list[Path] = []
        try:
            with slot[0]:  # two GETs of one file render it once
                if not path.is_file():
                    try:
                        self.make(folder, path)
                    finally:
                        with self._lock:
                            self._reserved.pop(path, None)
                            self._recount(roll_id, folder)
                            trash = self._evict(self._victims({roll_id})[0])
        finally:
            with self._lock:
                self._busy[roll_id] -= 1
                if self._busy[roll_id] <= 0:
                    del self._busy[roll_id]
                slot[1] -= 1
                if slot[1] <= 0:
                    self._rendering.pop(path, None)
            _remove(trash)

    def save_meta(self, folder: Path, meta: dict) -> None:
        """Write roll.json (the roll is then saved: counted, visible), then enforce the caps (never on it)."""
        folder = Path(folder)
        atomic_write(folder / "roll.json", lambda tmp: tmp.write_text(json.dumps(meta)))
        roll_id = folder.name
        if folder.resolve().parent != self.root or not ROLL_ID.fullmatch(roll_id):
            return
        with self._lock:
            roll = self._writing.pop(roll_id, None) or self._rolls.get(roll_id)
            if roll is None:
                self._seq += 1
                roll = _Roll(time.time(), self._seq, 0)
            self._add(roll_id, roll)
            self._recount(roll_id, folder)
            trash = self._evict(self._victims({roll_id})[0])
        _remove(trash)

    def discard(self, roll_id: str) -> None:
        """Remove a roll (one being written that failed, say) and forget it."""
        if not ROLL_ID.fullmatch(roll_id):
            return
        with self._lock:
            self._writing.pop(roll_id, None)
            trash = self._evict([roll_id]) if roll_id in self._rolls else [self._to_trash(roll_id)]
        _remove(trash)

    # ---- caps -------------------------------------------------------------------------------------------
    @property
    def max_bytes(self) -> int:
        return int(self.limits.max_mb * 2**20)

    def usage(self) -> tuple[int, int]:
        """(saved rolls, their bytes) as accounted (rolls being written not included, reservations neither)."""
        with self._lock:
            return len(self._rolls), self._bytes

    def room(self, nbytes: int, keep: str | None = None) -> bool:
        """Whether a file of ``nbytes`` fits under max_mb after evicting every roll that may be (see the class)."""
        with self._lock:
            return nbytes <= self.max_bytes and self._pinned({keep} if keep else set()) + nbytes <= self.max_bytes

    def reserve(self, path: str | Path, nbytes: int) -> None:
        """Evict what a file of ``nbytes`` about to be written at ``path`` needs, and hold the bytes during
        its render; :class:`NoRoom` when it cannot fit (see the class)."""
        path, nbytes = Path(path), int(nbytes)
        roll_id, what = path.parent.name, f"roll {path.parent.name}: {path.name}"
        if nbytes > self.max_bytes:
            raise NoRoom(f"{what}: about {_mb(nbytes)} MB, more than the whole store may hold "
                         f"(store.max_mb={self.limits.max_mb:g})", never=True)
        with self._lock:
            if roll_id not in self._rolls:
                raise NotFound(f"roll {roll_id}: no such roll (removed by the store's size/age cap)")
            held = self._reserved.pop(path, None)
            victims, _, total = self._victims({roll_id}, extra=nbytes)
            if total > self.max_bytes:
                if held is not None:
                    self._reserved[path] = held
                pinned = self._pinned({roll_id})
                raise NoRoom(f"{what}: about {_mb(nbytes)} MB does not fit: the rolls being written or rendered "
                             f"right now hold {_mb(pinned)} MB of store.max_mb={self.limits.max_mb:g}; "
                             "try again later", never=False)
            trash = self._evict(victims)
            if path in self._rendering:
                self._reserved[path] = nbytes
        _remove(trash)

    def prune(self, keep: str | None = None, every_s: float = 0.0) -> int:
        """Enforce the caps on the running account now (no disk walk; ``keep`` is never evicted), after a full
        rescan when the last one is older than ``every_s`` and ``rescan_every_s``; how many rolls went."""
        with self._lock:
            due = time.monotonic() - self._scanned >= max(every_s, self.rescan_every_s)
        removed = self.rescan() if due else 0
        with self._lock:
            trash = self._evict(self._victims({keep} if keep else set())[0])
        _remove(trash)
        return removed + len(trash)

    def rescan(self) -> int:
        """Walk the disk (stats every file): account the saved rolls found, forget the ones gone, remove the
        folders no roll owns (unsaved ones no thread is writing, evicted ones left half-removed), then enforce
        the caps; how many rolls went."""
        with self._lock:
            trash: list[Path] = []
            found: dict[str, tuple[float, int]] = {}
            for d in list(self.root.iterdir()):
                if d.name.startswith(TRASH):
                    trash.append(d)
                elif ROLL_ID.fullmatch(d.name) and d.is_dir() and d.name not in self._writing:
                    try:
                        found[d.name] = ((d / "roll.json").stat().st_mtime, _du(d))
                    except FileNotFoundError:  # never saved, and no thread is writing it: a crash's leftover
                        trash.append(self._to_trash(d.name))
            self._writing = {k: r for k, r in self._writing.items() if (self.root / k).is_dir()}
            gone = [k for k in self._rolls if k not in found]
            for k in gone:
                del self._rolls[k]
            for k, (mtime, size) in sorted(found.items(), key=lambda kv: kv[1][0]):
                if k in self._rolls:
                    self._rolls[k].bytes = size
                else:
                    self._seq += 1
                    self._add(k, _Roll(mtime, self._seq, size))
            self._bytes = sum(r.bytes for r in self._rolls.values())
            self._scanned = time.monotonic()
            evicted = self._evict(self._victims(set())[0])
        _remove(trash + evicted)
        if gone or evicted:
            log.info("store rescan: %d roll(s) gone from the disk, %d evicted", len(gone), len(evicted))
        return len(gone) + len(evicted)

    # ---- under the lock ---------------------------------------------------------------------------------
    def _add(self, roll_id: str, roll: _Roll) -> None:
        """Account a newly saved roll, keeping ``_rolls`` in creation order."""
        if roll_id in self._rolls:
            return
        last = self._rolls[next(reversed(self._rolls))] if self._rolls else None
        self._rolls[roll_id] = roll
        self._bytes += roll.bytes
        if last is not None and (last.created, last.seq) > (roll.created, roll.seq):  # saved after a younger one
            self._rolls = collections.OrderedDict(sorted(self._rolls.items(), key=_order))

    def _recount(self, roll_id: str, folder: Path) -> None:
        roll = self._rolls.get(roll_id)
        if roll is not None:
            size = _du(folder)
            self._bytes += size - roll.bytes
            roll.bytes = size

    def _pinned(self, keep: set[str]) -> int:
        """Bytes no eviction frees: rolls being rendered, ``keep``, and held reservations."""
        return (sum(r.bytes for k, r in self._rolls.items() if k in keep or k in self._busy)
                + sum(self._reserved.values()))

    def _victims(self, keep: set[str], extra: int = 0) -> tuple[list[str], int, int]:
        """The oldest rolls to evict for the caps to hold with ``extra`` bytes more, and the count and bytes
        (reservations and ``extra`` included) they would leave."""
        cutoff = time.time() - self.limits.max_age_hours * 3600
        count, total = len(self._rolls), self._bytes + sum(self._reserved.values()) + extra
        out = []
        for k, r in self._rolls.items():  # oldest first
            if count <= self.limits.max_rolls and total <= self.max_bytes and r.created >= cutoff:
                break
            if k in keep or k in self._busy:
                continue
            out.append(k)
            count -= 1
            total -= r.bytes
        return out, count, total

    def _evict(self, roll_ids: list[str]) -> list[Path]:
        """Forget these rolls and move their folders aside (gone for every request at once); the folders
        to remove, outside the lock."""
        trash = []
        for k in roll_ids:
            roll = self._rolls.pop(k, None)
            if roll is not None:
                self._bytes -= roll.bytes
            trash.append(self._to_trash(k))
        if roll_ids:
            log.info("store: evicted %d roll(s) (caps: %d rolls, %g MB, %g h)", len(roll_ids),
                     self.limits.max_rolls, self.limits.max_mb, self.limits.max_age_hours)
        return trash

    def _to_trash(self, roll_id: str) -> Path:
        folder, trash = self.root / roll_id, self.root / f"{TRASH}{roll_id}"
        try:
            os.replace(folder, trash)
        except FileNotFoundError:
            pass
        except OSError:  # cannot rename: remove it where it is
            return folder
        return trash


def _order(item: tuple[str, _Roll]) -> tuple[float, int]:
    return item[1].created, item[1].seq


def _du(folder: Path) -> int:
    """Bytes of the files in one roll's folder (a file removed meanwhile counts 0)."""
    total = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for e in entries:
        try:
            if e.is_file(follow_symlinks=False):
                total += e.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue
    return total


def _remove(folders: list[Path]) -> None:
    for d in folders:
        shutil.rmtree(d, ignore_errors=True)


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:.3g}"

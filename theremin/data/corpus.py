"""A folder of MIDI files → a text corpus: ``train.txt`` and ``val.txt`` (one piece per line) + ``manifest.json``.

:func:`build_corpus` reads straight down: discover the files → encode them on all cores → de-duplicate →
split → write. What it guarantees:

- every MIDI-named entry (.mid .midi .kar in any case, all subfolders) is accounted for: used, a duplicate,
  or failed with its reason (unreadable folders, dangling or looping links, FIFOs and devices too); one bad
  file never stops a build, and reading never blocks (only regular files are opened);
- names are kept losslessly: a file name that is not UTF-8 is recorded surrogate-escaped (as Python's
  ``os.fsdecode`` gives it; JSON ``\\udcXX`` escapes in the manifest) and printed with ``\\xNN`` escapes;
- identical files (same bytes) count once: the first path in sorted order is kept, the others are listed
  as duplicates of it;
- the split is by file and by content: a file goes to val when the first 32 bits of its SHA-256, as a
  fraction of 2**32, are below ``val_fraction``. Adding files never moves the ones already there. The one
  exception keeps both splits usable: with 2+ files and none hashed into val, the file of smallest hash
  moves to val (and with none in train, the val file of largest hash moves to train); the manifest says so;
- optional transposition augmentation of train only: each train piece also appears moved by every k in
  ``transpose=(lo, hi)`` (inclusive, k != 0) that keeps its notes within MIDI's 0..127; with ``humanize``
  (theremin.music.humanize), a share of those copies is played or sequenced first (seeded by the file's hash);
- outputs are written to temp files and moved into place together once all are complete (a full disk or a
  kill leaves the previous corpus as it was; the next build removes the temp files a killed one left); a
  re-run over unchanged input with the same codec and settings reuses them without encoding (``reused``);
- a corpus folder is never overwritten by a corpus of another input folder: that build is refused.

Memory stays at a few files' worth: results stream in path order into the output files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import stat
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from theremin.codec.midichar import MidiChar
from theremin.data.demo import build_demo_midi
from theremin.errors import ThereminError
from theremin.fsio import file_kind, stale_temps, temp_beside
from theremin.music.humanize import HumanizeConfig, humanize
from theremin.music.midi import MAX_NOTES, MidiError, is_midi_path, parse_midi, read_regular_file
from theremin.procs import die_with_parent

MANIFEST_VERSION = 1
TRAIN_FILE, VAL_FILE, MANIFEST_FILE = "train.txt", "val.txt", "manifest.json"
FIRST_CHAR = "\U00010000"  # midichar never goes below this: no whitespace, no line break


class CorpusError(ThereminError):
    """A corpus that cannot be built; the message names the folder or setting and the reason."""


def printable(name: str) -> str:
    """A file name as a terminal can show it: bytes that are not UTF-8 (surrogate-escaped) as ``\\xNN``."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file system gives: show its code point
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class CorpusSettings:
    """What decides a corpus's content besides its files and the codec (conf/data/*.yaml sets them)."""

    val_fraction: float = 0.05
    transpose: tuple[int, int] | None = None  # (lo, hi) semitones, inclusive; 0 excluded
    min_notes: int = 8
    max_notes: int = MAX_NOTES
    humanize: HumanizeConfig | None = None  # a share of the transposed copies played or sequenced first

    def __post_init__(self):
        if not 0.0 <= self.val_fraction < 1.0:
            raise CorpusError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.min_notes < 1:
            raise CorpusError(f"data.min_notes must be >= 1, got {self.min_notes}")
        if self.max_notes < self.min_notes:
            raise CorpusError(f"data.max_notes must be >= data.min_notes ({self.min_notes}), got {self.max_notes}")
        if self.transpose is not None:
            if len(self.transpose) != 2 or int(self.transpose[0]) > int(self.transpose[1]):
                raise CorpusError(f"data.transpose must be [lo, hi] semitones with lo <= hi, got {self.transpose!r}")
            object.__setattr__(self, "transpose", (int(self.transpose[0]), int(self.transpose[1])))
        object.__setattr__(self, "humanize", HumanizeConfig.from_config(self.humanize))
        if self.humanize is not None and not self.shifts:
            raise CorpusError("data.humanize plays a share of the transposed copies of train pieces: it needs "
                              "data.transpose too")

    @property
    def shifts(self) -> list[int]:
        if self.transpose is None:
            return []
        lo, hi = self.transpose
        return [k for k in range(lo, hi + 1) if k != 0]

    def as_dict(self) -> dict:
        """What the manifest records (and the fingerprint hashes); max_notes only when changed, so corpora built
        before it existed are still reused."""
        d = {"val_fraction": float(self.val_fraction), "transpose": None if self.transpose is None else
             list(self.transpose), "min_notes": int(self.min_notes)}
        if self.max_notes != MAX_NOTES:
            d["max_notes"] = int(self.max_notes)
        if self.humanize is not None:  # recorded only when set: corpora made before it keep their fingerprint
            d["humanize"] = self.humanize.as_dict()
        return d


# ------------------------------------------------------------------------------------------------ report


@dataclass
class CorpusReport:
    """What a build made (or found made already, ``reused``). Paths in ``failed``/``duplicates`` are relative
    to ``input_dir``; ``notes``/``chars``/``distinct_chars`` count the corpus before augmentation."""

    out_dir: Path
    input_dir: Path
    ok: int  # files used (after de-duplication)
    failed: dict[str, str] = field(default_factory=dict)  # path → reason
    duplicates: dict[str, str] = field(default_factory=dict)  # path → path kept
    notes: int = 0
    chars: int = 0
    distinct_chars: int = 0
    train_pieces: int = 0
    val_pieces: int = 0
    train_lines: int = 0  # train pieces + their transpositions
    train_notes: int = 0  # incl. transpositions
    val_notes: int = 0
    transpose_skipped: int = 0  # transpositions left out because a note would leave 0..127
    split_moves: list[dict] = field(default_factory=list)  # files moved off their hash split, and why
    reused: bool = False
    fingerprint: str = ""

    @property
    def train_path(self) -> Path:
        return self.out_dir / TRAIN_FILE

    @property
    def val_path(self) -> Path:
        return self.out_dir / VAL_FILE

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / MANIFEST_FILE

    def summary(self, max_failures: int = 10) -> str:
        extra = self.train_lines - self.train_pieces
        aug = f" (+{extra:,} transposed lines)" if extra else ""
        lines = [
            f"corpus {printable(str(self.out_dir))}: {self.ok:,} files used → {self.train_pieces:,} train{aug} + "
            f"{self.val_pieces:,} val pieces; {self.notes:,} notes, {self.chars:,} chars "
            f"({self.distinct_chars:,} distinct)",
            f"  from {printable(str(self.input_dir))}: {len(self.failed):,} failed, "
            f"{len(self.duplicates):,} duplicates",
        ]
        for path, reason in list(self.failed.items())[:max_failures]:
            lines.append(f"    failed {printable(path)}: {reason}")
        if len(self.failed) > max_failures:
            lines.append(f"    ... and {len(self.failed) - max_failures:,} more failures in "
                         f"{printable(str(self.manifest_path))}")
        for move in self.split_moves:
            lines.append(f"  moved {printable(move['path'])} to {move['to']}: {move['why']}")
        if self.transpose_skipped:
            lines.append(f"  {self.transpose_skipped:,} transpositions skipped (a note would leave 0..127)")
        if self.reused:
            lines.append("  reused: the input, codec and settings are those of the last build, nothing re-encoded")
        return "\n".join(lines)

    @classmethod
    def from_manifest(cls, manifest: dict, out_dir: Path, reused: bool = False) -> CorpusReport:
        t = manifest["totals"]
        return cls(
            out_dir=Path(out_dir), input_dir=Path(manifest["input_dir"]), ok=t["files"]["ok"],
            failed=dict(manifest["failed"]), duplicates=dict(manifest["duplicates"]), notes=t["notes"],
            chars=t["chars"], distinct_chars=t["distinct_chars"], train_pieces=t["train"]["pieces"],
            val_pieces=t["val"]["pieces"], train_lines=t["train"]["lines"], train_notes=t["train"]["notes"],
            val_notes=t["val"]["notes"], transpose_skipped=t["train"]["transpose_skipped"],
            split_moves=list(manifest.get("split_moves", [])), reused=reused,
            fingerprint=manifest["fingerprint"],
        )


# ------------------------------------------------------------------------------------------------ 1. discover


class _Entry(NamedTuple):
    rel: str  # posix path relative to input_dir
    path: str
    size: int
    mtime_ns: int


class Discovery(NamedTuple):
    entries: list[_Entry]  # regular MIDI files, sorted by relative path
    failed: dict[str, str]  # MIDI-named entries that are no regular file, and unreadable folders → reason


def _unreachable(path: str, err: OSError) -> str:
    """Why a MIDI-named entry whose target cannot be reached is not used."""
    try:
        is_link = stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        is_link = False
    if is_link and isinstance(err, FileNotFoundError):
        return "dangling symbolic link (its target does not exist)"
    if is_link and err.errno == errno.ELOOP:
        return "symbolic link loop (the link leads back to itself)"
    return f"unreadable: {err.strerror or err}"


def find_midi_files(input_dir: str | os.PathLike) -> Discovery:
    """MIDI-named entries under ``input_dir`` (recursive): regular files to encode, and the others with the
    reason they are not read. Links to files are followed, links to folders are not (a loop would never end).
    Only ``stat`` is called here: nothing is opened, so a FIFO or a device cannot block the walk."""
    root = Path(input_dir)
    found: list[_Entry] = []
    failed: dict[str, str] = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            failed[f"{folder.relative_to(root).as_posix()}/"] = f"unreadable folder: {e.strerror or e}"
            continue
        for entry in entries:
            rel = Path(entry.path).relative_to(root).as_posix()
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
            except OSError as e:  # gone mid-walk
                if is_midi_path(entry.name):
                    failed[rel] = f"unreadable: {e.strerror or e}"
                continue
            if not is_midi_path(entry.name):
                continue
            try:
                st = os.stat(entry.path)  # follows a link to its target
            except OSError as e:
                failed[rel] = _unreachable(entry.path, e)
                continue
            if stat.S_ISREG(st.st_mode):
                found.append(_Entry(rel, entry.path, st.st_size, st.st_mtime_ns))
            elif stat.S_ISDIR(st.st_mode):
                failed[rel] = "a link to a folder (links to folders are not followed)"
            else:
                failed[rel] = f"not a regular file ({file_kind(st.st_mode)}): not read"
    found.sort()
    return Discovery(found, dict(sorted(failed.items())))


# ------------------------------------------------------------------------------------------------ 2. encode


class _Encoded(NamedTuple):
    sha256: str | None  # None when the file could not be read
    text: str | None  # None when it failed
    notes: int
    reason: str | None
    augmented: list[str] | None  # transpositions, made only for a file whose hash puts it in train
    skipped: int  # transpositions left out (a note would leave 0..127)
    copies: dict | None = None  # notes and chars of the augmented lines when counted (_copy_counts)


def hash_fraction(sha256: str) -> float:
    """The split key of a file: its hash's first 32 bits as a fraction of 2**32 (val when < val_fraction)."""
    return int(sha256[:8], 16) / 2**32


def split_of(sha256: str, val_fraction: float) -> str:
    return "val" if hash_fraction(sha256) < val_fraction else "train"


def _augmented(codec, text: str, sha: str, settings: CorpusSettings) -> tuple[list[str], int]:
    """A train piece's copies, one per transposition that keeps 0..127, and how many were left out. With
    ``settings.humanize``, each copy is humanized first with probability ``share``, from a generator seeded
    by the file's hash (a rebuild writes the same corpus)."""
    h = settings.humanize
    rng = random.Random(sha) if h is not None else None
    piece, out = None, []
    for k in settings.shifts:
        src = text
        if h is not None and rng.random() < h.share:
            try:
                if piece is None:
                    piece = codec.decode(text)
                src = codec.encode(humanize(piece, rng, h))
            except ThereminError:  # a copy the codec refuses (e.g. a performed piece too long): keep it plain
                src = text
        t = codec.transpose(src, k)
        if t is not None:
            out.append(t)
    return out, len(settings.shifts) - len(out)


def _copy_counts(codec, copies: list[str], settings: CorpusSettings) -> dict:
    """A manifest row's notes and chars of a train piece's copies as written: recorded only when humanized
    copies may differ from the original (a copy can merge two notes and needs other rest chars); otherwise the
    totals are the original's times its lines."""
    if settings.humanize is None:
        return {}
    return {"copy_notes": sum(map(codec.count_notes, copies)), "copy_chars": sum(map(len, copies))}


def _encode_one(codec, path: str, settings: CorpusSettings) -> _Encoded:
    """Read (never blocking), hash, parse, encode and transpose one file; every failure becomes its reason."""
    try:
        data = read_regular_file(path)
    except MidiError as e:
        return _Encoded(None, None, 0, e.reason, None, 0)
    sha = hashlib.sha256(data).hexdigest()
    try:
        piece = parse_midi(data, path, min_notes=settings.min_notes, max_notes=settings.max_notes)
        text = codec.encode(piece)
        if not text or min(text) < FIRST_CHAR:  # one piece per line needs a non-empty line without breaks
            raise ValueError("the codec returned an empty text or characters below U+10000")
        notes = codec.count_notes(text)
        augmented, skipped, copies = None, 0, None
        if settings.shifts and split_of(sha, settings.val_fraction) == "train":
            augmented, skipped = _augmented(codec, text, sha, settings)
            copies = _copy_counts(codec, augmented, settings)
    except ThereminError as e:  # MidiError, CodecError: the file's reason
        return _Encoded(sha, None, 0, getattr(e, "reason", None) or str(e), None, 0)
    except Exception as e:  # anything else is a reader/codec bug on this file: report it, go on
        return _Encoded(sha, None, 0, f"unexpected {type(e).__name__}: {e}"[:300], None, 0)
    return _Encoded(sha, text, notes, None, augmented, skipped, copies)




_worker_codec = None


def _init_worker(codec_cls, config: dict, parent: int) -> None:
    global _worker_codec
    die_with_parent(parent)
    _worker_codec = codec_cls(**config)


def _encode_chunk(paths: list[str], settings: CorpusSettings) -> list[_Encoded]:
    return [_encode_one(_worker_codec, p, settings) for p in paths]


def encode_all(entries: list[_Entry], codec, workers: int, settings: CorpusSettings, bar) -> Iterator[_Encoded]:
    """Encode files, yielding results in input order; ``workers == 1`` stays in this process."""
    paths = [e.path for e in entries]
    if workers == 1:
        for p in paths:
            yield _encode_one(codec, p, settings)
            bar.update()
        return
    init = (type(codec), codec.config, os.getpid())
    # chunks amortise the inter-process calls; ~8 per worker keep the load even at the end
    size = max(1, min(64, len(paths) // (workers * 8)))
    todo = deque(paths[i: i + size] for i in range(0, len(paths), size))
    pending: deque = deque()  # (chunk, future), in order; bounded so results never pile up in memory
    pool = None
    try:
        while todo or pending:
            try:
                if pool is None:
                    pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=init)
                while todo and len(pending) < 4 * workers:
                    pending.append((todo[0], pool.submit(_encode_chunk, todo[0], settings)))
                    todo.popleft()
                results = pending[0][1].result()
                pending.popleft()
            except BrokenProcessPool:
                # a worker died (a crash in a parser, the OOM killer) and took every call in flight with it;
                # the culprit is one of them. Retry them one file per call; a one-file call that is first in
                # line when the pool breaks runs alone in a fresh process, which settles that file for sure.
                pool.shutdown(wait=True, cancel_futures=True)
                pool = None
                in_flight = [c for c, _ in pending]
                pending.clear()
                if not in_flight:  # a worker died between calls: nothing to blame, start a new pool
                    continue
                retry = [[p] for c in in_flight for p in c]
                if len(in_flight[0]) > 1:
                    todo.extendleft(reversed(retry))
                    continue
                todo.extendleft(reversed(retry[1:]))
                results = [_encode_isolated(retry[0][0], init, settings)]
            for r in results:
                yield r
                bar.update()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _encode_isolated(path: str, init: tuple, settings: CorpusSettings) -> _Encoded:
    with ProcessPoolExecutor(max_workers=1, initializer=_init_worker, initargs=init) as solo:
        try:
            return solo.submit(_encode_chunk, [path], settings).result()[0]
        except BrokenProcessPool:
            return _Encoded(None, None, 0, "the worker process died on this file (a crash, or out of memory)",
                            None, 0)


# ------------------------------------------------------------------------------------------------ 3. de-duplicate


class _Outcome(NamedTuple):
    rel: str
    result: _Encoded
    duplicate_of: str | None  # the first path with the same bytes, if another came before


def deduplicate(entries: Iterable[_Entry], results: Iterable[_Encoded]) -> Iterator[_Outcome]:
    """Each file's result, marked as a duplicate when a file with the same bytes came earlier (path order)."""
    first: dict[str, str] = {}
    for entry, r in zip(entries, results):
        kept = first.setdefault(r.sha256, entry.rel) if r.sha256 is not None else entry.rel
        yield _Outcome(entry.rel, r, kept if kept != entry.rel else None)


# ------------------------------------------------------------------------------------------------ 4-5. split, write


class _Sink:
    """A staged text file being written: an OSError (a full disk) becomes a :class:`CorpusError` naming the
    output it stands for."""

    def __init__(self, path: Path, output: str):
        self.output = path.parent / output
        self.f = self._do(open, path, "w", encoding="utf-8", newline="\n")

    def _do(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OSError as e:
            raise CorpusError(f"{printable(str(self.output))}: cannot write the corpus: {e.strerror or e}; "
                              "nothing was replaced, the previous corpus (if any) is as it was") from e

    def write(self, lines: Sequence[str]) -> None:
        if lines:
            self._do(self.f.write, "\n".join(lines) + "\n")

    def write_text(self, text: str) -> None:
        self._do(self.f.write, text)

    def close(self) -> None:
        self._do(self.f.close)


@dataclass
class _Tally:
    """What the write step learnt: a row per file used (in path order), failures, duplicates, chars."""

    rows: list[dict] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    duplicates: dict[str, str] = field(default_factory=dict)
    chars: set[str] = field(default_factory=set)
    split_chars: dict[str, set[str]] = field(default_factory=lambda: {"train": set(), "val": set()})
    moves: list[dict] = field(default_factory=list)


def write_splits(outcomes: Iterable[_Outcome], staged: dict[str, Path], val_fraction: float) -> _Tally:
    """Stream each used file's lines into its split's staged file; tally everything else."""
    tally = _Tally()
    sinks = {"train": _Sink(staged[TRAIN_FILE], TRAIN_FILE), "val": _Sink(staged[VAL_FILE], VAL_FILE)}
    try:
        for rel, r, duplicate_of in outcomes:
            if duplicate_of is not None:
                tally.duplicates[rel] = duplicate_of
                continue
            if r.text is None:
                tally.failed[rel] = r.reason or "unknown failure"
                continue
            split = split_of(r.sha256, val_fraction)
            block = [r.text, *(r.augmented or [])] if split == "train" else [r.text]
            sinks[split].write(block)
            tally.chars.update(r.text)
            for line in block:
                tally.split_chars[split].update(line)
            tally.rows.append({"path": rel, "sha256": r.sha256, "split": split, "notes": r.notes,
                               "chars": len(r.text), "lines": len(block),
                               "transpose_skipped": r.skipped if split == "train" else 0})
            if split == "train":  # humanized copies: counted, not multiplied
                tally.rows[-1].update(r.copies or {})
    finally:
        for sink in sinks.values():
            sink.close()
    return tally


def _move_lines(src: Path, output: str, start: int, count: int) -> tuple[list[str], set[str]]:
    """Cut lines [start, start + count) out of a staged file; return them and the distinct chars of what stays."""
    tmp = temp_beside(src)
    removed: list[str] = []
    kept_chars: set[str] = set()
    try:
        out = _Sink(tmp, output)
        with open(src, encoding="utf-8", newline="\n") as f:
            for i, line in enumerate(f):
                line = line.rstrip("\n")
                if start <= i < start + count:
                    removed.append(line)
                else:
                    out.write([line])
                    kept_chars.update(line)
        out.close()
        os.replace(tmp, src)
    finally:
        tmp.unlink(missing_ok=True)
    return removed, kept_chars


def _start_line(rows: list[dict], row: dict) -> int:
    """Line of ``row`` in its split's file: rows are written in order, each taking ``lines`` lines."""
    return sum(r["lines"] for r in rows[: rows.index(row)] if r["split"] == row["split"])


def balance_splits(tally: _Tally, staged: dict[str, Path], codec, settings: CorpusSettings) -> _Tally:
    """Keep both splits usable: move one file when all of 2+ files hashed into one split (rare, said so)."""
    rows = tally.rows
    in_val = [r for r in rows if r["split"] == "val"]
    in_train = [r for r in rows if r["split"] == "train"]
    if settings.val_fraction > 0 and len(rows) >= 2 and not in_val:
        row = min(in_train, key=lambda r: (hash_fraction(r["sha256"]), r["sha256"]))
        block, tally.split_chars["train"] = _move_lines(staged[TRAIN_FILE], TRAIN_FILE, _start_line(rows, row),
                                                        row["lines"])
        sink = _Sink(staged[VAL_FILE], VAL_FILE)
        sink.write(block[:1])
        sink.close()
        tally.split_chars["val"] = set(block[0])
        row.update(split="val", lines=1, transpose_skipped=0)
        row.pop("copy_notes", None), row.pop("copy_chars", None)
        tally.moves.append({"path": row["path"], "to": "val",
                            "why": "no file hashed into val: the file of smallest hash moved there"})
    elif rows and not in_train:
        row = max(in_val, key=lambda r: (hash_fraction(r["sha256"]), r["sha256"]))
        (text,), tally.split_chars["val"] = _move_lines(staged[VAL_FILE], VAL_FILE, _start_line(rows, row), 1)
        augmented, skipped = _augmented(codec, text, row["sha256"], settings)
        sink = _Sink(staged[TRAIN_FILE], TRAIN_FILE)
        sink.write([text, *augmented])
        sink.close()
        tally.split_chars["train"] = set(text).union(*augmented)
        row.update(split="train", lines=1 + len(augmented), transpose_skipped=skipped)
        row.update(_copy_counts(codec, augmented, settings))
        tally.moves.append({"path": row["path"], "to": "train",
                            "why": "no file hashed into train: the val file of largest hash moved there"})
    return tally


# ------------------------------------------------------------------------------------------------ manifest


def _codec_id(codec) -> str:
    return f"{type(codec).__module__}.{type(codec).__qualname__}"


def _fingerprint(input_dir: Path, entries: list[_Entry], codec, settings: dict) -> str:
    h = hashlib.sha256()
    head = {"version": MANIFEST_VERSION, "input_dir": str(input_dir),
            "codec": [_codec_id(codec), codec.config], "settings": settings}
    h.update(json.dumps(head, sort_keys=True).encode())
    for e in entries:  # surrogatepass: a name that is not UTF-8 hashes as what it is
        h.update(f"{e.rel}\0{e.size}\0{e.mtime_ns}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


_SURROGATE = re.compile("[\ud800-\udfff]")


def _dumps(x) -> str:
    """JSON with UTF-8 left readable; a lone surrogate (a name that is not UTF-8) as its \\uXXXX escape, which
    loads back to the same string."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(x, ensure_ascii=False))


def _manifest_text(m: dict) -> str:
    """JSON with one file (or failure, or total) per line: readable, and diffable between builds."""
    out = []
    for k, v in m.items():
        if isinstance(v, list) and v:
            body = "[\n" + ",\n".join(f"  {_dumps(r)}" for r in v) + "\n ]"
        elif isinstance(v, dict) and v and k != "codec":
            body = "{\n" + ",\n".join(f"  {_dumps(a)}: {_dumps(b)}" for a, b in v.items()) + "\n }"
        else:
            body = _dumps(v)
        out.append(f" {_dumps(k)}: {body}")
    return "{\n" + ",\n".join(out) + "\n}\n"


def load_manifest(out_dir: str | os.PathLike) -> dict | None:
    """The manifest.json of a corpus folder, or None when missing or unreadable."""
    try:
        return json.loads((Path(out_dir) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _relative_input(input_dir: Path, out_dir: Path) -> str | None:
    try:
        return Path(os.path.relpath(input_dir, out_dir)).as_posix()
    except ValueError:  # another drive
        return None


def _manifest(input_dir: Path, out_dir: Path, codec, settings: CorpusSettings, fingerprint: str,
              discovery: Discovery, tally: _Tally, outputs: dict | None) -> dict:
    rows = tally.rows

    def split_totals(name: str) -> dict:
        rs = [r for r in rows if r["split"] == name]
        return {"pieces": len(rs), "lines": sum(r["lines"] for r in rs),
                "notes": sum(r["notes"] + r.get("copy_notes", r["notes"] * (r["lines"] - 1)) for r in rs),
                "chars": sum(r["chars"] + r.get("copy_chars", r["chars"] * (r["lines"] - 1)) for r in rs),
                "distinct_chars": len(tally.split_chars[name]),
                "augmented_lines": sum(r["lines"] - 1 for r in rs),
                "transpose_skipped": sum(r["transpose_skipped"] for r in rs)}

    failed = {**discovery.failed, **tally.failed}
    return {
        "version": MANIFEST_VERSION,
        "input_dir": str(input_dir),
        "input_dir_relative": _relative_input(input_dir, out_dir),  # still the same folder if both move
        "codec": {"class": _codec_id(codec), "config": codec.config},
        "settings": settings.as_dict(),
        "fingerprint": fingerprint,
        "outputs": outputs,
        "files": rows,
        "failed": dict(sorted(failed.items())),
        "duplicates": tally.duplicates,
        "split_moves": tally.moves,
        "totals": {
            "files": {"found": len(discovery.entries) + len(discovery.failed), "ok": len(rows),
                      "failed": len(failed), "duplicates": len(tally.duplicates)},
            "notes": sum(r["notes"] for r in rows),
            "chars": sum(r["chars"] for r in rows),
            "distinct_chars": len(tally.chars),
            "train": split_totals("train"),
            "val": split_totals("val"),
        },
    }


# ------------------------------------------------------------------------------------------------ the folder


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """One build of a corpus folder at a time (a lock on the folder itself; released if the process dies)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): builds are not serialised
        yield
        return
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another build of {printable(str(out_dir))} to finish", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_stale_temps(out_dir: Path) -> None:
    """Temp files of a build that was killed (no build holds the lock, so none is in use)."""
    for name in (TRAIN_FILE, VAL_FILE, MANIFEST_FILE):
        for tmp in stale_temps(out_dir / name):
            tmp.unlink(missing_ok=True)


def _check_same_input(out_dir: Path, input_dir: Path) -> None:
    """Refuse to overwrite a corpus built from another input folder (or one theremin did not build)."""
    if not (out_dir / MANIFEST_FILE).exists():
        if (out_dir / TRAIN_FILE).exists() or (out_dir / VAL_FILE).exists():
            raise CorpusError(f"{printable(str(out_dir))} holds a corpus without {MANIFEST_FILE} (not built by "
                              f"theremin?): it is not overwritten. Choose another name (data.name=...) for the "
                              f"corpus of {printable(str(input_dir))}, or remove that folder")
        return
    m = load_manifest(out_dir) or {}
    old = m.get("input_dir")
    if old is None or old == str(input_dir):
        return
    if m.get("input_dir_relative") is not None and m["input_dir_relative"] == _relative_input(input_dir, out_dir):
        return  # the data folder moved as a whole
    raise CorpusError(
        f"{printable(str(out_dir))} holds the corpus of {printable(old)}, not of {printable(str(input_dir))}: it is "
        f"not overwritten. Give this corpus another name (data.name=<new name>), or remove {printable(str(out_dir))} "
        f"to rebuild it from {printable(str(input_dir))}")


def _reusable(manifest: dict | None, out_dir: Path, fingerprint: str) -> bool:
    if not manifest or manifest.get("version") != MANIFEST_VERSION or manifest.get("fingerprint") != fingerprint:
        return False
    outputs = manifest.get("outputs") or {}
    for name in (TRAIN_FILE, VAL_FILE):
        try:
            if (out_dir / name).stat().st_size != outputs[name]["bytes"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


@contextlib.contextmanager
def _staged(out_dir: Path) -> Iterator[dict[str, Path]]:
    """Temp files beside the outputs; the caller moves them into place; whatever is left is removed."""
    staged = {name: temp_beside(out_dir / name) for name in (TRAIN_FILE, VAL_FILE, MANIFEST_FILE)}
    try:
        yield staged
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


def _sizes(staged: dict[str, Path]) -> dict:
    return {name: {"bytes": staged[name].stat().st_size} for name in (TRAIN_FILE, VAL_FILE)}


def _commit(staged: dict[str, Path], out_dir: Path, with_corpus: bool) -> None:
    """Every staged file is complete: move them into place, the manifest (what marks a build done) last."""
    for name in (VAL_FILE, TRAIN_FILE):
        if with_corpus:
            os.replace(staged[name], out_dir / name)
        else:  # nothing usable: a corpus from an earlier build would contradict the manifest
            (out_dir / name).unlink(missing_ok=True)
    os.replace(staged[MANIFEST_FILE], out_dir / MANIFEST_FILE)


def _write_manifest(path: Path, m: dict) -> None:
    sink = _Sink(path, MANIFEST_FILE)
    sink.write_text(_manifest_text(m))
    sink.close()


def _nothing_usable(input_dir: Path, out_dir: Path, discovery: Discovery, tally: _Tally) -> CorpusError:
    found = len(discovery.entries) + len(discovery.failed)
    if not found:
        why = "no MIDI files found (.mid, .midi, .kar in any case, in all subfolders)"
    else:
        failed = {**discovery.failed, **tally.failed}
        first = "; ".join(f"{printable(p)}: {r}" for p, r in list(failed.items())[:3])
        why = (f"none of the {found} MIDI files is usable ({len(failed)} failed, "
               f"{len(tally.duplicates)} duplicates; e.g. {first}); all reasons are in {out_dir / MANIFEST_FILE}")
    return CorpusError(f"{printable(str(input_dir))}: {why}")


# ------------------------------------------------------------------------------------------------ build


def build_corpus(
    input_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    codec=None,
    workers: int | None = None,
    *,
    val_fraction: float = 0.05,
    transpose: Sequence[int] | None = None,
    min_notes: int = 8,
    max_notes: int = MAX_NOTES,
    humanize: dict | HumanizeConfig | None = None,
    progress: bool = True,
) -> CorpusReport:
    """Encode every MIDI file under ``input_dir`` into ``out_dir``/{train,val}.txt + manifest.json.

    ``codec``: a MidiChar (default: ``MidiChar()``); workers re-create it from ``codec.config``.
    ``workers``: processes (None: all cores; 1: this process). ``transpose=(lo, hi)``: augment train with
    every transposition lo..hi semitones (inclusive, 0 excluded). ``min_notes``/``max_notes``: a file with
    fewer/more notes fails. ``humanize`` (:class:`~theremin.music.humanize.HumanizeConfig` or its mapping): a share
    of the transposed copies played or sequenced first. Raises :class:`CorpusError` (after writing the manifest)
    when no file is usable.
    """

    if codec is None:

        codec = MidiChar()
    settings = CorpusSettings(val_fraction=float(val_fraction), min_notes=int(min_notes), max_notes=int(max_notes),
                              transpose=None if transpose is None else tuple(transpose), humanize=humanize)
    input_dir = Path(input_dir).resolve()
    out_dir = Path(out_dir).resolve()
    if not input_dir.is_dir():
        raise CorpusError(f"data.input_dir: {printable(str(input_dir))} is not a folder (not found)")
    if workers is not None and workers < 1:
        raise CorpusError(f"workers must be >= 1 (or None for all cores), got {workers}")
    if type(codec)(**codec.config).config != codec.config:  # workers rebuild it this way: it must be faithful
        raise CorpusError(f"{type(codec).__name__}(**codec.config) does not rebuild the same codec")

    out_dir.mkdir(parents=True, exist_ok=True)
    with _locked(out_dir):
        _remove_stale_temps(out_dir)
        discovery = find_midi_files(input_dir)
        fingerprint = _fingerprint(input_dir, discovery.entries, codec, settings.as_dict())
        manifest = load_manifest(out_dir)
        if _reusable(manifest, out_dir, fingerprint):
            with contextlib.suppress(KeyError, TypeError, ValueError):  # a manifest edited by hand: build afresh
                return CorpusReport.from_manifest(manifest, out_dir, reused=True)
        _check_same_input(out_dir, input_dir)

        entries = discovery.entries
        workers = max(1, min(workers or os.cpu_count() or 1, len(entries)))
        with _staged(out_dir) as staged, tqdm(total=len(entries), unit="file", disable=not progress,
                                              desc=f"prep {printable(input_dir.name)}") as bar:
            results = encode_all(entries, codec, workers, settings, bar)  # in path order, on all cores
            outcomes = deduplicate(entries, results)
            tally = write_splits(outcomes, staged, settings.val_fraction)
            tally = balance_splits(tally, staged, codec, settings)
            m = _manifest(input_dir, out_dir, codec, settings, fingerprint, discovery, tally,
                          outputs=_sizes(staged) if tally.rows else None)
            _write_manifest(staged[MANIFEST_FILE], m)
            _commit(staged, out_dir, with_corpus=bool(tally.rows))
    if not tally.rows:
        raise _nothing_usable(input_dir, out_dir, discovery, tally)
    return CorpusReport.from_manifest(m, out_dir)


def build_configured(
    input_dir: str | os.PathLike,
    corpus_dir: str | os.PathLike,
    codec=None,
    *,
    demo: dict | None = None,
    workers: int | None = None,
    progress: bool = True,
    **settings,
) -> CorpusReport:
    """:func:`build_corpus` for a data config (conf/data/*.yaml: the one corpus definition theremin-prep,
    theremin-tokenize and theremin-train share). ``demo`` ({composer, dir}): when ``input_dir`` is that folder
    and holds no MIDI yet, it is generated from music21's corpus; no other folder is ever generated."""
    input_dir = Path(os.path.expanduser(str(input_dir)))
    if demo and input_dir.resolve() == Path(os.path.expanduser(str(demo["dir"]))).resolve() \
            and not find_midi_files(input_dir).entries:

        print(f"building the demo MIDI folder {input_dir} from music21's corpus ({demo['composer']})")
        build_demo_midi(input_dir, composer=demo["composer"], workers=workers, progress=progress)
    return build_corpus(input_dir, Path(os.path.expanduser(str(corpus_dir))), codec, workers, progress=progress,
                        **settings)

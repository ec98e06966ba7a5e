"""A folder of MIDI files → a text corpus: ``train.txt`` and ``val.txt`` (one piece per line) + ``manifest.json``.

:func:`build_corpus` walks the folder (all subfolders; .mid .midi .kar in any case), encodes every file with
the codec on all cores, and writes the corpus. What it guarantees:

- one bad file never stops a build: every failure is in the report and the manifest, path → reason;
- identical files (same bytes) count once: the first path in sorted order is kept, the others are listed
  as duplicates of it;
- the split is by file and by content: a file goes to val when the first 32 bits of its SHA-256, as a
  fraction of 2**32, are below ``val_fraction``. Adding files never moves the ones already there. The one
  exception keeps both splits usable: with 2+ files and none hashed into val, the file of smallest hash
  moves to val (and with none in train, the val file of largest hash moves to train); the manifest says so;
- optional transposition augmentation of train only: each train piece also appears moved by every k in
  ``transpose=(lo, hi)`` (inclusive, k != 0) that keeps its notes within MIDI's 0..127;
- outputs are written atomically (the manifest last), and a re-run over unchanged input with the same codec
  and settings reuses them without encoding anything (``report.reused``).

Memory stays at a few files' worth: results stream in path order into the output files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from theremin.midi import MidiError, atomic_write, is_midi_path

MANIFEST_VERSION = 1
TRAIN_FILE, VAL_FILE, MANIFEST_FILE = "train.txt", "val.txt", "manifest.json"
FIRST_CHAR = "\U00010000"  # midichar never goes below this: no whitespace, no line break


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
            f"corpus {self.out_dir}: {self.ok:,} files used → {self.train_pieces:,} train{aug} + "
            f"{self.val_pieces:,} val pieces; {self.notes:,} notes, {self.chars:,} chars "
            f"({self.distinct_chars:,} distinct)",
            f"  from {self.input_dir}: {len(self.failed):,} failed, {len(self.duplicates):,} duplicates",
        ]
        for path, reason in list(self.failed.items())[:max_failures]:
            lines.append(f"    failed {path}: {reason}")
        if len(self.failed) > max_failures:
            lines.append(f"    ... and {len(self.failed) - max_failures:,} more failures in {self.manifest_path}")
        for move in self.split_moves:
            lines.append(f"  moved {move['path']} to {move['to']}: {move['why']}")
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


# ------------------------------------------------------------------------------------------------ walking


class _Entry(NamedTuple):
    rel: str  # posix path relative to input_dir
    path: str
    size: int
    mtime_ns: int


def find_midi_files(input_dir: str | os.PathLike) -> tuple[list[_Entry], dict[str, str]]:
    """MIDI files under ``input_dir`` (recursive, sorted by relative path) and unreadable folders → reason.

    Symlinked files are followed, symlinked folders are not (a link loop would never end).
    """
    root = Path(input_dir)
    found: list[_Entry] = []
    unreadable: dict[str, str] = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            unreadable[f"{folder.relative_to(root).as_posix()}/"] = f"unreadable folder: {e.strerror or e}"
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif is_midi_path(entry.name) and entry.is_file():
                    st = entry.stat()
                    rel = Path(entry.path).relative_to(root).as_posix()
                    found.append(_Entry(rel, entry.path, st.st_size, st.st_mtime_ns))
            except OSError as e:  # a dangling link or a file gone mid-walk
                unreadable[Path(entry.path).relative_to(root).as_posix()] = f"unreadable: {e.strerror or e}"
    found.sort()
    return found, unreadable


# ------------------------------------------------------------------------------------------------ workers


class _Encoded(NamedTuple):
    sha256: str | None  # None when the file could not be read
    text: str | None  # None when it failed
    notes: int
    reason: str | None
    augmented: list[str] | None  # transpositions, made only for a file whose hash puts it in train
    skipped: int  # transpositions left out (a note would leave 0..127)


def hash_fraction(sha256: str) -> float:
    """The split key of a file: its hash's first 32 bits as a fraction of 2**32 (val when < val_fraction)."""
    return int(sha256[:8], 16) / 2**32


def _transpositions(codec, text: str, ks: Sequence[int]) -> tuple[list[str], int]:
    out = [t for t in (codec.transpose(text, k) for k in ks) if t is not None]
    return out, len(ks) - len(out)


def _encode_one(codec, path: str, min_notes: int, val_fraction: float, ks: Sequence[int]) -> _Encoded:
    try:
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as e:
        return _Encoded(None, None, 0, f"unreadable: {e.strerror or e}", None, 0)
    try:
        text = codec.encode_file(path, min_notes=min_notes)
        if not text or min(text) < FIRST_CHAR:  # one piece per line needs a non-empty line without breaks
            raise ValueError("the codec returned an empty text or characters below U+10000")
        notes = codec.count_notes(text)
        augmented, skipped = None, 0
        if ks and hash_fraction(sha) >= val_fraction:
            augmented, skipped = _transpositions(codec, text, ks)
    except MidiError as e:
        return _Encoded(sha, None, 0, e.reason, None, 0)
    except Exception as e:  # anything else is a reader/codec bug on this file: report it, go on
        return _Encoded(sha, None, 0, f"unexpected {type(e).__name__}: {e}"[:300], None, 0)
    return _Encoded(sha, text, notes, None, augmented, skipped)


_worker_codec = None


def _init_worker(codec_cls, config: dict) -> None:
    global _worker_codec
    _worker_codec = codec_cls(**config)


def _encode_chunk(paths: list[str], min_notes: int, val_fraction: float, ks: Sequence[int]) -> list[_Encoded]:
    return [_encode_one(_worker_codec, p, min_notes, val_fraction, ks) for p in paths]


def _encode_all(paths: list[str], codec, workers: int, args: tuple, bar) -> Iterator[_Encoded]:
    """Encode files, yielding results in input order; ``workers == 1`` stays in this process."""
    if workers == 1:
        for p in paths:
            yield _encode_one(codec, p, *args)
            bar.update()
        return
    init = (type(codec), codec.config)
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
                    pending.append((todo[0], pool.submit(_encode_chunk, todo[0], *args)))
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
                results = [_encode_isolated(retry[0][0], init, args)]
            for r in results:
                yield r
                bar.update()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _encode_isolated(path: str, init: tuple, args: tuple) -> _Encoded:
    with ProcessPoolExecutor(max_workers=1, initializer=_init_worker, initargs=init) as solo:
        try:
            return solo.submit(_encode_chunk, [path], *args).result()[0]
        except BrokenProcessPool:
            return _Encoded(None, None, 0, "the worker process died on this file (a crash, or out of memory)",
                            None, 0)


# ------------------------------------------------------------------------------------------------ build


class _NothingUsable(Exception):
    """Aborts the output writes (their temp files are removed) when no file is usable."""


def _codec_id(codec) -> str:
    return f"{type(codec).__module__}.{type(codec).__qualname__}"


def _fingerprint(input_dir: Path, entries: list[_Entry], codec, settings: dict) -> str:
    h = hashlib.sha256()
    head = {"version": MANIFEST_VERSION, "input_dir": str(input_dir),
            "codec": [_codec_id(codec), codec.config], "settings": settings}
    h.update(json.dumps(head, sort_keys=True).encode())
    for e in entries:
        h.update(f"{e.rel}\0{e.size}\0{e.mtime_ns}\n".encode())
    return h.hexdigest()


def _manifest_text(m: dict) -> str:
    """JSON with one file (or failure, or total) per line: readable, and diffable between builds."""

    def dumps(x) -> str:
        return json.dumps(x, ensure_ascii=False)

    out = []
    for k, v in m.items():
        if isinstance(v, list) and v:
            body = "[\n" + ",\n".join(f"  {dumps(r)}" for r in v) + "\n ]"
        elif isinstance(v, dict) and v and k != "codec":
            body = "{\n" + ",\n".join(f"  {dumps(a)}: {dumps(b)}" for a, b in v.items()) + "\n }"
        else:
            body = dumps(v)
        out.append(f" {dumps(k)}: {body}")
    return "{\n" + ",\n".join(out) + "\n}\n"


def load_manifest(out_dir: str | os.PathLike) -> dict | None:
    """The manifest.json of a corpus folder, or None when missing or unreadable."""
    try:
        return json.loads((Path(out_dir) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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


def _remove_lines(path: Path, start: int, count: int) -> tuple[list[str], set[str]]:
    """Cut lines [start, start + count) out of a file; return them and the distinct chars of what stays."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    removed: list[str] = []
    kept_chars: set[str] = set()
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out, \
            open(path, encoding="utf-8", newline="\n") as src:
        for i, line in enumerate(src):
            if start <= i < start + count:
                removed.append(line.rstrip("\n"))
            else:
                out.write(line)
                kept_chars.update(line.rstrip("\n"))
    os.replace(tmp, path)
    return removed, kept_chars


def _start_line(rows: list[dict], row: dict) -> int:
    """Line of ``row`` in its split's file: rows are written in order, each taking ``lines`` lines."""
    n = 0
    for r in rows:
        if r is row:
            return n
        if r["split"] == row["split"]:
            n += r["lines"]
    raise ValueError("row not found")


def build_corpus(
    input_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    codec=None,
    workers: int | None = None,
    *,
    val_fraction: float = 0.05,
    transpose: Sequence[int] | None = None,
    min_notes: int = 8,
    progress: bool = True,
) -> CorpusReport:
    """Encode every MIDI file under ``input_dir`` into ``out_dir``/{train,val}.txt + manifest.json.

    ``codec``: a MidiChar (default: ``MidiChar()``); workers re-create it from ``codec.config``.
    ``workers``: processes (None: all cores; 1: this process). ``transpose=(lo, hi)``: augment train with
    every transposition lo..hi semitones (inclusive, 0 excluded). ``min_notes``: fewer notes → failed.
    Raises ValueError (after writing the manifest) when no file is usable.
    """
    from tqdm import tqdm

    if codec is None:
        from theremin.midichar import MidiChar

        codec = MidiChar()
    input_dir = Path(input_dir).resolve()
    out_dir = Path(out_dir).resolve()
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir}: input folder not found (or not a folder)")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if min_notes < 1:
        raise ValueError(f"min_notes must be >= 1, got {min_notes}")
    ks: list[int] = []
    if transpose is not None:
        if len(transpose) != 2:
            raise ValueError(f"transpose must be (lo, hi) semitones, got {transpose!r}")
        lo, hi = (int(k) for k in transpose)
        if lo > hi:
            raise ValueError(f"transpose must be (lo, hi) with lo <= hi, got {tuple(transpose)}")
        ks = [k for k in range(lo, hi + 1) if k != 0]
        transpose = [lo, hi]
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1 (or None for all cores), got {workers}")
    if type(codec)(**codec.config).config != codec.config:  # workers rebuild it this way: it must be faithful
        raise ValueError(f"{type(codec).__name__}(**codec.config) does not rebuild the same codec")

    settings = {"val_fraction": float(val_fraction), "transpose": transpose, "min_notes": int(min_notes)}
    entries, unreadable = find_midi_files(input_dir)
    fingerprint = _fingerprint(input_dir, entries, codec, settings)
    manifest = load_manifest(out_dir)
    if _reusable(manifest, out_dir, fingerprint):
        try:
            return CorpusReport.from_manifest(manifest, out_dir, reused=True)
        except (KeyError, TypeError, ValueError):  # a manifest edited by hand: build afresh
            pass

    workers = max(1, min(workers or os.cpu_count() or 1, len(entries)))
    failed: dict[str, str] = dict(unreadable)
    duplicates: dict[str, str] = {}
    rows: list[dict] = []  # one per file used, in path order
    moves: list[dict] = []
    seen: dict[str, str] = {}  # sha256 → path kept
    corpus_chars: set[str] = set()
    split_chars = {"train": set(), "val": set()}

    def fill(train_tmp: Path, val_tmp: Path) -> None:
        with open(train_tmp, "w", encoding="utf-8", newline="\n") as train, \
                open(val_tmp, "w", encoding="utf-8", newline="\n") as val, \
                tqdm(total=len(entries), unit="file", desc=f"prep {input_dir.name}", disable=not progress) as bar:
            results = _encode_all([e.path for e in entries], codec, workers, (min_notes, val_fraction, ks), bar)
            for entry, r in zip(entries, results):
                if r.sha256 is not None:
                    if r.sha256 in seen:
                        duplicates[entry.rel] = seen[r.sha256]
                        continue
                    seen[r.sha256] = entry.rel
                if r.text is None:
                    failed[entry.rel] = r.reason or "unknown failure"
                    continue
                corpus_chars.update(r.text)
                split = "val" if hash_fraction(r.sha256) < val_fraction else "train"
                block = [r.text, *(r.augmented or [])] if split == "train" else [r.text]
                (train if split == "train" else val).write("\n".join(block) + "\n")
                for line in block:
                    split_chars[split].update(line)
                rows.append({"path": entry.rel, "sha256": r.sha256, "split": split, "notes": r.notes,
                             "chars": len(r.text), "lines": len(block),
                             "transpose_skipped": r.skipped if split == "train" else 0})
        if not rows:
            raise _NothingUsable
        _balance_splits(train_tmp, val_tmp)

    def _balance_splits(train_tmp: Path, val_tmp: Path) -> None:
        in_val = [r for r in rows if r["split"] == "val"]
        in_train = [r for r in rows if r["split"] == "train"]
        if val_fraction > 0 and len(rows) >= 2 and not in_val:
            row = min(in_train, key=lambda r: (hash_fraction(r["sha256"]), r["sha256"]))
            block, split_chars["train"] = _remove_lines(train_tmp, _start_line(rows, row), row["lines"])
            with open(val_tmp, "w", encoding="utf-8", newline="\n") as val:
                val.write(block[0] + "\n")
            split_chars["val"] = set(block[0])
            row.update(split="val", lines=1, transpose_skipped=0)
            moves.append({"path": row["path"], "to": "val",
                          "why": "no file hashed into val: the file of smallest hash moved there"})
        elif not in_train:
            row = max(in_val, key=lambda r: (hash_fraction(r["sha256"]), r["sha256"]))
            (text,), split_chars["val"] = _remove_lines(val_tmp, _start_line(rows, row), 1)
            augmented, skipped = _transpositions(codec, text, ks)
            with open(train_tmp, "w", encoding="utf-8", newline="\n") as train:
                train.write("\n".join([text, *augmented]) + "\n")
            split_chars["train"] = set(text).union(*augmented)
            row.update(split="train", lines=1 + len(augmented), transpose_skipped=skipped)
            moves.append({"path": row["path"], "to": "train",
                          "why": "no file hashed into train: the val file of largest hash moved there"})

    def manifest_dict(outputs: dict | None) -> dict:
        def split_totals(name: str) -> dict:
            rs = [r for r in rows if r["split"] == name]
            return {"pieces": len(rs), "lines": sum(r["lines"] for r in rs),
                    "notes": sum(r["notes"] * r["lines"] for r in rs),
                    "chars": sum(r["chars"] * r["lines"] for r in rs),
                    "distinct_chars": len(split_chars[name]),
                    "augmented_lines": sum(r["lines"] - 1 for r in rs),
                    "transpose_skipped": sum(r["transpose_skipped"] for r in rs)}

        return {
            "version": MANIFEST_VERSION,
            "input_dir": str(input_dir),
            "codec": {"class": _codec_id(codec), "config": codec.config},
            "settings": settings,
            "fingerprint": fingerprint,
            "outputs": outputs,
            "files": rows,
            "failed": failed,
            "duplicates": duplicates,
            "split_moves": moves,
            "totals": {
                "files": {"found": len(entries), "ok": len(rows), "failed": len(failed),
                          "duplicates": len(duplicates)},
                "notes": sum(r["notes"] for r in rows),
                "chars": sum(r["chars"] for r in rows),
                "distinct_chars": len(corpus_chars),
                "train": split_totals("train"),
                "val": split_totals("val"),
            },
        }

    def write_manifest(m: dict) -> None:
        text = _manifest_text(m)
        atomic_write(out_dir / MANIFEST_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        # val is replaced first, then train; the manifest, written last, is what marks the build complete
        atomic_write(out_dir / TRAIN_FILE, lambda t: atomic_write(out_dir / VAL_FILE, lambda v: fill(t, v)))
    except _NothingUsable:
        for name in (TRAIN_FILE, VAL_FILE):  # a corpus from an earlier build would contradict the manifest
            (out_dir / name).unlink(missing_ok=True)
        write_manifest(manifest_dict(None))
        if not entries:
            why = "no MIDI files found (.mid, .midi, .kar in any case, in all subfolders)"
        else:
            first = "; ".join(f"{p}: {r}" for p, r in list(failed.items())[:3])
            why = (f"none of the {len(entries)} MIDI files is usable ({len(failed)} failed, "
                   f"{len(duplicates)} duplicates; e.g. {first}); all reasons are in {out_dir / MANIFEST_FILE}")
        raise ValueError(f"{input_dir}: {why}") from None
    outputs = {name: {"bytes": (out_dir / name).stat().st_size} for name in (TRAIN_FILE, VAL_FILE)}
    m = manifest_dict(outputs)
    write_manifest(m)
    return CorpusReport.from_manifest(m, out_dir)

"""The base corpus: a broad MIDI folder built at run time from music21's corpus (no network), for a base model
that fine-tuning then adapts to a small folder (``theremin-train experiment=base``, conf/data/base.yaml).

Sources (each written once to ``<input_dir>/<source>/``, then cached):

- ``composer`` sources: a composer's scores in music21's corpus (Bach's chorales), via :mod:`theremin.data.demo`;
- ``folder`` sources: abc tune books in a music21 corpus folder (Essen, O'Neill's 1850, Ryan's Mammoth), one
  MIDI file per tune. A book is parsed and written in one worker process; a finished book leaves a marker
  (``.<book>.done``, with its counts), so a re-run only lists the folder. ``exclude`` (glob patterns) keeps
  books out: the held-out ones (:func:`build_heldout_midi` writes them for fine-tune tests);
- ``extra_dirs``: folders of your own, linked file by file under ``<input_dir>/extra/`` (the corpus walker
  follows linked files, so nothing is copied and a changed folder is seen).

Why music21 and not abcmidi's ``abc2midi`` (which converts a tune book in about a second): music21 is already a
dependency and runs wherever pip does (macOS, the Docker image, CI), so the base corpus is the same on every
machine; a second converter would make the corpus depend on which tools a machine has. Its cost is paid once,
then cached: 0.03 s (Essen) to 0.065 s (O'Neill's) CPU per tune, parsing included, since theremin.music.scores
replaced music21's MIDI writer (0.07 / 0.14 s before; ~12k tunes took ~10 minutes on 2 cores then).
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from theremin.config import plain
from theremin.data.datamodule import MidiDataModule
from theremin.data.demo import build_demo_midi
from theremin.errors import ThereminError
from theremin.fsio import atomic_write
from theremin.music.midi import is_midi_path

EXTRA = "extra"  # <input_dir>/extra/: the links to extra folders
DONE_FORMAT = 1


class BaseDataError(ThereminError):
    """A base-corpus setting that cannot work; the message names the setting or folder."""


def music21_corpus_dir() -> Path:
    import music21.corpus

    return Path(music21.corpus.__file__).parent


def book_paths(folder: str, exclude: list[str] | tuple[str, ...] = (), include: list[str] | None = None) -> list[Path]:
    """The abc tune books of a music21 corpus folder (sorted), less those matching an ``exclude`` pattern; with
    ``include``, only those matching one of its patterns."""
    root = music21_corpus_dir() / folder
    if not root.is_dir():
        raise BaseDataError(f"data.sources: music21's corpus has no folder {folder!r} ({root})")
    books = sorted(p for p in root.iterdir() if p.suffix.lower() == ".abc")
    books = [p for p in books if not any(fnmatch.fnmatch(p.name, pat) for pat in exclude)]
    if include is not None:
        books = [p for p in books if any(fnmatch.fnmatch(p.name, pat) for pat in include)]
    if not books:
        raise BaseDataError(f"data.sources: no abc books left in {root} (exclude={list(exclude)}, include={include})")
    return books


def _separate_time_signatures(score) -> None:
    """music21's abc reader puts one TimeSignature object into every measure of a mixed-meter tune; writing
    MIDI then fails ("already found in this Stream"). Give each measure its own copy (about 20 % of Essen)."""

    from music21 import meter, stream

    seen: set[int] = set()
    for m in score.recurse().getElementsByClass(stream.Measure):
        for ts in list(m.getElementsByClass(meter.TimeSignature)):
            if id(ts) in seen:
                m.replace(ts, copy.deepcopy(ts))
            seen.add(id(ts))


def _tune_name(book: Path, score, i: int, used: set[str]) -> str:
    number = getattr(score.metadata, "number", None) if score.metadata is not None else None
    label = re.sub(r"[^A-Za-z0-9]+", "", str(number)) if number is not None else ""
    name = f"{book.stem}-{label or i + 1:>04}.mid"
    if name in used:  # a book may reuse an X: number
        name = f"{book.stem}-{label or 'x'}-{i + 1:04d}.mid"
    used.add(name)
    return name


def convert_book(book: str, out_dir: str, limit: int | None = None) -> dict:
    """Write every tune of one abc book as MIDI into ``out_dir``; returns counts (a bad tune is counted and
    skipped, a bad book yields an ``error``). Runs in a worker process."""
    from music21 import converter, stream

    from theremin.music.scores import write_score_midi

    book_p, out = Path(book), Path(out_dir)
    try:  # parsed once per build: music21's pickle cache would only cost time
        parsed = converter.parse(str(book_p), format="abc", storePickle=False)
    except Exception as e:  # music21 raises many kinds on odd input; a book that cannot parse is reported
        return {"book": book_p.name, "tunes": 0, "written": 0, "failed": [], "error": f"{type(e).__name__}: {e}"[:300]}
    scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
    if limit is not None:
        scores = scores[:limit]
    written, failed, used = 0, [], set()
    for i, score in enumerate(scores):
        name = _tune_name(book_p, score, i, used)
        try:
            _separate_time_signatures(score)
            write_score_midi(score, out / name)  # what score.write("midi") writes, faster (theremin.music.scores)
            written += 1
        except Exception as e:
            failed.append(f"{name}: {type(e).__name__}: {e}"[:200])
    return {"book": book_p.name, "tunes": len(scores), "written": written, "failed": failed}


def _marker(out: Path, book: Path) -> Path:
    return out / f".{book.stem}.done"


def build_books(books: list[Path], out: Path, workers: int | None = None, limit: int | None = None,
                progress: bool = True) -> dict:
    """Convert the books not converted yet (no marker) into ``out``; returns totals over all ``books``."""

    out.mkdir(parents=True, exist_ok=True)
    todo = [b for b in books if not _marker(out, b).exists()]
    if todo:
        # biggest books first: the last ones to finish are short, so the workers stay busy to the end
        todo.sort(key=lambda b: -b.stat().st_size)
        workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(convert_book, str(b), str(out), limit) for b in todo]
            for b, fut in tqdm(zip(todo, futures), total=len(todo), unit="book", desc=f"base MIDI {out.name}",
                               disable=not progress):
                r = fut.result()
                text = json.dumps({"format": DONE_FORMAT, "limit": limit, **r}, indent=1)
                atomic_write(_marker(out, b), lambda tmp, t=text: tmp.write_text(t))
    totals = {"books": len(books), "tunes": 0, "written": 0, "failed": 0, "errors": []}
    for b in books:
        r = json.loads(_marker(out, b).read_text())
        totals["tunes"] += r["tunes"]
        totals["written"] += r["written"]
        totals["failed"] += len(r["failed"])
        if r.get("error"):
            totals["errors"].append(f"{b.name}: {r['error']}")
    return totals


def link_extra_dirs(extra_dirs: list[str], out: Path) -> int:
    """Link every MIDI file of each extra folder under ``out`` (rebuilt each call: a removed folder or file
    leaves no stale link). Returns the number of links."""

    if out.exists():
        shutil.rmtree(out)
    n = 0
    for i, folder in enumerate(extra_dirs):
        src = Path(os.path.expanduser(str(folder))).resolve()
        if not src.is_dir():
            raise BaseDataError(f"data.extra_dirs: {folder} is not a folder")
        dst_root = out / f"{i}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', src.name)}"
        for dirpath, _dirs, files in os.walk(src):
            for f in files:
                if is_midi_path(f):
                    rel = Path(dirpath, f).relative_to(src)
                    (dst_root / rel).parent.mkdir(parents=True, exist_ok=True)
                    (dst_root / rel).symlink_to(Path(dirpath, f))
                    n += 1
    return n


def build_base_midi(input_dir: str | os.PathLike, sources: dict, extra_dirs: list[str] | None = None,
                    workers: int | None = None, progress: bool = True) -> dict:
    """Build (or reuse) the base MIDI folder: one subfolder per source, plus ``extra/``. Returns counts per
    source (files written, tunes that failed to convert)."""

    root = Path(input_dir)
    report = {}
    for name, src in (sources or {}).items():
        if name == EXTRA:
            raise BaseDataError(f"data.sources: {EXTRA!r} is reserved for data.extra_dirs")
        src = dict(src)
        if "composer" in src:
            folder = build_demo_midi(root / name, composer=src["composer"], limit=src.get("limit"), workers=workers,
                                     progress=progress)
            report[name] = {"written": sum(1 for _ in folder.glob("*.mid"))}
        elif "folder" in src:
            books = book_paths(src["folder"], src.get("exclude") or (), src.get("include"))
            report[name] = build_books(books, root / name, workers, src.get("limit"), progress)
        else:
            raise BaseDataError(f"data.sources.{name}: give `composer: <name>` or `folder: <music21 corpus folder>`")
    report[EXTRA] = {"written": link_extra_dirs(list(extra_dirs or []), root / EXTRA)}
    return report


class BaseDataModule(MidiDataModule):
    """The training DataModule over the base corpus: builds the base MIDI folder (cached), then does what
    :class:`MidiDataModule` does for any folder (corpus, tokenizer, token files)."""

    def __init__(self, *, sources: dict, extra_dirs: list[str] | None = None, workers: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)

        self.sources = plain(sources)
        self.extra_dirs = list(plain(extra_dirs) or [])
        self.workers = workers

    def prepare(self) -> None:
        if self.input_dir is None:
            raise BaseDataError("data.input_dir: the base corpus needs a folder to build its MIDI files in")
        report = build_base_midi(self.input_dir, self.sources, self.extra_dirs, self.workers)
        print("base MIDI " + ", ".join(f"{k}: {v['written']:,} files" for k, v in report.items()), flush=True)
        super().prepare()


# ---- held-out books: a fine-tune test corpus the base never saw ----------------------------------------


def build_heldout_midi(out_dir: str | os.PathLike, folder: str, include: list[str], limit: int | None = None,
                       workers: int | None = None, progress: bool = True) -> dict:
    """Write the tunes of held-out books (``include`` patterns in a music21 corpus folder) to ``out_dir``,
    at most ``limit`` per book."""
    return build_books(book_paths(folder, include=include), Path(out_dir), workers, limit, progress)

"""The base corpus: a broad MIDI folder built at run time from music21's corpus (no network), for a base model
that fine-tuning then adapts to a small folder (``theremin-train experiment=base``, conf/data/base.yaml).

Sources (each written once to ``<input_dir>/<source>/``, then cached):

- ``composer`` sources: a composer's scores in music21's corpus (Bach's chorales), via :mod:`theremin.data.demo`;
- ``folder`` sources: abc tune books in a music21 corpus folder (Essen, O'Neill's 1850, Ryan's Mammoth), one
  MIDI file per tune. A book is parsed and written in one worker process; a finished book leaves a marker
  (``.<book>.done``, with its counts), so a re-run only lists the folder. ``exclude`` (glob patterns) keeps
  books out: the held-out ones (:func:`build_heldout_midi` writes them for fine-tune tests);
- ``dataset`` sources: a public dataset of the catalogue (``data.catalog``, theremin/conf/datasets/), fetched from a
  mirror or downloaded, checked and unpacked once by :mod:`theremin.data.datasets`, converted to MIDI when it is not
  MIDI, and linked file by file under ``<input_dir>/<source>/``; ``data.datasets=[pop909, ...]`` turns catalogue
  entries on as sources of their own name. ``include``/``exclude`` (patterns on paths inside the dataset's folder)
  and ``limit`` (the first N files) pick files; ``weight`` sizes the source against the others
  (:class:`Balance`: at most ``weight x data.balance.notes_per_weight`` notes);
- ``extra_dirs``: folders of your own, linked file by file under ``<input_dir>/extra/`` (the corpus walker
  follows linked files, so nothing is copied and a changed folder is seen).

Every build counts each source's files and notes as the corpus reader keeps them (pitched notes; a file it would
refuse is skipped, with its reason) and writes the figures, with each source's share of the notes and each
dataset's licence, to ``<input_dir>/sources.json``; :class:`BaseDataModule` prints them as a table.

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
import logging
import os
import re
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from theremin.config import known_settings, plain
from theremin.data.datamodule import MidiDataModule
from theremin.data.datasets import Selection, build_source, count_notes, load_catalog
from theremin.data.demo import build_demo_midi
from theremin.errors import ThereminError
from theremin.fsio import atomic_write
from theremin.music.midi import MAX_NOTES, is_midi_path

log = logging.getLogger("theremin.data.base")

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


@dataclass(frozen=True)
class Balance:
    """How dataset sources are balanced against each other (data.balance): a dataset source contributes at most
    ``weight x notes_per_weight`` notes (its ``weight``, default 1), whole files picked in a fixed pseudo-random
    order (theremin.data.datasets.under_cap), so one big dataset cannot swamp the others (T5's
    examples-proportional mixing with a cap). ``null``: no cap. music21 sources are sized by their ``limit``."""

    notes_per_weight: int | None = 300_000


DATASET_KEYS = ("dataset", "include", "exclude", "limit", "weight")
SOURCES_FILE = "sources.json"  # <input_dir>/sources.json: the per-source figures of the last build
SOURCES_FORMAT = 1


def all_sources(sources: dict | None, datasets: list[str] | tuple[str, ...] = ()) -> dict:
    """``sources`` plus one ``{dataset: <name>}`` source per name in ``datasets`` that is not a source already. A
    source set to null is off (``data.sources.essen=null``; a config cannot empty a dict it inherits)."""
    out = {name: dict(src) for name, src in dict(sources or {}).items() if src is not None}
    for d in datasets or ():
        if d not in out:
            out[d] = {"dataset": d}
        elif "dataset" not in out[d]:
            raise BaseDataError(f"data.datasets: {d!r} is also a source of another kind (data.sources.{d})")
    return out


def _dataset_source(name: str, src: dict, root: Path, specs: dict, balance: Balance, *, mirror, datasets_dir,
                    download: bool, workers, max_notes: int, min_notes: int, progress: bool) -> dict:
    where = f"data.sources.{name}"
    src = known_settings(DATASET_KEYS, src, where, "a dataset source setting", BaseDataError)
    spec = specs.get(src["dataset"])
    if spec is None:
        raise BaseDataError(f"{where}.dataset: {src['dataset']!r} is not in data.catalog (known: "
                            f"{', '.join(sorted(specs))})")
    if not spec.licence.commercial:
        log.warning("%s: dataset %s is licensed %s, non-commercial: a model trained on it inherits the "
                    "non-commercial licence", where, spec.name, spec.licence.name)
    weight = float(src.get("weight", 1.0))
    if weight < 0:
        raise BaseDataError(f"{where}.weight: {weight} is negative")
    cap = None if balance.notes_per_weight is None else round(weight * balance.notes_per_weight)
    include = src.get("include")
    sel = Selection(include=None if include is None else tuple(include), exclude=tuple(src.get("exclude") or ()),
                    limit=src.get("limit"))
    r = build_source(root / name, spec, sel, cap, root=datasets_dir, mirror=mirror, download=download,
                     counts_cache=root / COUNTS / f"{name}.json", workers=workers, max_notes=max_notes,
                     min_notes=min_notes, progress=progress)
    if r["skipped"] and not r["available_files"]:
        log.warning("%s: none of the %d files of %s is usable (%s)", where, r["skipped"], spec.name,
                    next(iter(r["skipped_reasons"])))
    return {**r, "weight": weight, "written": r["files"]}


COUNTS = ".counts"  # <input_dir>/.counts/<source>.json: notes per file, cached


def _count_folder(name: str, root: Path, max_notes: int, min_notes: int) -> dict:
    folder = root / name
    paths = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if is_midi_path(p.name)}
    counts = count_notes(paths, root / COUNTS / f"{name}.json", max_notes, min_notes)
    usable = [n for n in counts.values() if isinstance(n, int)]
    reasons = Counter(n for n in counts.values() if isinstance(n, str))
    return {"files": len(usable), "notes": sum(usable), "skipped": sum(reasons.values()),
            "skipped_reasons": dict(reasons.most_common(5))}


def build_base_midi(input_dir: str | os.PathLike, sources: dict, extra_dirs: list[str] | None = None,
                    workers: int | None = None, progress: bool = True, *, datasets: list[str] | tuple = (),
                    catalog: dict | None = None, mirror: str | None = None, datasets_dir: str | None = None,
                    download: bool = True, balance: dict | None = None, max_notes: int = MAX_NOTES,
                    min_notes: int = 1) -> dict:
    """Build (or reuse) the base MIDI folder: one subfolder per source, plus ``extra/``. Returns the figures per
    source (files and notes the corpus reader keeps, share of all notes; files written or linked), also written
    to ``<input_dir>/sources.json``."""

    root = Path(input_dir)
    sources = all_sources(sources, datasets)
    bal = Balance(**known_settings(Balance, balance, "data.balance", "a balance setting", BaseDataError))
    specs = load_catalog(catalog) if any("dataset" in s for s in sources.values()) else {}
    _unlink_dropped(root, sources)
    _unpark(root, sources)
    report = {}
    for name, src in sources.items():
        if name in (EXTRA, COUNTS):
            raise BaseDataError(f"data.sources: {name!r} is reserved")
        if "dataset" in src:
            report[name] = _dataset_source(name, src, root, specs, bal, mirror=mirror, datasets_dir=datasets_dir,
                                           download=download, workers=workers, max_notes=max_notes,
                                           min_notes=min_notes, progress=progress)
            continue
        if "composer" in src:
            folder = build_demo_midi(root / name, composer=src["composer"], limit=src.get("limit"), workers=workers,
                                     progress=progress)
            report[name] = {"kind": "composer", "written": sum(1 for _ in folder.glob("*.mid"))}
        elif "folder" in src:
            books = book_paths(src["folder"], src.get("exclude") or (), src.get("include"))
            report[name] = {"kind": "folder", **build_books(books, root / name, workers, src.get("limit"), progress)}
        else:
            raise BaseDataError(f"data.sources.{name}: give `composer: <name>`, `folder: <music21 corpus folder>` "
                                "or `dataset: <catalogue name>`")
        report[name].update(_count_folder(name, root, max_notes, min_notes))
    report[EXTRA] = {"kind": "extra", "written": link_extra_dirs(list(extra_dirs or []), root / EXTRA)}
    report[EXTRA].update(_count_folder(EXTRA, root, max_notes, min_notes))
    total = sum(r["notes"] for r in report.values())
    for r in report.values():
        r["share"] = r["notes"] / total if total else 0.0
    _write_sources(root, report, bal)
    return report


def _parked(root: Path) -> Path:
    return root.parent / f".{root.name}-off"


def _unlink_dropped(root: Path, sources: dict) -> None:
    """Take out of ``root`` (the corpus reads all of it) the folders of sources the last build made and this one
    does not: a dataset source's link folder is removed; a music21 source's folder, which holds conversions that
    took minutes, is parked beside ``root`` (:func:`_parked`) and comes back when the source is turned on again."""
    try:
        last = json.loads((root / SOURCES_FILE).read_text())["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    for name, r in last.items():
        folder = root / name
        if name in sources or r.get("kind") == "extra" or not folder.is_dir():
            continue
        if r.get("kind") != "dataset":
            _parked(root).mkdir(exist_ok=True)
            if not (_parked(root) / name).exists():
                folder.rename(_parked(root) / name)
        elif all(p.is_dir() or p.is_symlink() for p in folder.rglob("*")):  # links only: nobody's files
            shutil.rmtree(folder)


def _unpark(root: Path, sources: dict) -> None:
    """Bring back the parked folders of music21 sources that are on again (see :func:`_unlink_dropped`)."""
    for name, src in sources.items():
        parked = _parked(root) / name
        if "dataset" not in src and parked.is_dir() and not (root / name).exists():
            root.mkdir(parents=True, exist_ok=True)
            parked.rename(root / name)


def _write_sources(root: Path, report: dict, balance: Balance) -> None:
    doc = {"format": SOURCES_FORMAT, "balance": asdict(balance), "sources": report,
           "total": {k: sum(r[k] for r in report.values()) for k in ("files", "notes")},
           "non_commercial": sorted(n for n, r in report.items() if r.get("licence", {}).get("commercial") is False)}
    text = json.dumps(doc, indent=1)
    atomic_write(root / SOURCES_FILE, lambda tmp: tmp.write_text(text))


def sources_table(report: dict) -> str:
    """The per-source figures as a text table (what the base build prints)."""
    rows = [("source", "kind", "files", "notes", "share", "skipped", "licence")]
    for name, r in report.items():
        kind = r.get("dataset", r.get("kind", ""))
        lic = r.get("licence", {})
        licence = f"{lic['name']}{'' if lic.get('commercial', True) else ' (non-commercial)'}" if lic else ""
        rows.append((name, kind, f"{r['files']:,}", f"{r['notes']:,}", f"{100 * r['share']:.1f} %",
                     f"{r.get('skipped', 0):,}", licence))
    rows.append(("total", "", f"{sum(r['files'] for r in report.values()):,}",
                 f"{sum(r['notes'] for r in report.values()):,}", "100.0 %", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {2, 3, 4, 5}
    return "\n".join("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     .rstrip() for row in rows)


class BaseDataModule(MidiDataModule):
    """The training DataModule over the base corpus: builds the base MIDI folder (cached), then does what
    :class:`MidiDataModule` does for any folder (corpus, tokenizer, token files)."""

    def __init__(self, *, sources: dict, extra_dirs: list[str] | None = None, workers: int | None = None,
                 datasets: list[str] | None = None, catalog: dict | None = None, mirror: str | None = None,
                 datasets_dir: str | None = None, download: bool = True, balance: dict | None = None, **kwargs):
        super().__init__(**kwargs)

        self.sources = plain(sources)
        self.extra_dirs = list(plain(extra_dirs) or [])
        self.workers = workers
        self.datasets = list(plain(datasets) or [])
        self.catalog = plain(catalog)
        self.mirror, self.datasets_dir, self.download = mirror, datasets_dir, download
        self.balance = plain(balance)

    def prepare(self) -> None:
        if self.input_dir is None:
            raise BaseDataError("data.input_dir: the base corpus needs a folder to build its MIDI files in")
        report = build_base_midi(self.input_dir, self.sources, self.extra_dirs, self.workers, datasets=self.datasets,
                                 catalog=self.catalog, mirror=self.mirror, datasets_dir=self.datasets_dir,
                                 download=self.download, balance=self.balance, max_notes=self.max_notes,
                                 min_notes=self.min_notes)
        print(f"base MIDI sources ({Path(self.input_dir) / SOURCES_FILE}):\n{sources_table(report)}", flush=True)
        super().prepare()


# ---- held-out books: a fine-tune test corpus the base never saw ----------------------------------------


def build_heldout_midi(out_dir: str | os.PathLike, folder: str, include: list[str], limit: int | None = None,
                       workers: int | None = None, progress: bool = True) -> dict:
    """Write the tunes of held-out books (``include`` patterns in a music21 corpus folder) to ``out_dir``,
    at most ``limit`` per book."""
    return build_books(book_paths(folder, include=include), Path(out_dir), workers, limit, progress)

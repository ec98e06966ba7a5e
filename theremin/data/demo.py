"""Embedded default data: MIDI files built at run time from the corpus that ships with music21.

Nothing third-party is committed: the scores come from the music21 wheel and are written to MIDI on first
use, then cached (a second call only lists the folder). ``theremin-demo-data`` is the command.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from theremin.config import data_dir
from theremin.errors import ThereminError
from theremin.procs import die_with_parent

# scores only: the corpus also holds roman-numeral analyses (.rntxt), which are not music to learn from
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".mei")


def default_demo_dir(composer: str = "bach") -> Path:
    return data_dir() / "demo_midi" / composer


def corpus_paths(composer: str = "bach") -> list[Path]:
    """The music21 corpus works of a composer that are scores (MusicXML / kern / abc), sorted by name."""
    from music21 import corpus

    paths = sorted({Path(p) for p in corpus.getComposer(composer) if Path(p).suffix.lower() in SCORE_SUFFIXES})
    if not paths:
        raise ThereminError(f"music21's corpus has no works for composer {composer!r}")
    return paths


def _midi_name(src: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", src.stem) + ".mid"


def _convert(job: tuple[str, str]) -> str | None:
    """Write one score as MIDI; returns an error string instead of raising (a bad score never stops the rest).

    theremin.music.scores writes what music21's ``score.write("midi")`` would (the same notes, tempos and
    meters, tick for tick) about 7x faster, and hands what it does not model to music21. Parsed scores are not
    pickled into music21's cache: each is parsed once here, and pickling cost more than parsing.
    """
    src, dst = Path(job[0]), Path(job[1])
    try:
        from music21 import converter

        from theremin.music.scores import write_score_midi

        write_score_midi(converter.parse(str(src), storePickle=False), dst)
        return None
    except Exception as e:  # music21 raises many kinds on odd scores; report and move on
        return f"{src.name}: {type(e).__name__}: {e}"[:300]


def build_demo_midi(
    out_dir: str | os.PathLike | None = None,
    composer: str = "bach",
    limit: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Build (or reuse) a folder of MIDI files from music21's corpus; returns the folder.

    ``limit`` keeps the first N works (sorted by name) for a quicker demo. Cached: files already present are
    not written again, so a re-run costs a directory listing.
    """
    out = Path(out_dir) if out_dir is not None else default_demo_dir(composer)
    out.mkdir(parents=True, exist_ok=True)
    srcs = corpus_paths(composer)
    if limit is not None:
        srcs = srcs[:limit]
    seen: set[str] = set()
    jobs = []
    for src in srcs:
        name = _midi_name(src)
        if name in seen:  # the corpus holds some works in several formats: keep the first
            continue
        seen.add(name)
        if not (out / name).exists():
            jobs.append((str(src), str(out / name)))
    if jobs:


        workers = workers or os.cpu_count() or 1
        with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            results = pool.map(_convert, jobs, chunksize=4)
            errors = [r for r in tqdm(results, total=len(jobs), desc=f"demo MIDI ({composer})",
                                      disable=not progress) if r]
        for err in errors:
            print(f"skipped {err}")
    return out

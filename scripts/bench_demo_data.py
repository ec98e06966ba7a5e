"""The demo data step: music21's ``score.write("midi")`` vs theremin.music.scores, file by file, checked equal.

    .venv/bin/python scripts/bench_demo_data.py [--limit N] [--folder essenFolksong --per-book 20] [--quiet]

Each score is parsed twice (one copy per path, so neither sees the other's caches); the CPU seconds of each
conversion (parse excluded, one process) are printed side by side, then the totals and their ratio, how many
files the fast path handed to music21 and why, and how many files differ after ``read_midi`` (notes, tempos,
time signatures, ticks per beat; must be 0; the first differences are printed). Default: music21's Bach
chorales (theremin.data.demo.corpus_paths); ``--folder``: the abc tune books of a music21 corpus folder (the
base corpus, theremin.data.base), the first ``--per-book`` tunes of each.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from theremin.fsio import atomic_write
from theremin.music.midi import MidiError, read_midi
from theremin.music.scores import write_score_midi

ROOT = Path(__file__).resolve().parent.parent



def _read(path: Path):
    if not path.exists():
        return ("no file",)
    try:
        p = read_midi(path)
    except MidiError as e:
        return ("unreadable", e.reason)
    return p.ticks_per_beat, p.notes, p.tempos, p.time_signatures


def _difference(a, b) -> str:
    if len(a) != len(b) or len(a) < 4:
        return f"fast {a[:2]} vs music21 {b[:2]}"
    out = []
    for name, x, y in zip(("ticks_per_beat", "notes", "tempos", "time_signatures"), a, b):
        if x != y:
            if name == "notes":
                only_a, only_b = sorted(set(x) - set(y)), sorted(set(y) - set(x))
                out.append(f"notes {len(x)} vs {len(y)}; fast only {only_a[:3]}; music21 only {only_b[:3]}")
            else:
                out.append(f"{name} {x} vs {y}")
    return "; ".join(out)


def _chorales(limit):
    """(name, parse CPU seconds per copy, copy for the fast path, copy for music21) per chorale."""
    from music21 import converter

    from theremin.data.demo import corpus_paths

    for p in corpus_paths()[:limit]:
        t = time.process_time()
        a, b = (converter.parse(str(p), storePickle=False) for _ in range(2))
        yield p.name, (time.process_time() - t) / 2, a, b


def _tunes(folder: str, per_book: int, limit):
    """The same for the first ``per_book`` tunes of each book (a book's parse time shared by its tunes)."""
    from music21 import converter, stream

    from theremin.data.base import _separate_time_signatures, book_paths

    n = 0
    for book in book_paths(folder, ["han*.abc", "test*.abc"]):
        t = time.process_time()
        copies = []
        for _ in range(2):
            parsed = converter.parse(str(book), format="abc", storePickle=False)
            copies.append(list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed])
        parse = (time.process_time() - t) / 2 / len(copies[0])
        for i, (a, b) in enumerate(zip(*copies)):
            if i >= per_book or (limit is not None and n >= limit):
                break
            n += 1
            for score in (a, b):
                _separate_time_signatures(score)  # as theremin.data.base does before writing
            yield f"{book.name}#{i}", parse, a, b
        if limit is not None and n >= limit:
            return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="first N scores only")
    ap.add_argument("--folder", default=None, help="abc tune books of this music21 corpus folder instead")
    ap.add_argument("--per-book", type=int, default=20, help="with --folder: tunes per book")
    ap.add_argument("--quiet", action="store_true", help="no per-file lines")
    args = ap.parse_args()

    items = _tunes(args.folder, args.per_book, args.limit) if args.folder else _chorales(args.limit)
    tmp = Path(tempfile.mkdtemp(prefix="bench_demo_data_"))
    fast_p, m21_p = tmp / "fast.mid", tmp / "music21.mid"
    total = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    differ: list[str] = []
    n = 0
    if not args.quiet:
        print(f"{'score':<32} {'parse s':>8} {'music21 s':>10} {'fast s':>8} {'ratio':>6}  fallback")
    for name, parse, fast_score, m21_score in items:
        fast_p.unlink(missing_ok=True)
        m21_p.unlink(missing_ok=True)
        t = time.process_time()
        try:
            reason = write_score_midi(fast_score, fast_p)
        except Exception as e:  # the fallback raised: music21 cannot write this score either
            reason = f"music21 raised {type(e).__name__}"
        fast = time.process_time() - t
        t = time.process_time()
        with contextlib.suppress(Exception):  # music21 refuses some scores; the fast path must then fail too
            atomic_write(m21_p, lambda tmp, s=m21_score: s.write("midi", fp=str(tmp)))
        m21 = time.process_time() - t
        n += 1
        total.update(parse=parse, music21=m21, fast=fast)
        if reason:
            reasons[reason] += 1
        a, b = _read(fast_p), _read(m21_p)
        if a != b:
            differ.append(f"{name}: {_difference(a, b)}")
        if not args.quiet:
            print(f"{name:<32} {parse:8.3f} {m21:10.3f} {fast:8.3f} {m21 / max(fast, 1e-9):6.1f}  {reason or ''}",
                  flush=True)
    ratio = total["music21"] / max(total["fast"], 1e-9)
    with_parse = (total["parse"] + total["music21"]) / max(total["parse"] + total["fast"], 1e-9)
    print(f"\n{n} scores, CPU seconds (one process): parse {total['parse']:.1f}, music21 write "
          f"{total['music21']:.1f}, fast write {total['fast']:.1f} -> {ratio:.1f}x (with parse: {with_parse:.1f}x)")
    print(f"fell back to music21: {sum(reasons.values())}")
    for reason, count in reasons.most_common():
        print(f"  {count:5d}  {reason}")
    print(f"files that differ after read_midi: {len(differ)}")
    for line in differ[:10]:
        print(f"  {line}")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()

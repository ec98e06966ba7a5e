"""Prep throughput (files/s): theremin's build_corpus vs MidiTok's REMI on the same files and cores.

    .venv/bin/python scripts/bench_prep.py [FOLDER] [--workers N] [--repeat R]

theremin: build_corpus into a fresh temp folder each run (no reuse, no augmentation): walk, read, hash, parse +
clean (symusic), encode, write train/val/manifest. REMI: MidiTok's REMI with its default config,
each worker building the tokenizer once, then loading each file with symusic ``Score(path)`` and calling
``tokenizer(score)``. Both use a process pool of N workers (created inside the timed region) and the same
file list; both libraries are imported before timing; the best of R runs is kept (the first run also
warms the page cache for both).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from theremin.codec.midichar import MidiChar
from theremin.data.corpus import build_corpus, find_midi_files

ROOT = Path(__file__).resolve().parent.parent


_tokenizer = None


def _init_remi() -> None:
    global _tokenizer
    from miditok import REMI, TokenizerConfig

    _tokenizer = REMI(TokenizerConfig())


def _remi_chunk(paths: list[str]) -> tuple[int, int]:
    """(tokens, failures) for a chunk of files; a file symusic or MidiTok refuses counts as a failure."""
    from symusic import Score

    tokens = failures = 0
    for p in paths:
        try:
            out = _tokenizer(Score(p))
            seqs = out if isinstance(out, list) else [out]
            tokens += sum(len(s.ids) for s in seqs)
        except Exception:
            failures += 1
    return tokens, failures


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children: unlike wall time, barely moved by other load."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def bench_remi(paths: list[str], workers: int) -> tuple[float, float, int, int]:
    c0, t0 = cpu_seconds(), time.perf_counter()
    if workers == 1:
        _init_remi()
        tokens, failures = _remi_chunk(paths)
    else:
        # same chunking rule as theremin.data.corpus: ~8 chunks per worker
        size = max(1, min(64, len(paths) // (workers * 8)))
        chunks = [paths[i: i + size] for i in range(0, len(paths), size)]
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_remi) as pool:
            results = list(pool.map(_remi_chunk, chunks))
        tokens, failures = sum(r[0] for r in results), sum(r[1] for r in results)
    return time.perf_counter() - t0, cpu_seconds() - c0, tokens, failures


def bench_theremin(folder: Path, workers: int) -> tuple[float, float, int, int]:
    codec = MidiChar()
    with tempfile.TemporaryDirectory(prefix="bench_prep_") as out:
        c0, t0 = cpu_seconds(), time.perf_counter()
        report = build_corpus(folder, out, codec, workers, transpose=None, progress=False)
        dt, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    assert not report.reused
    return dt, cpu, report.chars, len(report.failed)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=str(ROOT / "data" / "demo_midi" / "bach"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for both (default: all cores)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; the best is kept")
    args = ap.parse_args(argv)

    folder = Path(args.folder)
    if not folder.is_dir() and folder == ROOT / "data" / "demo_midi" / "bach":
        from theremin.data.demo import build_demo_midi

        build_demo_midi(folder)
    paths = [e.path for e in find_midi_files(folder)[0]]
    if not paths:
        sys.exit(f"{folder}: no MIDI files")
    # import both stacks up front: forked workers inherit them, so neither side times a library import
    import miditok  # noqa: F401
    import miditoolkit  # noqa: F401
    import symusic  # noqa: F401

    n, w = len(paths), args.workers
    print(f"{n} files in {folder}, {w} workers, best of {args.repeat} runs (cpu_count={os.cpu_count()})")

    best_t = best_r = (float("inf"), float("inf"))  # (wall s, cpu s)
    for i in range(args.repeat):  # alternate so drift (thermal, cache, other load) hits both alike
        dr, cr, tokens, r_failed = bench_remi(paths, w)
        dt, ct, chars, t_failed = bench_theremin(folder, w)
        best_r = (min(best_r[0], dr), min(best_r[1], cr))
        best_t = (min(best_t[0], dt), min(best_t[1], ct))
        print(f"  run {i + 1}: REMI {dr:.2f} s (cpu {cr:.2f} s), theremin {dt:.2f} s (cpu {ct:.2f} s)")
    t_fps, r_fps = n / best_t[0], n / best_r[0]
    print(f"theremin build_corpus : {t_fps:8.1f} files/s  {1000 * best_t[1] / n:6.2f} cpu-ms/file  "
          f"({best_t[0]:.2f} s; {chars:,} chars; {t_failed} failed)")
    print(f"MidiTok REMI          : {r_fps:8.1f} files/s  {1000 * best_r[1] / n:6.2f} cpu-ms/file  "
          f"({best_r[0]:.2f} s; {tokens:,} tokens; {r_failed} failed)")
    print(f"theremin / REMI = {t_fps / r_fps:.2f}x (target >= 1.0x); by cpu time {best_r[1] / best_t[1]:.2f}x")


if __name__ == "__main__":
    main()

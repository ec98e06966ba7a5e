"""Corpus prep on hostile input: issue 8's seeded hostile folder (tests/midi_factory.build_hostile_corpus: byte
flips, truncations, chunk-length lies, huge deltas, 65,535 tracks, 10^6 notes, non-UTF-8 names, a FIFO, dangling
and looping links, a device, expansion bombs) through build_corpus, side by side with a folder of as many good
files. Prints entries, ok / failed / duplicates / lost, wall time, and peak memory: the parent's Python heap
(tracemalloc) and resident size, and the largest resident size of any worker (ru_maxrss of the reaped children).

    .venv/bin/python scripts/bench_hostile.py [--mutants 240] [--workers 2] [--seed 8]

"lost" counts MIDI-named entries (found by an independent os.walk) that are in none of the manifest's files,
failed or duplicates: it must be 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from theremin.codec.midichar import MidiChar
from theremin.data.corpus import MANIFEST_FILE, build_corpus
from theremin.music.midi import is_midi_path

ROOT = Path(__file__).resolve().parent.parent

def _load_midi_factory():
    """The tests' MIDI builders (tests/midi_factory.py), loaded by path: the tests folder is not a package."""
    spec = importlib.util.spec_from_file_location("midi_factory", ROOT / "tests" / "midi_factory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mf = _load_midi_factory()



def midi_named_entries(root: Path) -> set[str]:
    found = set()
    for folder, dirs, files in os.walk(root):
        links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        found |= {Path(os.path.relpath(os.path.join(folder, n), root)).as_posix() for n in files + links
                  if is_midi_path(n)}
    return found


def measure(src: Path, out: Path, workers: int) -> dict:
    """One build of ``src`` in a fresh process, so that its peak figures are its own."""
    code = (f"import sys, json; sys.argv = ['', {str(src)!r}, {str(out)!r}, '{workers}']; "
            "import runpy; b = runpy.run_path('scripts/bench_hostile.py', run_name='bench_hostile'); "
            "print(json.dumps(b['_child']()))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _child() -> dict:
    src, out, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    tracemalloc.start()
    t0 = time.perf_counter()
    report = build_corpus(src, out, MidiChar(), workers, progress=False)
    seconds = time.perf_counter() - t0
    _, heap_peak = tracemalloc.get_traced_memory()
    m = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
    accounted = {r["path"] for r in m["files"]} | set(m["failed"]) | set(m["duplicates"])
    entries = midi_named_entries(src)
    return {"entries": len(entries), "ok": report.ok, "failed": len(report.failed),
            "duplicates": len(report.duplicates), "lost": len(entries - accounted), "seconds": seconds,
            "heap_mb": heap_peak / 2**20,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mutants", type=int, default=240, help="byte flips + truncations + chunk-length lies")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_hostile_") as tmp:
        tmp = Path(tmp)
        expect = mf.build_hostile_corpus(tmp / "hostile", seed=args.seed, n_mutants=args.mutants)
        good = tmp / "good"
        for i in range(len(expect)):
            mf.write_smf(good / f"piece{i:04d}.mid", [mf.notes_to_events(mf.random_notes(10_000 + i, 40))])
        rows = {name: measure(tmp / name, tmp / f"out_{name}", args.workers) for name in ("hostile", "good")}
    print(f"build_corpus, {args.workers} workers, seed {args.seed} (command: {' '.join(sys.argv)})")
    print(f"{'folder':8} {'entries':>7} {'ok':>5} {'failed':>6} {'dupes':>5} {'lost':>4} {'time s':>7} "
          f"{'heap MB':>8} {'rss MB':>7} {'worker rss MB':>13}")
    for name, r in rows.items():
        print(f"{name:8} {r['entries']:7d} {r['ok']:5d} {r['failed']:6d} {r['duplicates']:5d} {r['lost']:4d} "
              f"{r['seconds']:7.2f} {r['heap_mb']:8.1f} {r['rss_mb']:7.1f} {r['worker_rss_mb']:13.1f}")
    if rows["hostile"]["lost"]:
        raise SystemExit("entries lost: every MIDI-named entry must be in files, failed or duplicates")


if __name__ == "__main__":
    main()

"""theremin-demo-data: write the demo's MIDI folder (Bach chorales from music21's corpus) at run time."""

from __future__ import annotations

import argparse

from theremin.apps.cli import run_cli
from theremin.data.demo import build_demo_midi


def _main(argv: list[str] | None) -> None:
    ap = argparse.ArgumentParser(description="Build demo MIDI files from music21's corpus (cached).")
    ap.add_argument("--composer", default="bach", help="music21 corpus composer (bach, palestrina, ...)")
    ap.add_argument("--limit", type=int, default=None, help="keep the first N works")
    ap.add_argument("--out", default=None, help="output folder (default: $THEREMIN_DATA/demo_midi/<composer>)")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    out = build_demo_midi(args.out, args.composer, args.limit, args.workers)
    n = sum(1 for _ in out.glob("*.mid"))
    print(f"{n} MIDI files in {out}")

def main(argv: list[str] | None = None) -> None:
    run_cli("theremin-demo-data", _main, argv)

if __name__ == "__main__":
    main()

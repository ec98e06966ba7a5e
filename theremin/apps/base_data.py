"""``python -m theremin.apps.base_data``: write a held-out folder of tune-book tunes (not in the base corpus)."""

from __future__ import annotations

import argparse

from theremin.apps.cli import run_cli
from theremin.data.base import build_heldout_midi


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description="Write held-out music21 tune books as MIDI (a fine-tune test corpus the base never saw), "
                    "e.g. python -m theremin.apps.base_data --out data/heldout/han --folder essenFolksong "
                    "--include 'han*.abc' --limit 20")
    ap.add_argument("--out", required=True)
    ap.add_argument("--folder", default="essenFolksong", help="music21 corpus folder")
    ap.add_argument("--include", action="append", default=None, help="book file pattern (repeatable)")
    ap.add_argument("--limit", type=int, default=None, help="tunes per book at most")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    r = run_cli("theremin-base-data", build_heldout_midi, args.out, args.folder, args.include or ["han*.abc"],
                args.limit, args.workers)
    print(f"{r['written']} MIDI files from {r['books']} books in {args.out} ({r['failed']} tunes failed)")

if __name__ == "__main__":
    main()

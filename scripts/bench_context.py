"""Benchmark: how many bars of real music a prompt holds (issue 20), per tokenizer, context size and prompt share.

For each MIDI file: its midichar text through the tokenizer; each token belongs to the bar of the note it
completes (tokens that complete no note, e.g. rests and part switches, to the next note's bar); then, at every
bar line B from bar 9 on (the roll point), the most whole bars before B whose tokens fit the prompt's room
(``block_size * prompt_share`` tokens, the header with the parts' sounds included: the Roller leaves names
out). Printed: the median and the 10th percentile over all (file, B), per set, tokenizer and context, and the
tokens per bar.

Bars are the file's own (its first time signature) unless ``--meter 4/4`` says otherwise: 582 of POP909's 849
files declare 1/4, so their "bars" are beats; its songs are pop in 4/4 (the dataset's downbeat annotations), and
a musician's "8 bars" of them is 32 beats.

    .venv/bin/python scripts/bench_context.py --tokenizer data/corpus/bach/tokenizers/spm2048-... \\
        --set pop909='/data/pop909/midi/0*.mid' --set band='/data/band/*.mid' --block 256 512 1024 2048 --meter 4/4
"""

from __future__ import annotations

import argparse
import glob
import statistics
import sys
from pathlib import Path

import numpy as np


def bar_tokens(tok, path: str, meter: tuple[int, int] | None = None) -> tuple[np.ndarray, int] | None:
    """(tokens per bar, header tokens) of one file, or None when it cannot be read; bars of ``meter`` when given,
    else of the file's first time signature."""
    from theremin.music.midi import MidiError, read_midi
    from theremin.roll.roller import unnamed

    codec = tok.codec
    try:
        piece = read_midi(path)
        piece.parts = list(unnamed(piece.parts))  # as the Roller gives it to the model: sounds, not names
        text = codec.encode(piece)
    except (MidiError, Exception) as e:  # a bench reports and goes on
        print(f"  skipped {Path(path).name}: {e}"[:160], file=sys.stderr)
        return None
    num, den = meter or (piece.time_signatures[0][1:] if piece.time_signatures else (4, 4))
    bar = num * 4 / den * codec.grid
    notes, _ = codec.decode_grid(text)
    if not notes:
        return None
    ids = tok.encode(text)
    counts = np.asarray(tok.note_counts(ids))
    note_bar = np.asarray([int(n[0] // bar) for n in notes])
    done = np.cumsum(counts)  # notes completed up to and including each token
    owner = note_bar[np.minimum(done - (counts > 0), len(note_bar) - 1)]  # the bar of the note each token leads to
    owner = np.maximum.accumulate(owner)
    per_bar = np.bincount(owner, minlength=int(note_bar.max()) + 1)
    header = len(tok.encode(codec.header(piece.parts))) if hasattr(codec, "header") else 0
    return per_bar, header


def bars_fitting(per_bar: np.ndarray, header: int, room: int, first: int = 8) -> list[int]:
    """At each bar line B >= ``first``: the most whole bars before B whose tokens (+ header) fit ``room``."""
    csum = np.concatenate([[0], np.cumsum(per_bar)])
    out = []
    for b in range(first, len(per_bar) + 1):
        k = 0
        while k < b and csum[b] - csum[b - k - 1] + header <= room:
            k += 1
        out.append(k)
    return out


def main(argv: list[str] | None = None) -> int:
    from theremin.codec.kinds import load_configured

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", action="append", required=True, help="a tokenizer folder (repeatable)")
    ap.add_argument("--set", action="append", required=True, help="NAME='GLOB' (repeatable)")
    ap.add_argument("--block", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--share", type=float, nargs="+", default=[0.5, 0.75])
    ap.add_argument("--limit", type=int, default=60, help="files per set")
    ap.add_argument("--meter", default="file", help="'file' (each file's time signature) or e.g. 4/4 for every file")
    args = ap.parse_args(argv)
    meter = None if args.meter == "file" else tuple(int(x) for x in args.meter.split("/"))
    print(f"bars: {'each file' + chr(39) + 's time signature' if meter is None else args.meter + ' for every file'}")
    print("| set | tokenizer | tokens/bar (median) | block | prompt share | bars in the prompt: median | p10 |")
    print("|---|---|---|---|---|---|---|")
    for tdir in args.tokenizer:
        tok = load_configured(tdir)
        for spec in args.set:
            name, _, pattern = spec.partition("=")
            files = sorted(glob.glob(pattern, recursive=True))[: args.limit]
            measured = [m for f in files if (m := bar_tokens(tok, f, meter)) is not None]
            if not measured:
                print(f"{name}: no usable file matches {pattern!r}", file=sys.stderr)
                return 2
            tpb = statistics.median(float(np.median(pb[pb > 0])) for pb, _ in measured)
            for block in args.block:
                for share in args.share:
                    fits = [k for pb, h in measured for k in bars_fitting(pb, h, int(block * share))]
                    print(f"| {name} ({len(measured)} files) | {Path(tdir).name} | {tpb:.0f} | {block} | {share:g} | "
                          f"{statistics.median(fits):.0f} | {np.percentile(fits, 10):.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

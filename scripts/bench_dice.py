"""The dice roll: latency of N variations x M notes from a checkpoint on CPU, with the KV cache.

    python scripts/bench_dice.py                      # the demo model (outputs/demo/train/checkpoints/last.ckpt)
    python scripts/bench_dice.py --ckpt path.ckpt --n 8 --notes 64

Target (issue 4): 8 variations x 64 notes <= 1 s with the default model. Rolls only (no WAV/PNG rendering);
the first roll warms up (constraint masks are built once per model and settings). Prints the median of
--repeats rolls, then how long cutting dense prompts to the model's context takes (issue 8.1: a chord-heavy
prompt used to loop forever; the cut now takes O(log n) encodings).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch

from theremin.music.midi import Note, Piece
from theremin.roll.roller import Roller, SamplingSettings


def bench_trim(roller: Roller) -> None:
    """Seconds to cut prompts of quarter-note chords of random pitches to the context (Roller.prompt)."""
    rng = random.Random(0)
    for chords, size in ((60, 8), (2000, 8), (20_000, 4), (1, 128)):
        notes = sorted(Note(i * 480, (i + 1) * 480, p, 80) for i in range(chords) for p in rng.sample(range(128), size))
        t = time.perf_counter()
        p = roller.prompt(Piece(notes, 480))
        dt = time.perf_counter() - t
        print(f"prompt cut: {chords} chords x {size} notes ({len(notes)} notes) -> {roller.codec.count_notes(p.text)} "
              f"notes, {len(roller.tok.encode(p.text))} tokens (room {roller.model.block_size // 2}) in {dt:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="outputs/demo/train/checkpoints/last.ckpt")
    ap.add_argument("--prompt", default=None, help="a MIDI prompt (default: the first val piece of the corpus)")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--notes", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.ckpt).exists():
        raise SystemExit(f"{args.ckpt} does not exist: run `make demo` (or theremin-train) first, or pass --ckpt")
    roller = Roller.load(args.ckpt)
    prompt = args.prompt
    if prompt is None and roller.corpus_dir is not None:  # the first held-out piece of the training corpus
        first_val = (roller.corpus_dir / "val.txt").read_text(encoding="utf-8").split("\n", 1)[0]
        prompt = roller.codec.decode(first_val)
    s = SamplingSettings(n=args.n, length=args.notes, unit="notes", keep_bars=2 if prompt else None, seed=0)
    roller.roll(prompt, s)  # warm-up: masks, allocator
    times, counts = [], []
    for i in range(args.repeats):
        s.seed = i
        t = time.perf_counter()
        res = roller.roll(prompt, s)
        times.append(time.perf_counter() - t)
        counts += [v.generated_notes for v in res.variations]
    cfg = roller.model.config
    print(f"model: {roller.model.num_params() / 1e6:.2f}M params (n_layer={cfg.n_layer}, n_embd={cfg.n_embd}, "
          f"vocab={cfg.vocab_size}), threads={torch.get_num_threads()}, prompt: 2 bars of "
          f"{args.prompt or 'the first val piece'}")
    print(f"dice roll: {args.n} variations x {args.notes} notes: median {statistics.median(times):.3f} s "
          f"(runs: {' '.join(f'{t:.3f}' for t in times)}) (target <= 1 s)")
    print(f"new notes per variation: min {min(counts)}, max {max(counts)} (asked {args.notes}; notes of one pitch "
          "sampled twice on one onset sound as one)")
    bench_trim(roller)


if __name__ == "__main__":
    main()

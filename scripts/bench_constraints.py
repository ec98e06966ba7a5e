"""Masked sampling speed, absolute vs relative tokenizer: same model shape, same settings, side by side.

    python scripts/bench_constraints.py data/corpus/bach/tokenizers/spm4096-factored-<abs> \
        data/corpus/bach/tokenizers/spm4096-factored-<rel>

For each tokenizer (two trained on the same corpus, one with ``pitch=relative``): how long building the
Constraints takes, then the median seconds of a roll (Roller with a randomly initialised GPT of the given shape,
no prompt, --n variations x --notes notes) with no pitch constraint and with ``pitch_range`` + ``key`` (the
relative tokenizer's masks are then looked up per row from its last pitches), and the mean time of
Constraints.apply per row and step. Random weights: the figures compare the constraint machinery, not music.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from theremin.codec.tokenizer import MidiTokenizer
from theremin.model.gpt import GPT, GPTConfig
from theremin.roll.constraints import Constraints
from theremin.roll.roller import Roller, SamplingSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokenizers", nargs="+", help="tokenizer folders (e.g. an absolute and a relative one)")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--notes", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shape", default="4,4,256", help="n_layer,n_head,n_embd")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n_layer, n_head, n_embd = (int(v) for v in args.shape.split(","))
    for path in args.tokenizers:
        tok = MidiTokenizer.load(path)
        t = time.perf_counter()
        Constraints(tok, pitch_range=(48, 72), key="D dorian")
        build = time.perf_counter() - t
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=1024, n_layer=n_layer, n_head=n_head,
                              n_embd=n_embd)).eval()
        roller = Roller(model, tok, tok.codec)
        kind = "relative" if tok.relative else "absolute"
        print(f"{kind} vocab {tok.vocab_size}: Constraints(pitch_range, key) built in {build:.2f} s")
        for label, extra in (("no pitch constraint", {}), ("pitch_range=[48,72] key='D dorian'",
                                                             {"pitch_range": (48, 72), "key": "D dorian"})):
            s = SamplingSettings(n=args.n, length=args.notes, seed=0, **extra)
            roller.roll(None, s)  # warm-up: masks
            cons = roller.constraints(s)
            spent = [0.0, 0]  # seconds in Constraints.apply, calls (one per row and step)
            apply = cons.apply

            def timed(*a, _apply=apply, _spent=spent):
                t0 = time.perf_counter()
                out = _apply(*a)
                _spent[0] += time.perf_counter() - t0
                _spent[1] += 1
                return out

            cons.apply = timed
            times = []
            for i in range(args.repeats):
                s.seed = i
                t = time.perf_counter()
                roller.roll(None, s)
                times.append(time.perf_counter() - t)
            del cons.apply
            print(f"  {label}: {args.n} x {args.notes} notes in {statistics.median(times):.3f} s "
                  f"(median of {args.repeats}); apply {1e6 * spent[0] / spent[1]:.0f} us per row and step "
                  f"over {spent[1]} calls")


if __name__ == "__main__":
    main()

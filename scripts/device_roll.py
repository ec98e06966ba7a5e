"""The rolling path on a GPU, end to end (scripts/device_check.sh runs it after training a small model there).

    python scripts/device_roll.py CKPT [--device cuda] [--out DIR]

Rolls with every kind of constraint on the device (Roller), through the server's batching engine (RollService,
device=cuda), and scores held-out text (model.scoring), each compared with the same on the CPU: the notes must
match where the sampling is the same random stream (greedy), and the bits per note within 1e-3. Prints one line
per check and exits 1 on any failure."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from theremin import Roller, SamplingSettings
from theremin.model.scoring import score_texts
from theremin.serve.forms import Limits
from theremin.serve.service import RollService, ServeSettings

CASES = {"plain": {}, "polyphony": {"max_polyphony": 3}, "key-range": {"key": "D dorian", "pitch_range": (48, 84)},
         "bars": {"unit": "bars", "length": 4}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    ok = True
    cpu, dev = Roller.load(args.ckpt), Roller.load(args.ckpt, device=args.device)
    for name, extra in CASES.items():
        s = {"n": 4, "length": 32, "seed": 7, "temperature": 0.0, **extra}  # greedy: no random stream to differ
        t0 = time.perf_counter()
        got = dev.roll(None, SamplingSettings(**s), out_dir=Path(args.out) / name if args.out else None)
        seconds = time.perf_counter() - t0
        same = [v.text for v in got.variations] == [v.text for v in cpu.roll(None, SamplingSettings(**s)).variations]
        ok &= same
        print(f"roll {name:10s} {args.device}: {sum(v.generated_notes for v in got.variations)} notes in "
              f"{seconds:.2f} s, same notes as the CPU: {same}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        service = RollService(args.ckpt, ServeSettings(rolls_dir=tmp, device=args.device, limits=Limits()))
        try:
            meta = service.roll(SamplingSettings(n=8, length=32, seed=1))
            print(f"serve {args.device}: {len(meta['variations'])} variations, "
                  f"{sum(v['notes'] for v in meta['variations'])} notes in {meta['seconds']} s", flush=True)
        finally:
            service.close()
    lines = [v.text for v in cpu.roll(None, SamplingSettings(n=4, length=64, seed=2)).variations]
    names = [f"v{i}" for i in range(len(lines))]
    a = score_texts(cpu.model, cpu.tok, lines, names)["bits_per_note"]
    b = score_texts(dev.model, dev.tok, lines, names, device=args.device)["bits_per_note"]
    ok &= abs(a - b) < 1e-3
    print(f"score: cpu {a:.4f} vs {args.device} {b:.4f} bits/note", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

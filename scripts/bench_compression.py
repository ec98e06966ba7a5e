"""Notes per token of the midichar tokenizer on held-out Bach and on another style, per fallback variant.

Trains on ~370 Bach chorales (a deterministic split of data/demo_midi/bach by a hash of the file name) and
measures notes/token = codec notes / tokens on the held-out chorales and on another composer's pieces
(Palestrina by default; built from music21's corpus if absent). Variants: bytes fallback, bytes +
transposition augmentation, factored fallback, factored + augmentation. Also checks decode(encode(t)) == t on
every held-out piece. Targets: >= 2.0 (Bach), >= 1.5 (other style).

    .venv/bin/python scripts/bench_compression.py --vocab 4096 8192
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

from theremin.codec.midichar import MidiChar
from theremin.codec.tokenizer import MidiTokenizer, compression
from theremin.config import data_dir

DEFAULT_VARIANTS = ["bytes", "bytes+aug", "factored", "factored+aug"]
TARGET = {"bach": 2.0, "other": 1.5}


def variant_options(name: str, transpose: list[int]) -> dict:
    """Options of a variant name: '+'-joined parts, the first 'bytes' or 'factored', then any of 'aug'
    (transposition augmentation), 'rel' (relative pitch), 'time<F>' (time-scale augmentation by F),
    'mc<N>' (min_count N), 'cb<F>' (char_budget F)."""
    first, *rest = name.split("+")
    if first not in ("bytes", "factored"):
        raise ValueError(f"variant {name!r} must start with 'bytes' or 'factored'")
    opts: dict = {"fallback": first}
    for part in rest:
        if part == "aug":
            opts["augment_transpose"] = list(transpose)
        elif part == "rel":
            opts["pitch"] = "relative"
        elif part.startswith("time"):
            opts.setdefault("augment_time_scale", []).append(float(part[4:]))
        elif part.startswith("cb"):
            opts["char_budget"] = float(part[2:])
        elif part.startswith("mc"):
            opts["min_count"] = int(part[2:])
        else:
            raise ValueError(f"variant {name!r}: unknown part {part!r}")
    return opts


def encoded_texts(midi_dir: Path, codec: MidiChar, cache_root: Path) -> dict[str, str]:
    """{file name: midichar text} for a folder, cached on disk by file names, sizes and codec config."""
    files = sorted(midi_dir.glob("*.mid"))
    sig = json.dumps([[f.name, f.stat().st_size] for f in files] + [codec.config], sort_keys=True)
    cache = cache_root / f"{midi_dir.name}-{hashlib.sha256(sig.encode()).hexdigest()[:16]}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    texts = {}
    for f in files:
        try:
            texts[f.name] = codec.encode_file(f)
        except Exception as e:  # an unreadable file is reported and left out of the measurement
            print(f"skipped {f.name}: {e}", file=sys.stderr)
    cache_root.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(texts))
    return texts


def split(names: list[str], n_train: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic split by sha1 of seed + file name (independent of listing order and BWV numbering)."""
    order = sorted(names, key=lambda n: hashlib.sha1(f"{seed}:{n}".encode()).hexdigest())
    return sorted(order[:n_train]), sorted(order[n_train:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[8192])
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                    help="e.g. bytes factored+aug factored+rel+time2 factored+aug+mc1 (see variant_options)")
    ap.add_argument("--bach-dir", type=Path, default=None, help="default: $THEREMIN_DATA/demo_midi/bach")
    ap.add_argument("--other", default="palestrina", help="music21 composer of the other style")
    ap.add_argument("--other-dir", type=Path, default=None, help="default: $THEREMIN_DATA/demo_midi/<other>")
    ap.add_argument("--other-limit", type=int, default=150, help="pieces to build if the other dir is absent")
    ap.add_argument("--n-train", type=int, default=370)
    ap.add_argument("--splits", type=int, default=5, help="train/held-out splits to average over")
    ap.add_argument("--transpose", type=int, nargs=2, default=[-5, 6], metavar=("LO", "HI"))
    ap.add_argument("--min-count", type=int, default=None, help="factored: default min_count of the variants")
    ap.add_argument("--factor-layout", default=None, help="factored: override the default factor_layout")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "theremin-bench")
    args = ap.parse_args(argv)

    codec = MidiChar()
    bach_dir = args.bach_dir or data_dir() / "demo_midi" / "bach"
    other_dir = args.other_dir or data_dir() / "demo_midi" / args.other
    if not bach_dir.exists():
        sys.exit(f"{bach_dir} not found: run `theremin-demo-data --composer bach` first")
    if not other_dir.exists() or not any(other_dir.glob("*.mid")):
        from theremin.data.demo import build_demo_midi

        build_demo_midi(other_dir, composer=args.other, limit=args.other_limit)
    bach = encoded_texts(bach_dir, codec, args.cache)
    other = encoded_texts(other_dir, codec, args.cache)
    other_texts = list(other.values())
    n_held = len(bach) - args.n_train
    print(f"Bach: {len(bach)} pieces, {sum(map(codec.count_notes, bach.values()))} notes; {args.n_train} train / "
          f"{n_held} held out, {args.splits} splits (seeds 0..{args.splits - 1}); "
          f"{args.other}: {len(other_texts)} pieces, {sum(map(codec.count_notes, other_texts))} notes")

    # results[(vocab, variant)] = list of per-split dicts
    results: dict[tuple[int, str], list[dict]] = {}
    errors: dict[tuple[int, str], str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tok-") as tmp:
        for seed in range(args.splits):
            train_names, held_names = split(list(bach), args.n_train, seed)
            held = [bach[n] for n in held_names]
            train_file = Path(tmp) / f"train{seed}.txt"
            train_file.write_text("".join(bach[n] + "\n" for n in train_names), encoding="utf-8")
            for vocab in args.vocab:
                for name in args.variants:
                    opts = variant_options(name, args.transpose)
                    if opts["fallback"] == "factored" and args.factor_layout is not None:
                        opts["factor_layout"] = args.factor_layout
                    if opts["fallback"] == "factored" and args.min_count is not None:
                        opts.setdefault("min_count", args.min_count)
                    t0 = time.time()
                    try:
                        tok = MidiTokenizer.train(train_file, vocab, Path(tmp) / f"{name}-{vocab}-{seed}", codec,
                                                  **opts)
                    except ValueError as e:
                        errors[vocab, name] = str(e)
                        continue
                    secs = time.time() - t0
                    rb = compression(tok, held, check=True)
                    ro = compression(tok, other_texts, check=True)
                    results.setdefault((vocab, name), []).append(
                        {"secs": secs, "size": tok.vocab_size, "bach": rb, "other": ro})

    hdr = (f"{'vocab':>6} {'variant':<22} {'train_s':>7} {'bach n/t mean (min-max)':>24} {'bytes%':>6} "
           f"{args.other[:10] + ' n/t':>14} {'bytes%':>6} {'lossless':>8}  targets (>={TARGET['bach']} / "
           f">={TARGET['other']})")
    print(hdr)
    print("-" * len(hdr))
    ok_all = True
    for (vocab, name), rs in results.items():
        b = [r["bach"]["notes_per_token"] for r in rs]
        o = [r["other"]["notes_per_token"] for r in rs]
        bmean, omean = sum(b) / len(b), sum(o) / len(o)
        bbytes = 100 * sum(r["bach"]["byte_tokens"] for r in rs) / sum(r["bach"]["tokens"] for r in rs)
        obytes = 100 * sum(r["other"]["byte_tokens"] for r in rs) / sum(r["other"]["tokens"] for r in rs)
        lossless = all(r["bach"]["lossless"] and r["other"]["lossless"] for r in rs)
        ok_all &= lossless
        meets = (f"{'ok' if bmean >= TARGET['bach'] else 'MISS'} / {'ok' if omean >= TARGET['other'] else 'MISS'}")
        secs = sum(r["secs"] for r in rs) / len(rs)
        print(f"{vocab:>6} {name:<22} {secs:>7.1f} {bmean:>8.3f} ({min(b):.3f}-{max(b):.3f}) {bbytes:>6.1f} "
              f"{omean:>14.3f} {obytes:>6.1f} {'yes' if lossless else 'NO':>8}  {meets}")
    for (vocab, name), msg in errors.items():
        print(f"{vocab:>6} {name:<22} failed: {msg}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())

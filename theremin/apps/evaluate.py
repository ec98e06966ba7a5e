"""theremin-evaluate: style and memorisation figures of generated MIDI against a corpus, as a table."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from theremin.apps.cli import run_cli
from theremin.codec.midichar import CodecError
from theremin.errors import ThereminError
from theremin.metrics.copies import CopyIndex
from theremin.metrics.notes import _split_paths, corpus_codec, load_corpus
from theremin.metrics.style import _crop, _sample_files, evaluate, marked_prompt_notes
from theremin.music.midi import CLIP_SUFFIX, MidiError


def _table(columns: dict[str, dict[str, float]]) -> str:
    keys = list(next(iter(columns.values())))
    names = list(columns)
    kw = max(len(k) for k in keys)
    head = f"{'metric':<{kw}}  " + "  ".join(f"{n:>12}" for n in names)
    rows = [head, "-" * len(head)]
    for k in keys:
        cells = []
        for n in names:
            v = columns[n].get(k)
            cells.append(f"{'':>12}" if v is None else f"{v:>12.4g}")
        rows.append(f"{k:<{kw}}  " + "  ".join(cells))
    return "\n".join(rows)

def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("theremin-evaluate", _main, argv)

def _main(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(
        prog="theremin-evaluate",
        description="Style and memorisation metrics of generated samples against a corpus's train split. "
                    "The val split (real music the model never saw, cropped to the samples' length) is shown "
                    "alongside as a reference: what 'sounds like the corpus' and 'chance copying' look like.")
    p.add_argument("samples", nargs="*", help="sample MIDI files or folders of them")
    p.add_argument("--corpus", required=True, help="corpus folder (train.txt, val.txt, manifest.json)")
    p.add_argument("--samples-txt", action="append", default=[], metavar="FILE",
                   help="midichar samples, one per line (repeatable)")
    p.add_argument("--prompt-notes", type=int, default=None, metavar="N",
                   help="the first N notes of every sample came from a prompt: leave them out (default: the "
                        "number theremin-generate marks in each MIDI file, else 0)")
    p.add_argument("--split", default="train", help="corpus split to compare with (default: train)")
    p.add_argument("--limit", type=int, default=None, help="use at most this many corpus pieces")
    p.add_argument("--augmented", action="store_true", help="include transposed copies from the corpus build")
    p.add_argument("--no-reference", action="store_true", help="skip the val-split reference column")
    p.add_argument("--per-sample", action="store_true", help="list each sample's longest copied run")
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    args = p.parse_args(argv)


    corpus_dir = Path(args.corpus)
    codec = corpus_codec(corpus_dir)
    samples: list[str] = []
    names: list[str] = []
    prompts: list[int] = []
    for f in _sample_files(args.samples):
        if f.name.endswith(CLIP_SUFFIX) and marked_prompt_notes(f) is None:  # a roll's clip: its variation counts
            continue
        try:
            marked = marked_prompt_notes(f)
            samples.append(codec.encode_file(f))  # read_midi folds a roll's "prompt: <name>" tracks back
        except (MidiError, CodecError) as e:
            print(f"skipped: {e}", file=sys.stderr)
            continue
        names.append(str(f))
        prompts.append(args.prompt_notes if args.prompt_notes is not None else marked or 0)
    for txt in args.samples_txt:
        try:
            lines = [ln for ln in Path(txt).read_text(encoding="utf-8").split("\n") if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise ThereminError(f"--samples-txt {txt}: cannot be read ({e})") from None
        samples += lines
        names += [f"{txt}:{i + 1}" for i in range(len(lines))]
        prompts += [args.prompt_notes or 0] * len(lines)
    if not samples:
        raise ThereminError("no samples: give MIDI files/folders or --samples-txt")

    corpus = load_corpus(corpus_dir, args.split, args.limit, args.augmented)
    index = CopyIndex(corpus, codec, any_key=True)
    columns = {"samples": evaluate(samples, corpus, codec, prompts, index=index)}
    val_path = corpus_dir / "val.txt"
    if not args.no_reference and args.split != "val" and val_path.exists():
        val = load_corpus(corpus_dir, "val")
        if val:
            length = int(np.median([max(1, codec.count_notes(s) - k) for s, k in zip(samples, prompts)]))
            val = [_crop(v, codec, length) for v in val]
            columns["val (ref)"] = evaluate(val, corpus, codec, index=index)
    print(_table(columns))

    if args.per_sample:
        paths = _split_paths(corpus_dir, args.split)
        if paths and len(paths) != len(load_corpus(corpus_dir, args.split, None, args.augmented)):
            paths = None  # lines are not one per file (augmented, or a manifest of another build)
        print()
        for name, s, k in zip(names, samples, prompts):
            m = index.find(s, k)
            src = paths[m.piece] if paths and 0 <= m.piece < len(paths) else f"piece {m.piece}"
            where = f"from {src} (note {m.piece_note})" if m.length else ""
            print(f"{m.length:5d} notes copied  {name}  {where}")
    if args.json:
        Path(args.json).write_text(json.dumps(columns, indent=2) + "\n", encoding="utf-8")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())

"""Fine-tuning test folders a base never saw: files of a dataset that the base corpus's balance left out.

    python scripts/heldout_folders.py --base-midi data/base_midi --datasets-dir data/datasets \\
        --take pop909=20:10 --take pianolatron=12:5 --out /tmp/ft
    python scripts/heldout_folders.py --folder band=<miditok sdist>/tests/MIDIs_multitrack --take band=8:4 --out /tmp/ft

A dataset source of ``experiment=base`` links the files it takes into ``<base-midi>/<name>/``; the rest of the
dataset's music (its catalogue layout, e.g. ``midi/*.mid``) is what a fine-tuning benchmark may train and test on
without the base having heard it. ``--folder NAME=DIR`` takes the MIDI files of any folder instead. Files are
shuffled with a fixed seed and copied (not linked: the folders outlive the data folder) into
``<out>/<name>/train`` and ``<out>/<name>/test``, split by file. Dataset files are never copied into the repo:
give an ``--out`` outside it. Prints what it wrote.
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from theremin.music.midi import is_midi_path


def taken(base_midi: Path, name: str) -> set[str]:
    """Resolved paths of the files the base's source ``name`` links to."""
    folder = base_midi / name
    if not folder.is_dir():
        raise SystemExit(f"--base-midi: {folder} is missing (build the base corpus with data.datasets=[{name}] first)")
    return {str(p.resolve()) for p in folder.rglob("*") if is_midi_path(p)}


def candidates(root: Path) -> list[Path]:
    return sorted(p.resolve() for p in root.rglob("*") if is_midi_path(p) and p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-midi", type=Path, default=Path("data/base_midi"))
    ap.add_argument("--datasets-dir", type=Path, default=Path("data/datasets"))
    ap.add_argument("--folder", action="append", default=[], help="NAME=DIR: files of a folder, not a dataset")
    ap.add_argument("--take", action="append", required=True, help="NAME=TRAIN:TEST files (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    folders = dict(f.split("=", 1) for f in args.folder)
    for spec in args.take:
        name, counts = spec.split("=", 1)
        n_train, n_test = (int(x) for x in counts.split(":"))
        if name in folders:
            pool = candidates(Path(folders[name]).expanduser())
        else:
            seen = taken(args.base_midi, name)
            pool = [p for p in candidates(args.datasets_dir / name) if str(p) not in seen]
        if len(pool) < n_train + n_test:
            raise SystemExit(f"{name}: {len(pool)} files left, {n_train + n_test} asked for")
        random.Random(args.seed).shuffle(pool)
        for split, files in (("train", pool[:n_train]), ("test", pool[n_train:n_train + n_test])):
            dest = args.out / name / split
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            for i, p in enumerate(files):
                shutil.copyfile(p, dest / f"{i:03d}_{p.name}")
            print(f"{name}/{split}: {len(files)} of {len(pool)} files -> {dest}")


if __name__ == "__main__":
    main()

"""Fine-tuned vs from scratch on small corpora, side by side: held-out bits/note at the same budget.

    python scripts/bench_finetune.py --base outputs/base/runs/<run>/checkpoints/best-*.ckpt \\
        --corpus maestro=/data/maestro/train:/data/maestro/test --corpus pop=/data/pop/train:/data/pop/test

For each corpus (a train folder and a test folder of other files, split by file; scripts/heldout_folders.py makes
them from dataset files a base's balance left out):

1. fine-tuned: ``theremin-train experiment=finetune init_from=<base> data=folder data.input_dir=<train>``; the
   step count is the one the fine-tuning rules pick from the corpus size (theremin/model/finetune.py);
2. from scratch: the same recipe (augmentation, early stopping, best checkpoint) and the same number of steps of
   the same model size, from random weights, with a tokenizer trained on the folder (``--scratch-vocab``);
3. ``theremin-score`` of each best checkpoint, and of the base alone, on the test folder; wall time of each
   training (CPU minutes);
4. rolls of both from the first 2 bars of the first test file, as piano-roll PNGs (``--rolls``).

Prints a markdown table; every command it ran is printed before it runs.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def run(cmd: list[str], log: Path) -> tuple[str, float]:
    print("$ " + shlex.join(cmd), flush=True)
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
    if p.returncode:
        raise SystemExit(f"failed ({p.returncode}), see {log}:\n{p.stderr[-2000:]}")
    return p.stdout + p.stderr, dt


def train(cmd: list[str], run_dir: Path, reuse: bool) -> tuple[str, float]:
    """Run a training command (or, with ``reuse``, take the finished run already in ``run_dir``); its output
    and wall time are kept in ``run_dir``/bench.json."""
    record = run_dir / "bench.json"
    if reuse and record.is_file():
        r = json.loads(record.read_text())
        if r["command"] == cmd:
            print(f"reusing {run_dir} ({r['seconds'] / 60:.1f} min)", flush=True)
            return r["output"], r["seconds"]
    if run_dir.exists():  # a run of another command there would be resumed, not started afresh
        shutil.rmtree(run_dir)
    text, seconds = run(cmd, run_dir / "train.out")
    record.write_text(json.dumps({"command": cmd, "seconds": seconds, "output": text[-20000:]}))
    return text, seconds


def best(run_dir: Path) -> Path:
    ckpts = sorted((run_dir / "checkpoints").glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    return ckpts[-1] if ckpts else run_dir / "checkpoints" / "last.ckpt"


def score(ckpt: Path, test: Path, out: Path) -> dict:
    run([str(BIN / "theremin-score"), f"ckpt_path={ckpt}", f"input_dir={test}", f"out_json={out}"],
        out.with_suffix(".log"))
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=None, help="the base checkpoint (experiment=base)")
    ap.add_argument("--corpus", action="append", required=True, help="name=train_dir:test_dir (repeatable)")
    ap.add_argument("--out", default="outputs/bench_finetune")
    ap.add_argument("--scratch-vocab", default="1k", help="tokenizer preset of the from-scratch runs")
    ap.add_argument("--scratch-lr", default="3e-3")
    ap.add_argument("--rolls", action="store_true", help="also roll 2 variations of 4 bars from each, with PNGs")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="cap the fine-tuning plan (finetune.max_steps): the budget both runs get")
    ap.add_argument("--patience", type=int, default=None,
                    help="early stopping's patience (validations) in both runs; a large one turns it off: at a "
                         "small budget a from-scratch run's early plateau would otherwise end it")
    ap.add_argument("--ft-override", action="append", default=[], metavar="KEY=VALUE",
                    help="an override of the fine-tuning runs only, e.g. finetune.fixed_lr=1.5e-4 (repeatable)")
    ap.add_argument("--reuse", action="store_true", help="reuse finished runs of the same command (bench.json)")
    ap.add_argument("--scratch-first", metavar="NAME=STEPS", action="append", default=None,
                    help="only train the from-scratch run of NAME with STEPS steps (before the base exists; "
                         "a later run with --reuse picks it up when the fine-tuning plan gives the same steps)")
    args = ap.parse_args()
    args.scratch_steps = {k: int(v) for k, v in (x.split("=") for x in args.scratch_first or [])}
    args.scratch_first = bool(args.scratch_first)
    out = Path(args.out).resolve()
    rows = []
    for spec in args.corpus:
        name, dirs = spec.split("=", 1)
        train_dir, test = (Path(d).resolve() for d in dirs.split(":"))
        # a fine-tuning variant (--ft-override) gets its own folder; the from-scratch run is shared with --reuse
        variant = "".join("_" + re.sub(r"[^A-Za-z0-9.-]+", "-", o) for o in args.ft_override)
        ft_dir, sc_dir = out / name / f"finetune{variant}", out / name / "scratch"
        common = ["experiment=finetune", "data=folder", f"data.input_dir={train_dir}"]
        if args.patience is not None:
            common.append(f"callbacks.early_stopping.patience={args.patience}")
        steps = args.scratch_steps.get(name)
        if steps is None or args.scratch_first is False:
            cap = [f"finetune.max_steps={args.max_steps}"] if args.max_steps else []
            text, ft_s = train([str(BIN / "theremin-train"), *common, f"init_from={Path(args.base).resolve()}", *cap,
                                *args.ft_override,
                                f"data.name=bench-{name}-ft", f"hydra.run.dir={ft_dir}"], ft_dir, args.reuse)
            m = re.search(r"fine-tuning from .*?: (\d+) steps .*? lr ([0-9.e+-]+), validation every (\d+) steps",
                          text)
            if not m:
                raise SystemExit(f"no fine-tuning plan in the log of {ft_dir}")
            steps, lr = int(m.group(1)), m.group(2)
        every = max(1, steps // 12)
        # its own tokenizer (hard_vocab_limit=false: a tiny corpus may not fill the preset's vocab)
        _, sc_s = train([str(BIN / "theremin-train"), *common, "~finetune", f"tokenizer={args.scratch_vocab}",
                         "tokenizer.hard_vocab_limit=false",
                         f"data.name=bench-{name}-scratch", f"trainer.max_steps={steps}",
                         f"trainer.val_check_interval={every}", f"optimizer.lr={args.scratch_lr}",
                         f"lr_schedule.warmup_steps={max(1, steps // 20)}", f"hydra.run.dir={sc_dir}"],
                        sc_dir, args.reuse)
        if args.scratch_first:
            continue
        ft = score(best(ft_dir), test, out / name / f"score_finetune{variant}.json")
        sc = score(best(sc_dir), test, out / name / "score_scratch.json")
        alone = score(Path(args.base).resolve(), test, out / name / "score_base.json")
        rows.append((name, train_dir, alone, sc, ft, steps, lr, sc_s, ft_s))
        if args.rolls:
            prompt = sorted(p for p in test.rglob("*") if p.suffix.lower() in (".mid", ".midi"))[0]
            for kind, d in (("finetune", ft_dir), ("scratch", sc_dir)):
                run([str(BIN / "theremin-generate"), f"ckpt_path={best(d)}", f"prompt={prompt}",
                     "sampling.keep_bars=2", "sampling.n=2", "sampling.length=4", "sampling.unit=bars",
                     "render.wav=false", f"out_dir={out / name / ('rolls_' + kind)}",
                     f"hydra.run.dir={out / name / ('gen_' + kind)}"], out / name / f"gen_{kind}.out")
    print("\n| corpus | files train/test | test notes | base alone | from scratch bits/note | fine-tuned bits/note | "
          "ratio | steps (lr) | CPU min scratch / fine-tune |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, train_dir, alone, sc, ft, steps, lr, sc_s, ft_s in rows:
        n_train = sum(1 for p in train_dir.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
        print(f"| {name} | {n_train}/{ft['files']} | {ft['notes']:,} | {alone['bits_per_note']:.3f} | "
              f"{sc['bits_per_note']:.3f} | "
              f"{ft['bits_per_note']:.3f} | {ft['bits_per_note'] / sc['bits_per_note']:.2f} | {steps} ({lr}) | "
              f"{sc_s / 60:.1f} / {ft_s / 60:.1f} |")


if __name__ == "__main__":
    main()

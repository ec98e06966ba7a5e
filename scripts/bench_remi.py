"""Benchmark: midichar vs the REMI baseline, run by run (not a test). For each run directory (or every run of a
multirun directory) it prints one table row:

- codec (tokenizer kind + vocab size), model shape and parameter count;
- steps trained and ``val/bits_per_note`` of the last validation, from the run's metrics.csv (CSV logger);
- val notes/token of its tokenizer;
- generation: notes per second of unconstrained sampling with the model's KV-cache ``generate`` (temperature 1,
  top-p 0.95, piece boundaries masked) from the start of the first val piece, ``--new-tokens`` tokens, the
  median of ``--repeats`` runs; the notes are those of the decoded continuation (``decode(errors='ignore')``,
  so tokens that break REMI's grammar count for nothing), decoding time included. The same path for both
  codecs: no grammar masks (theremin.roll.roller.Roller is midichar-only).

With ``--grid-check`` it also reports, for each REMI tokenizer, how decode(encode(piece)) differs from each val
piece on the grid (notes missing / added / clipped, tempos binned).

    .venv/bin/python scripts/bench_remi.py outputs/codec_vs_remi/multiruns/<date> --grid-check
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections import Counter
from pathlib import Path

import torch

from theremin.codec.kinds import load_configured
from theremin.model.gpt import GPT, GPTConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run directories or multirun directories")
    p.add_argument("--new-tokens", type=int, default=512)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid-check", action="store_true", help="REMI: decode(encode(piece)) vs each val piece")
    p.add_argument("--families", action="store_true",
                   help="midichar: val bits/note per instrument family (theremin.model.scoring)")
    return p.parse_args(argv)


def find_runs(paths: list[Path]) -> list[Path]:
    runs = sorted({c.parent.parent for p in paths for c in p.rglob("checkpoints/last.ckpt")})
    if not runs:
        raise SystemExit(f"no run with checkpoints/last.ckpt under {', '.join(map(str, paths))}")
    return runs


def last_val(run: Path) -> tuple[int, float]:
    """(step, val/bits_per_note) of the last validation in the run's metrics.csv files."""
    best = (-1, float("nan"))
    for f in run.rglob("metrics.csv"):
        with open(f) as fh:
            for row in csv.DictReader(fh):
                if row.get("val/bits_per_note"):
                    step = int(float(row.get("step") or -1))
                    if step >= best[0]:
                        best = (step, float(row["val/bits_per_note"]))
    return best


def load(run: Path):
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    model = GPT(GPTConfig(**hp["model"]))
    model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()
                           if k.startswith("model.")})
    tok = load_configured(hp["tokenizer"]["dir"])
    return model.eval(), tok, hp, int(ckpt.get("global_step", -1))


def val_lines(hp: dict) -> list[str]:
    corpus = Path(hp["tokenizer"]["corpus_dir"])
    return [ln for ln in (corpus / "val.txt").read_text(encoding="utf-8").split("\n") if ln]


def notes_per_second(model: GPT, tok, prompt: list[int], args: argparse.Namespace) -> tuple[float, float, float]:
    """(generated notes per second, tokens per second, notes per generated token), medians over the repeats.
    Tokens/s is the same model work for both codecs (same shape and vocab) and moves with the machine's load;
    notes per generated token does not."""
    specials = [i for i in {tok.bos_id, tok.eos_id, getattr(tok, "unk_id", None), getattr(tok, "pad_id", None)}
                if i is not None]

    def hook(_idx, logits):  # one piece, no boundaries: the same number of tokens for both codecs
        logits[:, specials] = float("-inf")
        return logits

    prompt_notes = tok.codec.count_notes(tok.decode(prompt, errors="ignore"))
    rates, token_rates, per_token = [], [], []
    for r in range(args.repeats + 1):
        gen = torch.Generator().manual_seed(args.seed + r)
        t0 = time.perf_counter()
        out = model.generate(torch.tensor([prompt]), args.new_tokens, temperature=1.0, top_p=0.95,
                             generator=gen, logits_hook=hook)
        t1 = time.perf_counter()
        notes = tok.codec.count_notes(tok.decode(out[0].tolist(), errors="ignore")) - prompt_notes
        t2 = time.perf_counter()
        if r:  # the first run warms up
            rates.append(notes / (t2 - t0))
            token_rates.append(args.new_tokens / (t1 - t0))
            per_token.append(notes / args.new_tokens)
    return statistics.median(rates), statistics.median(token_rates), statistics.median(per_token)


def grid_check(tok, lines: list[str]) -> dict:
    from theremin.codec.remi import grid_mismatches

    total = Counter()
    for t in lines:
        total.update(grid_mismatches(tok, t))
    return dict(total)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    print(f"torch threads: {torch.get_num_threads()}; {args.new_tokens} new tokens, median of {args.repeats}")
    print("| run | codec | model | params | steps | val bits/note | val notes/token | gen notes/s | gen tokens/s "
          "| gen notes/token |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    checks = {}  # REMI tokenizer dir -> grid report
    for run in find_runs(args.runs):
        model, tok, hp, step = load(run)
        lines = val_lines(hp)
        enc = tok.encode(lines[0])
        prompt = [tok.bos_id, *enc[: args.prompt_tokens]]
        vals = [tok.encode(t) for t in lines]
        npt = sum(tok.codec.count_notes(t) for t in lines) / sum(len(v) for v in vals)
        nps, tps, npt_gen = notes_per_second(model, tok, prompt, args)
        val_step, bpn = last_val(run)
        m, kind = hp["model"], getattr(tok, "kind", "midichar")
        if getattr(tok, "meta", {}).get("options", {}).get("use_programs"):
            kind += "+programs"
        if not tok.codec.instruments:
            kind += " (no instruments)"
        print(f"| {run.name} | {kind} {tok.vocab_size} | {m['n_layer']}x{m['n_embd']} | "
              f"{model.num_params() / 1e6:.2f}M | {max(step, val_step)} | {bpn:.3f} | {npt:.3f} | {nps:.0f} | "
              f"{tps:.0f} | {npt_gen:.2f} |", flush=True)
        if args.families and kind.startswith("midichar"):
            from theremin.model.scoring import score_texts

            fam = score_texts(model, tok, lines, [str(i) for i in range(len(lines))])["per_family"]
            print("    per family: " + ", ".join(f"{f} {v['bits_per_note']:.3f} ({v['notes']:,})"
                                              for f, v in sorted(fam.items(), key=lambda kv: -kv[1]["notes"])))
        if args.grid_check and kind.startswith("remi") and str(tok.dir) not in checks:
            checks[str(tok.dir)] = grid_check(tok, lines)
    for d, c in checks.items():
        print(f"grid check {d}: {c}")


if __name__ == "__main__":
    main()

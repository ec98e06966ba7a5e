"""theremin-tokenize: train (or reuse) the tokenizer of a corpus and measure it on the val split.

A thin Hydra app (conf/tokenize.yaml) over :func:`tokenize`, the plain function for code and tests. The corpus
and the tokenizer settings are theremin-train's (conf/corpus/default.yaml): the tokenizer made here is the one
training reuses.

    theremin-tokenize                                   # the Bach corpus at training's vocab (4k)
    theremin-tokenize data=folder data.input_dir=~/midi data.name=mine tokenizer=8k
    theremin-tokenize tokenizer=4k tokenizer.fallback=bytes
    theremin-tokenize -m tokenizer=1k,4k,8k,16k         # a vocab sweep (each model cached once)
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from theremin import config as resolvers  # noqa: F401  (the resolvers conf/ uses)
from theremin.apps.cli import hydra_app
from theremin.codec.kinds import get_or_train_configured
from theremin.codec.remi import grid_mismatches
from theremin.codec.tokenizer import compression
from theremin.errors import ThereminError


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln]


def tokenize(cfg: DictConfig) -> dict:
    """Get the tokenizer of ``cfg.data.corpus_dir``/train.txt, print where it is, its vocab size, notes per
    token on val.txt and whether decode(encode(piece)) == piece for every val piece; returns those numbers."""
    codec = hydra.utils.instantiate(cfg.codec)
    corpus = Path(os.path.expanduser(str(cfg.data.corpus_dir)))
    train_txt, val_txt = corpus / "train.txt", corpus / "val.txt"
    if not train_txt.is_file() or train_txt.stat().st_size == 0:
        raise ThereminError(f"{train_txt} is missing or empty: build the corpus first (theremin-prep with the same "
                            "data overrides) or point data.corpus_dir at a folder with train.txt / val.txt")
    opts = OmegaConf.to_container(cfg.tokenizer, resolve=True)
    cache = Path(os.path.expanduser(str(cfg.data.tokenizer_cache)))
    tok = get_or_train_configured(train_txt, opts, cache, codec)  # tokenizer.kind: midichar or remi
    stats = tok.meta.get("stats", {})
    how = "reused (cached)" if tok.from_cache else f"trained in {stats.get('train_seconds', '?')} s"
    print(f"tokenizer:  {tok.dir}  [{how}]")
    how = f"fallback={tok.fallback}, pitch={opts.get('pitch', 'absolute')}" if tok.kind == "midichar" else tok.kind
    print(f"vocab size: {tok.vocab_size} (unk={tok.unk_id}, bos={tok.bos_id}, eos={tok.eos_id}, {how})")
    out = {"dir": str(tok.dir), "vocab_size": tok.vocab_size, "from_cache": tok.from_cache}
    if not val_txt.is_file() or not _lines(val_txt):
        print(f"no val pieces in {val_txt}: nothing to measure")
        return out
    if tok.kind != "midichar":  # REMI bins tempos: not lossless, so check the notes on the grid instead
        return {**out, **_remi_report(tok, _lines(val_txt))}
    r = compression(tok, _lines(val_txt), check=True)
    out.update(r)
    print(f"val:        {r['pieces']} pieces, {r['notes']} notes, {r['tokens']} tokens -> "
          f"{r['notes_per_token']:.3f} notes/token ({100 * r['byte_tokens'] / max(r['tokens'], 1):.2f}% byte tokens)")
    print(f"lossless:   {'yes' if r['lossless'] else 'NO'} (decode(encode(piece)) == piece for every val piece)")
    if not r["lossless"]:
        raise RuntimeError(f"{tok.dir}: decode(encode(piece)) != piece on {val_txt}: the tokenizer is broken")
    return out


def _remi_report(tok, lines: list[str]) -> dict:


    r = compression(tok, lines)
    grid = Counter()
    for t in lines:
        grid.update(grid_mismatches(tok, t))  # (update keeps zero counts, + would drop them)
    print(f"val:        {r['pieces']} pieces, {r['notes']} notes, {r['tokens']} tokens -> "
          f"{r['notes_per_token']:.3f} notes/token")
    print(f"same notes: {grid['notes'] - grid['missing']} of {grid['notes']} on the grid after decode(encode(piece)) "
          f"({grid['added']} added, {grid['clipped']} durations clipped, {grid['tempos_changed']} tempos binned)")
    return {**r, **{f"grid_{k}": v for k, v in grid.items()}}


@hydra_app("tokenize")
def main(cfg: DictConfig) -> float | None:
    return tokenize(cfg).get("notes_per_token")  # what a sweeper optimises


if __name__ == "__main__":
    main()

"""Fine-tuning a base model on a small folder, and what small corpora need to be told.

``theremin-train experiment=finetune init_from=<base.ckpt> data=folder data.input_dir=<folder>``:

- the run keeps the base's tokenizer and codec (the tokenizer the checkpoint carries is written once into the
  corpus's tokenizer cache and used as it is: notes it never saw are spelled by its factored fallback), and
  starts from the base's weights and model shape;
- :func:`plan` picks the step count and learning rate from the corpus size (:class:`FinetuneRules`, set in
  conf/experiment/finetune.yaml); early stopping on ``val/bits_per_note`` and the best checkpoint are callbacks;
- :func:`corpus_advice` is what theremin-prep and theremin-train say about a small corpus;
- :func:`copy_warnings` is what theremin-generate says about rolls that copy the training corpus.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import open_dict
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from torchmetrics import Metric

from theremin.codec.midichar import MidiChar
from theremin.codec.tokenizer import unknown_note_share
from theremin.config import known_settings, plain
from theremin.data.corpus import load_manifest
from theremin.errors import ThereminError
from theremin.fsio import atomic_write
from theremin.model.checkpoint import open_checkpoint, tokenizer_files

log = logging.getLogger("theremin.model.finetune")

# below this many notes (before augmentation) a corpus is "small": a GPT trained on it alone learns little
SMALL_CORPUS_NOTES = 100_000
# above this share of notes unknown to the base tokenizer, fine-tuning is warned (they cost 2-3 tokens each)
UNKNOWN_NOTES_WARN = 0.5


class FinetuneError(ThereminError):
    """A fine-tuning setting or checkpoint that cannot work; the message names it and the reason."""


# ---- steps and learning rate from the corpus size ---------------------------------------------------------
@dataclass(frozen=True)
class FinetuneRules:
    """How a fine-tuning run is sized from its corpus (conf/experiment/finetune.yaml: ``finetune``)."""

    epochs: float = 20.0  # passes over the (augmented) train split, at most
    min_steps: int = 60
    max_steps: int = 600
    lr: float = 6.0e-4  # for a train split of ``ref_tokens`` tokens or more
    min_lr: float = 1.5e-4  # the smallest corpora: a gentler rate keeps more of what the base knows
    ref_tokens: int = 1_000_000
    warmup_fraction: float = 0.05
    validations: int = 12  # per run: the points early stopping and the best checkpoint choose from
    steps: int | None = None  # fixed step count (None: from the corpus size)
    fixed_lr: float | None = None  # fixed learning rate (None: from the corpus size)

    @classmethod
    def from_config(cls, cfg) -> FinetuneRules:

        return cls(**known_settings(cls, cfg, "finetune", "a fine-tuning setting", FinetuneError))


@dataclass(frozen=True)
class Plan:
    steps: int
    lr: float
    warmup_steps: int
    val_check_interval: int
    epochs: float  # passes over the train split the steps amount to


def plan(train_tokens: int, tokens_per_step: int, rules: FinetuneRules = FinetuneRules()) -> Plan:
    """Steps: ``epochs`` passes over the train split, within [min_steps, max_steps] (early stopping ends
    sooner when val bits/note stops improving). LR: ``lr`` scaled by sqrt(train_tokens / ref_tokens), never
    below ``min_lr``: a smaller corpus takes smaller steps away from the base."""
    if train_tokens <= 0 or tokens_per_step <= 0:
        raise FinetuneError(f"cannot plan fine-tuning on {train_tokens} train tokens")
    steps = rules.steps or int(min(rules.max_steps, max(rules.min_steps,
                                                        math.ceil(rules.epochs * train_tokens / tokens_per_step))))
    lr = rules.fixed_lr or max(rules.min_lr, min(rules.lr, rules.lr * math.sqrt(train_tokens / rules.ref_tokens)))
    return Plan(steps=steps, lr=float(lr), warmup_steps=max(1, round(rules.warmup_fraction * steps)),
                val_check_interval=max(1, steps // max(1, rules.validations)),
                epochs=steps * tokens_per_step / train_tokens)


# ---- init_from ------------------------------------------------------------------------------------------
def open_init(init_from: str | os.PathLike):
    """The base checkpoint, opened with every check :func:`theremin.model.checkpoint.open_checkpoint` makes (missing,
    cut off, not theremin's, tokenizer not belonging to its model); errors name ``init_from``."""

    path = Path(os.path.expanduser(str(init_from)))
    try:
        ck = open_checkpoint(path)
    except ThereminError as e:
        raise FinetuneError(f"init_from: {e}") from None
    if ck.tokenizer is None or getattr(ck.tokenizer, "kind", "midichar") != "midichar":
        raise FinetuneError(f"init_from={path}: fine-tuning needs a checkpoint with a midichar tokenizer")
    return ck


def init_of(cfg):
    """The base checkpoint of a run (``init_from``), opened; None without one. The fine-tuning recipe
    (``finetune``, experiment=finetune) requires one; ``~finetune`` drops the recipe's sizing (the same run from
    scratch, as scripts/bench_finetune.py compares)."""
    if cfg.get("finetune") is not None and not cfg.get("init_from"):
        raise FinetuneError("init_from is required by experiment=finetune: init_from=<base checkpoint>, e.g. the "
                            "best-*.ckpt of a `theremin-train experiment=base` run")
    return open_init(cfg.init_from) if cfg.get("init_from") else None


def check_codec(ck, codec_cfg: dict) -> None:
    """The run's codec settings must be the base's: the tokenizer and the weights only mean anything there."""

    mine = MidiChar(**{k: v for k, v in dict(codec_cfg).items() if k != "_target_"}).config
    base = ck.codec.config
    if mine != base:
        diff = sorted(k for k in base.keys() | mine.keys() if base.get(k) != mine.get(k))
        raise FinetuneError(f"init_from={ck.path} was trained with other codec settings than this run's (they differ "
                            f"in {', '.join(f'codec.{k}' for k in diff)}): fine-tuning keeps the base's codec, so "
                            "drop the codec overrides (or train a base with them)")


def _carried_files(ck) -> dict[str, bytes]:
    """The tokenizer files as the checkpoint carries them (bytes), or those of its folder (older checkpoints)."""


    raw = torch.load(ck.path, map_location="cpu", weights_only=True, mmap=True)
    carried = (raw.get("theremin") or {}).get("tokenizer") or {}
    if carried.get("files"):
        return dict(carried["files"])
    return tokenizer_files(ck.tokenizer)["files"]


def base_tokenizer_dir(ck, cache_root: str | os.PathLike) -> Path:
    """The base's tokenizer as a folder in ``cache_root`` (written once from the bytes the checkpoint carries;
    named by its key, so the run's checkpoints record the same tokenizer as the base's)."""

    key = ck.tokenizer_key or "base"
    out = Path(cache_root) / key
    for name, data in _carried_files(ck).items():
        target = out / name
        if target.is_file() and target.read_bytes() == data:
            continue
        if target.exists():  # the same key with other bytes: never two tokenizers under one name
            raise FinetuneError(f"init_from={ck.path}: {out} holds another tokenizer under the base's name {key}; "
                                f"remove {out} and run again")
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda tmp, d=data: tmp.write_bytes(d))
    return out


def data_kwargs(cfg, init) -> dict:
    """What the DataModule needs besides the data config: with ``init`` (the base checkpoint), its tokenizer as
    it is, after checking the run's codec is the base's."""
    if init is None:
        return {}

    if init.codec.instruments is False and "instruments" not in init.hparams["codec"] and \
            plain(cfg.codec).get("instruments", True):  # a base from before instruments: its codec, unasked
        log.info("init_from=%s predates instruments (one piano part, drums dropped): fine-tuning with "
                 "codec.instruments=false, as it was trained", init.path)
        with open_dict(cfg):
            cfg.codec.instruments = False
    check_codec(init, plain(cfg.codec))
    base_context = int(init.model_config.block_size)
    if int(cfg.data.block_size) > base_context:  # e.g. a base trained at 256 before the default became 512
        log.warning("data.block_size=%s exceeds the context of init_from=%s: fine-tuning at its %d tokens",
                    cfg.data.block_size, init.path, base_context)
        with open_dict(cfg):
            cfg.data.block_size = base_context
    cache = cfg.data.get("tokenizer_cache") or Path(str(cfg.data.corpus_dir)) / "tokenizers"
    return {"tokenizer_dir": str(base_tokenizer_dir(init, cache))}




def adapt(cfg, dm, ck) -> Plan:
    """After the fine-tune corpus is prepared: size the run from it (writes trainer.max_steps, optimizer.lr,
    lr_schedule and trainer.val_check_interval into ``cfg``) and say what to expect."""

    meta = dm.meta if hasattr(dm, "meta") else None
    train_tokens = int(meta["train"]["tokens"]) if meta else len(dm.train_tokens)
    rules = FinetuneRules.from_config(cfg.get("finetune"))
    p = plan(train_tokens, int(cfg.data.batch_size) * int(cfg.data.block_size), rules)
    with open_dict(cfg):
        cfg.trainer.max_steps = p.steps
        cfg.trainer.val_check_interval = p.val_check_interval
        cfg.optimizer.lr = p.lr
        cfg.lr_schedule.warmup_steps = p.warmup_steps
        cfg.lr_schedule.max_steps = p.steps
    log.info("fine-tuning from %s: %d steps (%.1f passes over %s train tokens), lr %.2e, validation every %d "
             "steps; early stopping keeps the best checkpoint", ck.path, p.steps, p.epochs, f"{train_tokens:,}",
             p.lr, p.val_check_interval)
    lines = [ln for ln in (Path(dm.corpus_dir) / "val.txt").read_text(encoding="utf-8").split("\n") if ln]
    lines += [ln for ln in (Path(dm.corpus_dir) / "train.txt").read_text(encoding="utf-8").split("\n")[:200] if ln]
    msg = unknown_notes_message(dm.tokenizer, lines, dm.input_dir or dm.corpus_dir)
    if msg:
        log.warning("%s", msg)
    return p


def unknown_notes_message(tok, lines: list[str], where) -> str | None:
    """A warning when most notes of ``lines`` are unknown to the (base) tokenizer, else None."""
    share = unknown_note_share(tok, lines)
    if share <= UNKNOWN_NOTES_WARN:
        return None
    return (f"{where}: {100 * share:.0f}% of its notes are unknown to the base tokenizer (no piece of its vocabulary; "
            "spelled by the factored fallback, 2-3 tokens each): fine-tuning still works, but the base knows little "
            "of this music; a base trained with this kind of music too (data.extra_dirs of experiment=base) fits it "
            "better")


def validate_base(trainer, lit, dm) -> float | None:
    """Validate the base's weights on the run's val split before the first step, and keep them as the run's first
    best checkpoint (``best-step0000000-...``): the figure fine-tuning has to beat, and what the run hands back
    when every step only makes it worse (a folder in a style the base already knows, at too high a rate).
    Early stopping counts from it. Returns the base's val/bits_per_note (None without validation)."""
    if not trainer.limit_val_batches:
        return None
    trainer.validate(lit, datamodule=dm, verbose=False)
    for m in lit.modules():  # their states were made under inference mode; fit's validation updates them in place
        if isinstance(m, Metric):
            m.reset()
    value = trainer.callback_metrics.get("val/bits_per_note")
    if value is None:
        return None
    value = value.detach().cpu()
    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.monitor == "val/bits_per_note" and cb.save_top_k:
            # ModelCheckpoint saves only while fitting: the step-0 checkpoint is written here and registered as
            # its best, so a better validation later replaces it (save_top_k) and a worse one never does
            path = cb.format_checkpoint_name({"step": torch.tensor(0), "val/bits_per_note": value})
            trainer.save_checkpoint(path, cb.save_weights_only)
            cb.best_k_models = {path: value}
            cb.kth_best_model_path = cb.best_model_path = path
            cb.kth_value = cb.best_model_score = value
        elif isinstance(cb, EarlyStopping) and cb.monitor == "val/bits_per_note":
            cb.best_score = value.to(cb.best_score.device)
    if trainer.is_global_zero:
        log.info("the base on this corpus's val split (step 0): val/bits_per_note = %.4f; kept as the best "
                 "checkpoint until a fine-tuning step beats it", float(value))
    return float(value)


def init_weights(lit, ck) -> None:
    """Start the run from the base's weights (its model shape was taken from the checkpoint)."""
    lit.model.load_state_dict(ck.state_dict)


def model_config(ck, block_size: int) -> dict:
    """The base's model settings (shape and context); the data's block size must fit its context."""

    cfg = dataclasses.asdict(ck.model_config)
    if block_size > cfg["block_size"]:
        raise FinetuneError(f"data.block_size={block_size} exceeds the context of init_from={ck.path} "
                            f"({cfg['block_size']} tokens): set data.block_size={cfg['block_size']} or less")
    return cfg


# ---- what small corpora need to be told -----------------------------------------------------------------
def corpus_advice(notes: int, *, fine_tuning: bool = False, input_dir: str | None = None) -> str | None:
    """A message for a corpus of ``notes`` notes (before augmentation) when it is small, else None."""
    if notes >= SMALL_CORPUS_NOTES:
        return None
    where = f" ({input_dir})" if input_dir else ""
    if fine_tuning:
        return (f"small corpus{where}: {notes:,} notes. Fine-tuning adapts the base within a few passes and then "
                "over-fits (val bits/note rises again): early stopping keeps the best checkpoint; expect rolls to "
                "quote the folder (theremin-generate reports the longest copied run)")
    return (f"small corpus{where}: {notes:,} notes (under {SMALL_CORPUS_NOTES:,}). A model trained on it from "
            "scratch learns little (val bits/note stays near that of an untrained model) and memorises what it "
            "does learn. Fine-tune a base model instead: `theremin-train experiment=base` once, then "
            "`theremin-train experiment=finetune init_from=<base checkpoint> data=folder data.input_dir=<folder>`")


def advise(cfg, dm) -> None:
    """Log :func:`corpus_advice` for a run's corpus (from its manifest)."""

    m = load_manifest(dm.corpus_dir)
    if not m:
        return
    msg = corpus_advice(int(m["totals"]["notes"]), fine_tuning=bool(cfg.get("init_from")), input_dir=dm.input_dir)
    if msg:
        log.warning("%s", msg)







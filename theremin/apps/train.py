"""theremin-train: a thin Hydra entrypoint over :func:`train`, which returns the metrics (sweepers read one).

    theremin-train                                   # defaults: conf/train.yaml
    theremin-train model=mini tokenizer=8k trainer.max_steps=3000
    theremin-train -m model=nano,micro tokenizer=1k,4k
    theremin-train -m hparams_search=optuna
    theremin-train trainer=ddp_sim                   # DDP on 2 CPU processes

A run lives in one directory, named after its command line's overrides: the same command finds it again and
resumes from its ``checkpoints/last.ckpt``. One process at a time may use it (a lock); the figure a run prints
and returns is the validation of its final weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import math
import os
import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor

from theremin.apps.cli import hydra_app
from theremin.config import plain
from theremin.errors import ThereminError
from theremin.model import finetune
from theremin.model.callbacks import StepProgressBar
from theremin.model.checkpoint import (
    AtomicCheckpointIO,
    Checkpoint,
    open_checkpoint,
    remove_stale_temps,
    tokenizer_files,
)

log = logging.getLogger("theremin.apps.train")

LOCK_FILE = ".lock"


class TrainConfigError(ThereminError):
    """A setting that cannot train; the message names the setting to change."""


# ---- the run directory ----------------------------------------------------------------------------------------
def _launching_process() -> bool:
    """True in the process that owns the run: not a DDP child started by Lightning (LOCAL_RANK > 0), nor a
    torchrun / Kubeflow rank other than 0 (RANK, NODE_RANK, GROUP_RANK > 0)."""
    return all(int(os.environ.get(v) or 0) == 0 for v in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


# Lock files this process holds. A forked child (corpus or DataLoader workers) would share the lock and keep it
# after a killed parent; each child closes its copy, so only the launching process ever holds a run's lock.
_held_locks: list = []


def _drop_locks_in_child() -> None:
    for f in _held_locks:
        f.close()  # the child's copy of the descriptor only: the parent keeps its lock
    _held_locks.clear()


os.register_at_fork(after_in_child=_drop_locks_in_child)


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold an exclusive lock on ``run_dir`` while the run uses it; a second process gets a TrainConfigError
    naming the directory and the PID holding it. flock: the kernel releases it when the holder dies, however it
    dies, so a killed run never leaves a stale lock. Only the launching process locks (its DDP ranks share it)."""
    if not _launching_process():
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    f = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held open for the whole run)
    _held_locks.append(f)
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "unknown"
            raise TrainConfigError(
                f"run directory {run_dir} is in use by another process (PID {pid}): wait for it to finish or stop "
                "it; to train a second run beside it, change a setting or set hydra.run.dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        _held_locks.remove(f)
        f.close()  # releases the lock


# ---- building ---------------------------------------------------------------------------------------------
def _instantiate_dict(group: DictConfig | None) -> list:
    """Callbacks / loggers: a dict of named configs, each with a _target_."""
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def _callbacks(cfg: DictConfig, has_logger: bool) -> list:


    callbacks = _instantiate_dict(cfg.get("callbacks"))
    if not has_logger:  # LearningRateMonitor refuses to run without a logger (train/lr is logged anyway)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if cfg.trainer.get("enable_progress_bar", True) and not any(isinstance(c, pl.callbacks.ProgressBar)
                                                                for c in callbacks):
        callbacks.append(StepProgressBar())
    return callbacks


def build(cfg: DictConfig):
    """DataModule (prepared), LitGPT and Trainer from the config, after checking what would fail later."""
    pl.seed_everything(cfg.seed, workers=True)
    # init_from: start from a base checkpoint, with its tokenizer, codec and model shape (theremin/model/finetune.py)
    init = finetune.init_of(cfg)
    extra = finetune.data_kwargs(cfg, init)  # first: a base from before instruments sets the run's codec
    dm = hydra.utils.instantiate(cfg.data, tokenizer=plain(cfg.tokenizer), codec=plain(cfg.codec),
                                 _recursive_=False, **extra)
    dm.prepare()
    dm.setup("fit")
    finetune.advise(cfg, dm)
    if init is not None and cfg.get("finetune"):
        finetune.adapt(cfg, dm, init)  # steps, lr and validations from the corpus size, written into cfg
    model_cfg = finetune.model_config(init, cfg.data.block_size) if init else plain(cfg.model.model)
    if cfg.data.block_size > model_cfg["block_size"]:
        raise TrainConfigError(f"data.block_size={cfg.data.block_size} exceeds the model's block size "
                               f"{model_cfg['block_size']}: lower data.block_size or raise model.model.block_size")
    model_cfg["vocab_size"] = dm.vocab_size
    tok = dm.tokenizer
    lit = hydra.utils.instantiate(
        cfg.model,
        model=model_cfg,
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        lr_schedule=plain(cfg.lr_schedule),
        weight_decay=cfg.weight_decay,
        compile=cfg.compile,
        tokenizer={"dir": str(tok.dir.resolve()), "vocab_size": tok.vocab_size, "key": tok.dir.name,
                   "corpus_dir": str(dm.corpus_dir.resolve())},
        codec=dict(tok.codec.config),
        carry=tokenizer_files(tok),
        _recursive_=False,
    )
    if init is not None:  # a resumed run then loads its own checkpoint over these
        finetune.init_weights(lit, init)
    loggers = _instantiate_dict(cfg.get("logger"))
    plugins = [hydra.utils.instantiate(p) for p in cfg.trainer.get("plugins") or []] + [AtomicCheckpointIO()]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=_callbacks(cfg, bool(loggers)), logger=loggers or False,
                                      plugins=plugins)
    return dm, lit, trainer


# ---- resuming ---------------------------------------------------------------------------------------------
def resume_path(cfg: DictConfig) -> Path | None:
    """ckpt_path if given; else the run's own last.ckpt when it exists (the same command resumes)."""
    if cfg.get("ckpt_path"):
        return Path(str(cfg.ckpt_path))
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    return last if last.exists() and not cfg.trainer.get("fast_dev_run") else None


def open_resume(path: Path, cfg: DictConfig) -> Checkpoint:
    """The checkpoint to resume from, opened and checked before any data is prepared."""
    try:
        return open_checkpoint(path, with_tokenizer=False)
    except ThereminError as e:
        if cfg.get("ckpt_path"):
            raise TrainConfigError(f"ckpt_path: {e}") from None
        raise


def check_resume(ck: Checkpoint, dm, lit) -> None:
    """A checkpoint of another tokenizer or model shape cannot resume this run: say so before training."""
    if ck.tokenizer_key is not None and ck.tokenizer_key != dm.tokenizer.dir.name:
        raise TrainConfigError(f"checkpoint {ck.path} was trained with tokenizer {ck.tokenizer_key}, this run uses "
                               f"{dm.tokenizer.dir.name}: pick the same tokenizer/vocab size or start afresh")
    if dataclasses.replace(ck.model_config, dropout=lit.model.config.dropout) != lit.model.config:
        raise TrainConfigError(f"checkpoint {ck.path} holds a model of shape {ck.model_config}, this run builds "
                               f"{lit.model.config}: use the same model settings or start afresh")


# ---- training ---------------------------------------------------------------------------------------------
def final_metrics(trainer: pl.Trainer, lit, dm) -> dict[str, float]:
    """Training metrics of the last logged step and the validation of the final weights (validated again here
    only when the run ended without it, e.g. a checkpoint written by an older theremin)."""
    if trainer.fast_dev_run or not trainer.limit_val_batches:  # no final figure to speak of: what was logged
        return {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if not k.startswith("val/")}
    if not lit.last_val or lit.last_val["step"] != trainer.global_step:
        trainer.validate(lit, datamodule=dm, verbose=False)
    final = lit.last_val if lit.last_val and lit.last_val["step"] == trainer.global_step else {}
    return {**metrics, **final.get("metrics", {})}


@contextlib.contextmanager
def wandb_run_closed():
    """Finish the wandb run the block started (failed if it raised): the jobs of a multirun share a process, and
    Lightning's WandbLogger would otherwise hand the next job this run, with its group, tags and history."""
    failed = True
    try:
        yield
        failed = False
    finally:
        wandb = sys.modules.get("wandb")  # never imported: no run to finish
        if wandb is not None and wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train (or resume) one run; returns the final metrics as floats."""
    run_dir = Path(cfg.paths.output_dir)
    with run_lock(run_dir):
        ckpt_path = resume_path(cfg)
        ck = open_resume(ckpt_path, cfg) if ckpt_path else None
        dm, lit, trainer = build(cfg)
        if ck is not None:
            check_resume(ck, dm, lit)
            log.info("resuming from %s (step %d)", ck.path, ck.global_step)
        if _launching_process():
            remove_stale_temps(run_dir / "checkpoints")  # writes killed midway; the lock says none is running
        for lg in trainer.loggers:
            if hasattr(lg, "resume_at"):
                lg.resume_at(ck.global_step if ck else None)
        n_params = lit.model.num_params()
        log.info("model %.2fM parameters, vocab %d, %d val notes", n_params / 1e6, dm.vocab_size,
                 dm.val_note_count)
        with wandb_run_closed():
            for lg in trainer.loggers:
                lg.log_hyperparams({"n_params": n_params, "config": plain(cfg)})
            if ck is None and cfg.get("init_from") and cfg.get("finetune") is not None:
                finetune.validate_base(trainer, lit, dm)
            trainer.fit(lit, datamodule=dm, ckpt_path=str(ck.path) if ck else None)
            metrics = final_metrics(trainer, lit, dm)
    if trainer.is_global_zero:
        log.info("run directory: %s", run_dir)
        if "val/bits_per_note" in metrics:
            log.info("final weights (step %d): val/bits_per_note = %.4f", trainer.global_step,
                     metrics["val/bits_per_note"])
    return metrics


@hydra_app("train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    value = metrics.get(cfg.get("optimized_metric") or "", math.nan)
    return None if math.isnan(value) else value


if __name__ == "__main__":
    main()

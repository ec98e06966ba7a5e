"""theremin-train: a thin Hydra entrypoint over :func:`train`, which returns the metrics (sweepers read one).

    theremin-train                                   # defaults: conf/train.yaml
    theremin-train model=mini tokenizer=8k trainer.max_steps=3000
    theremin-train -m model=nano,micro tokenizer=1k,4k
    theremin-train -m hparams_search=optuna
    theremin-train trainer=ddp_sim                   # DDP on 2 CPU processes
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from theremin import resolvers  # noqa: F401  (registers ${run_name:} and ${wandb_mode:})
from theremin.cli import ThereminError
from theremin.paths import conf_dir
from theremin.resolvers import plain

log = logging.getLogger("theremin.train")


class TrainConfigError(ThereminError):
    """A setting that cannot train; the message names the setting to change."""


def _instantiate_dict(group: DictConfig | None) -> list:
    """Callbacks / loggers: a dict of named configs, each with a _target_."""
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def resume_path(cfg: DictConfig) -> str | None:
    """ckpt_path if given; else the run's own last.ckpt when it exists (the same command resumes)."""
    if cfg.get("ckpt_path"):
        if not Path(cfg.ckpt_path).exists():
            raise TrainConfigError(f"ckpt_path={cfg.ckpt_path} does not exist")
        return str(cfg.ckpt_path)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    return str(last) if last.exists() and not cfg.trainer.get("fast_dev_run") else None


def build(cfg: DictConfig):
    """DataModule (prepared), LitGPT and Trainer from the config, after checking what would fail later."""
    pl.seed_everything(cfg.seed, workers=True)
    dm = hydra.utils.instantiate(cfg.data, tokenizer=plain(cfg.tokenizer), codec=plain(cfg.codec),
                                 _recursive_=False)
    dm.prepare()
    dm.setup("fit")
    model_cfg = plain(cfg.model.model)
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
        val_notes=dm.val_note_count,
        _recursive_=False,
    )
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    loggers = _instantiate_dict(cfg.get("logger"))
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return dm, lit, trainer


def check_checkpoint(ckpt: str, dm) -> None:
    """A checkpoint from another tokenizer cannot resume: say so before training starts."""
    import torch

    hp = torch.load(ckpt, map_location="cpu", weights_only=True).get("hyper_parameters", {})
    key = (hp.get("tokenizer") or {}).get("key")
    if key is not None and key != dm.tokenizer.dir.name:
        raise TrainConfigError(f"ckpt_path={ckpt} was trained with tokenizer {key}, this run uses "
                               f"{dm.tokenizer.dir.name}: pick the same tokenizer/vocab size or start afresh")


def train(cfg: DictConfig) -> dict[str, float]:
    """Train (or resume) one run; returns the final metrics as floats."""
    dm, lit, trainer = build(cfg)
    ckpt = resume_path(cfg)
    if ckpt:
        check_checkpoint(ckpt, dm)
        log.info("resuming from %s", ckpt)
    n_params = lit.model.num_params()
    log.info("model %.2fM parameters, vocab %d, %d val notes", n_params / 1e6, dm.vocab_size, dm.val_note_count)
    for lg in trainer.loggers:
        lg.log_hyperparams({"n_params": n_params, "config": plain(cfg)})
    trainer.fit(lit, datamodule=dm, ckpt_path=ckpt)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if "val/bits_per_note" not in metrics and not cfg.trainer.get("fast_dev_run"):
        metrics.update({k: float(v) for k, v in trainer.validate(lit, datamodule=dm, verbose=False)[0].items()})
    if trainer.is_global_zero:
        log.info("run directory: %s", cfg.paths.output_dir)
        if "val/bits_per_note" in metrics:
            log.info("val/bits_per_note = %.4f", metrics["val/bits_per_note"])
    return metrics


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    value = metrics.get(cfg.get("optimized_metric") or "", math.nan)
    return None if math.isnan(value) else value


if __name__ == "__main__":
    main()

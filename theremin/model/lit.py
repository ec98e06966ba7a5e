"""LightningModule around the GPT: optimisation, LR schedule, and the metrics that compare runs.

``val/bits_per_note`` (total validation NLL in bits over the notes it covers) is the one figure comparable
across vocab sizes and codecs; ``val/loss`` is nats per token. The model config, tokenizer identity and codec
config sit in plain-typed hyperparameters, so a checkpoint loads with ``torch.load(weights_only=True)``; the
tokenizer's files and the last validation travel in ``checkpoint["theremin"]`` (see theremin.model.checkpoint).

A run always ends with a validation of its final weights (``trainer.should_stop`` at ``max_steps`` makes the
fit loop validate once more when the last scheduled validation was earlier): the figure a run reports is that
of the weights it saves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torchmetrics import SumMetric

from theremin.config import plain
from theremin.model.checkpoint import FORMAT
from theremin.model.gpt import GPT, GPTConfig


def warmup_cosine(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warmup from 0, then cosine down to ``min_lr_ratio`` at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if step >= max_steps:
        return min_lr_ratio
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr_ratio + 0.5 * (1 - min_lr_ratio) * (1 + math.cos(math.pi * progress))


class LitGPT(pl.LightningModule):
    def __init__(
        self,
        model: dict,
        optimizer: Callable | None = None,
        lr_schedule: dict | None = None,
        weight_decay: float = 0.1,
        compile: bool = False,
        tokenizer: dict | None = None,
        codec: dict | None = None,
        carry: dict | None = None,
    ):
        """``carry``: what checkpoints carry besides the weights (``theremin.model.checkpoint.tokenizer_files``);
        not a hyperparameter (bytes stay out of the loggers)."""
        super().__init__()

        # plain types only: hyperparameters must load with torch.load(weights_only=True)
        model, tokenizer, codec, lr_schedule, carry = (plain(x) for x in (model, tokenizer, codec, lr_schedule, carry))
        # optimizer is a partial (not a plain type): rebuilt from config on resume, never pickled
        self.save_hyperparameters(ignore=["optimizer", "carry"])
        self.optimizer_factory = optimizer
        self.lr_schedule = dict(lr_schedule or {"warmup_steps": 100, "max_steps": 10_000, "min_lr_ratio": 0.1})
        self.model = GPT(GPTConfig(**model))
        if compile:
            self.model.compile()  # in place: state_dict keys stay those of the plain model
        self.val_nll = SumMetric()
        self.val_tokens = SumMetric()
        self.val_note_sum = SumMetric()
        self._t0: float | None = None
        self._tokens = 0
        self.carry = carry
        self.last_val: dict | None = None  # {"step", "metrics"} of the latest validation (kept in checkpoints)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)[0]

    def training_step(self, batch, batch_idx):
        x, y = batch
        _, loss = self.model(x, y)
        self.log("train/loss", loss, on_step=True, prog_bar=True)
        self._tokens += x.numel() * self.trainer.world_size
        # tokens/s and lr only on the steps that reach the logger: logging a Python float makes a device tensor,
        # which on a GPU would stall the queue every step
        if (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0:
            now = time.perf_counter()
            if self._t0 is not None:
                self.log("train/tokens_per_sec", self._tokens / max(now - self._t0, 1e-9), on_step=True,
                         rank_zero_only=True)
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True)
            self._t0, self._tokens = now, 0
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # at max_steps, stop through should_stop: Lightning then validates after this step even when it is no
        # scheduled validation step, so the final weights are the ones measured
        if 0 < self.trainer.max_steps <= self.global_step:
            self.trainer.should_stop = True

    def on_train_batch_start(self, batch, batch_idx):
        if self._t0 is None:
            self._t0, self._tokens = time.perf_counter(), 0

    def on_validation_start(self):
        self._t0 = None  # tokens/s measures training steps only

    def validation_step(self, batch, batch_idx):
        x, y, notes = batch
        _, nll = self.model(x, y, reduction="sum")
        self.val_nll.update(nll.detach().double())
        self.val_tokens.update((y >= 0).sum().double())
        self.val_note_sum.update(notes.sum().double())

    def on_validation_epoch_end(self):
        nll, tokens, notes = self.val_nll.compute(), self.val_tokens.compute(), self.val_note_sum.compute()
        figures = {"val/loss": nll / tokens.clamp(min=1), "val/bits_per_note": nll / math.log(2) / notes.clamp(min=1),
                   "val/notes_per_token": notes / tokens.clamp(min=1)}
        for name, value in figures.items():
            # the sums are already global (SumMetric syncs); sync_dist only averages identical values
            self.log(name, value.float(), prog_bar=name == "val/bits_per_note", sync_dist=True)
        for m in (self.val_nll, self.val_tokens, self.val_note_sum):
            m.reset()
        if not self.trainer.sanity_checking:
            # the figures as logged (float32), so the number a run prints is the one in its metrics
            metrics = {k: float(v.float()) for k, v in figures.items()}
            self.last_val = {"step": int(self.global_step), "metrics": metrics}

    def on_save_checkpoint(self, checkpoint: dict) -> None:

        checkpoint["theremin"] = {"format": FORMAT, "tokenizer": self.carry, "last_val": self.last_val}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        extra = checkpoint.get("theremin") or {}
        self.last_val = extra.get("last_val")
        self.carry = self.carry or extra.get("tokenizer")

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("LitGPT needs an optimizer partial (conf/train.yaml: optimizer)")
        opt = self.optimizer_factory(self.model.param_groups(self.hparams.weight_decay))
        s = self.lr_schedule
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, s["warmup_steps"], s["max_steps"], s["min_lr_ratio"])
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

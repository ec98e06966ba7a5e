"""Training callbacks: listen to (and look at) what the model plays as it learns; honest progress; the last
checkpoint of a run holds its final weights."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger("theremin.apps.train")


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every N steps (where the same command resumes), and once more after the run's final
    validation: a finished run's last checkpoint holds its final weights together with their figures, so running
    the finished command again reports the same number without training or validating anything.

    A killed run resumes exactly: at a step whose validation is about to run, last.ckpt is written after that
    validation, not before it (Lightning never runs again the validation of a checkpoint's own step, so a kill
    during it lost its figures); and the loggers are flushed first, so every row up to a checkpoint's step is on
    disk when the checkpoint is."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._after_validation = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args, **kwargs) -> None:
        if _validates_after_this_batch(trainer):
            self._after_validation = True
            return
        if not self._should_skip_saving_checkpoint(trainer) and self._every_n_train_steps >= 1 \
                and trainer.global_step % self._every_n_train_steps == 0:
            _flush(trainer)
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        deferred, self._after_validation = self._after_validation, False
        final = 0 < trainer.max_steps <= trainer.global_step
        if ((deferred or final) and self.save_last and trainer.state.fn == TrainerFn.FITTING
                and not trainer.sanity_checking and not trainer.fast_dev_run):
            _flush(trainer)
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def _validates_after_this_batch(trainer: pl.Trainer) -> bool:
    """Whether Lightning runs a validation right after the batch that just ended (its own test; False where a
    Lightning release lacks it: then last.ckpt is written at the batch end as before)."""
    loop = trainer.fit_loop
    try:
        return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))
    except (AttributeError, TypeError):
        return False


def _flush(trainer: pl.Trainer) -> None:
    for logger in trainer.loggers:
        logger.save()


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class StepProgressBar(TQDMProgressBar):
    """The training bar counts optimizer steps towards ``max_steps`` (with tqdm's rate and ETA), starting where a
    resumed run starts; Lightning's own bar counts batches of an endless epoch ("Epoch 0/-2")."""

    def on_train_start(self, trainer: pl.Trainer, *_) -> None:
        super().on_train_start(trainer)
        self._start(trainer)  # a run resumed mid-epoch gets no on_train_epoch_start

    def on_train_epoch_start(self, trainer: pl.Trainer, *_) -> None:
        self._start(trainer)

    @property
    def train_description(self) -> str:
        return "step"

    def _start(self, trainer: pl.Trainer) -> None:
        bar, step = self.train_progress_bar, trainer.global_step
        bar.total = max(trainer.max_steps, step) if trainer.max_steps > 0 else None
        bar.initial = bar.n = bar.last_print_n = step  # the ETA comes from this session's steps only
        bar.start_t = bar.last_print_t = time.time()
        bar.refresh()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_) -> None:
        bar, step = self.train_progress_bar, trainer.global_step
        if bar is not None and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


class ProgressLog(pl.Callback):
    """A log line every ``every_n_steps`` optimizer steps (step / max_steps, loss, time so far, time left) and
    one per validation: progress that reads well in a log file or a terminal that is not redrawn (the demo)."""

    def __init__(self, every_n_steps: int = 50):
        self.every_n_steps = max(1, int(every_n_steps))
        self._t0, self._s0 = 0.0, 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0, self._s0 = time.monotonic(), trainer.global_step

    @rank_zero_only
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_) -> None:
        step, total = trainer.global_step, trainer.max_steps
        if step % self.every_n_steps and step != total:
            return
        elapsed = time.monotonic() - self._t0
        done = step - self._s0
        left = f", about {_duration((total - step) * elapsed / done)} left" if total > 0 and done else ""
        loss = trainer.callback_metrics.get("train/loss")
        of = f"/{total}" if total > 0 else ""
        loss_text = f"  loss {float(loss):.3f}" if loss is not None else ""
        log.info("step %d%s%s  (%s%s)", step, of, loss_text, _duration(elapsed), left)

    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bpn = trainer.callback_metrics.get("val/bits_per_note")
        if not trainer.sanity_checking and bpn is not None:
            log.info("step %d  validation: %.3f bits/note", trainer.global_step, float(bpn))

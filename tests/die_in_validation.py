"""A Lightning callback that kills its process at the start of the validation of one step, as a SIGKILL would
(tests/test_train.py runs `theremin-train` with it on PYTHONPATH)."""

import os

import pytorch_lightning as pl


class DieInValidation(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == self.step and not trainer.sanity_checking:
            os._exit(9)  # no cleanup, no flush: what a kill leaves

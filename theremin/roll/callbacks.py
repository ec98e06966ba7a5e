"""SampleMidi: at each validation, roll a continuation of a val piece and log it (MIDI, WAV, piano roll, figures)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from theremin.metrics.copies import CopyIndex
from theremin.metrics.notes import load_corpus
from theremin.metrics.style import evaluate
from theremin.music.midi import write_midi
from theremin.music.render import RenderError, piano_roll_png, render_wav
from theremin.roll.roller import Roller, SamplingSettings

log = logging.getLogger("theremin.apps.train")


class SampleMidi(pl.Callback):
    """At each validation, continue a fixed val prompt and save MIDI + piano roll PNG into the run directory.

    Rank zero only; works without any logger. The sample's style and memorisation figures against the
    training corpus (theremin.metrics.style) go to every logger as ``samples/style/...`` and ``samples/memo/...``.
    With a WandbLogger the sample is also rendered to WAV (next to the MIDI) and logged as ``samples/audio``, the
    PNG as ``samples/piano_roll``, and a row per validation goes to the table ``samples/table`` (step, audio,
    piano roll, notes, figures). Without FluidSynth or a soundfont the audio is left out, with one warning.
    """

    def __init__(self, out_dir: str, prompt_tokens: int = 64, new_notes: int = 48, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = 0.95, seed: int = 0,
                 audio_sample_rate: int = 22050):
        self.out_dir = Path(out_dir)
        self.prompt_tokens, self.new_notes = prompt_tokens, new_notes
        self.temperature, self.top_k, self.top_p, self.seed = temperature, top_k, top_p, seed
        self.audio_sample_rate = audio_sample_rate
        self._roller = None  # keeps its constraint masks between validations
        self._corpus: list[str] | None = None
        self._index = None
        self._audio = True  # False once rendering failed: a missing library or soundfont does not come back
        self._table = None  # wandb Table of the samples so far (incremental: each log adds the new rows)
        self._figures: list[str] = []

    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or getattr(trainer, "fast_dev_run", False):
            return
        dm = trainer.datamodule
        if getattr(dm.tokenizer, "kind", "midichar") != "midichar":  # Roller and its grammar masks are midichar's
            if not getattr(self, "_skipped", False):
                log.warning("sample_midi: no samples with a %s tokenizer (rolling needs midichar)", dm.tokenizer.kind)
                self._skipped = True
            return

        codec = dm.tokenizer.codec
        if self._roller is None or self._roller.model is not pl_module.model:
            self._roller = Roller(pl_module.model, dm.tokenizer, codec)
        # the prompt's tokens may end inside a note spelled over several tokens: keep its complete part
        prompt_text = codec.repair(dm.tokenizer.decode(dm.val_prompt(self.prompt_tokens), errors="ignore"))
        settings = SamplingSettings(n=1, length=self.new_notes, seed=self.seed, temperature=self.temperature,
                                    top_k=self.top_k, top_p=self.top_p)
        v = self._roller.roll(codec.decode(prompt_text), settings).variations[0]
        stem = self.out_dir / f"step{trainer.global_step:07d}"
        write_midi(v.piece, stem.with_suffix(".mid"),
                   meta={"checkpoint_step": str(trainer.global_step), "seed": str(self.seed)})
        png = piano_roll_png(v.piece, stem.with_suffix(".png"), prompt_end_tick=v.prompt_end_tick,
                             title=f"step {trainer.global_step}")
        metrics = self._evaluate(dm, v.text, codec.count_notes(v.text) - v.generated_notes)
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                self._log_wandb(logger, trainer.global_step, v, png, metrics)
            else:
                logger.log_metrics(metrics, step=trainer.global_step)

    def _log_wandb(self, logger, step: int, v, png: Path, metrics: dict[str, float]) -> None:
        """The figures, audio, piano roll and the samples table in one wandb history row."""
        import wandb

        wav = self._render(v.piece, png.with_suffix(".wav"))
        if self._table is None:
            figures = sorted(metrics)
            # INCREMENTAL: each log sends only the rows added since the last one (an IMMUTABLE table would be
            # logged whole again each validation, copying every earlier WAV once more); the UI shows them all
            self._table = wandb.Table(columns=["step", "audio", "piano_roll", "notes",
                                               *(k.removeprefix("samples/") for k in figures)],
                                      log_mode="INCREMENTAL")
            self._figures = figures  # the columns stay those of the first row
        caption = f"step {step}"
        self._table.add_data(step, wandb.Audio(str(wav), caption=caption) if wav else None,
                             wandb.Image(str(png), caption=caption), v.generated_notes,
                             *(float(metrics[k]) if k in metrics else None for k in self._figures))
        row = {**metrics, "samples/piano_roll": wandb.Image(str(png), caption=caption), "samples/table": self._table}
        if wav:
            row["samples/audio"] = wandb.Audio(str(wav), caption=caption)
        logger.log_metrics(row, step=step)

    def _render(self, piece, wav: Path) -> Path | None:
        """The sample as WAV; None (after one warning) where FluidSynth or its soundfont is missing."""

        if not self._audio:
            return None
        try:
            return render_wav(piece, wav, sample_rate=self.audio_sample_rate)
        except RenderError as e:
            log.warning("sample_midi: no audio in wandb (%s); the piano roll and figures are logged", e)
            self._audio = False
            return None

    def _evaluate(self, dm, text: str, prompt_notes: int) -> dict[str, float]:
        """Style and memorisation of the sample against the training corpus (theremin.metrics.style)."""

        if self._corpus is None:  # built once per run: the corpus does not change while training
            self._corpus = load_corpus(dm.corpus_dir)
            self._index = CopyIndex(self._corpus, dm.tokenizer.codec, any_key=True)
        out = evaluate([text], self._corpus, dm.tokenizer.codec, prompt_notes=[prompt_notes], index=self._index)
        return {f"samples/{k}": v for k, v in out.items() if k.startswith(("style/", "memo/"))}

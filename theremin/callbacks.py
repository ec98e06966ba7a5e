"""Training callbacks: listen to (and look at) what the model plays as it learns."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger("theremin.train")


class SampleMidi(pl.Callback):
    """At each validation, continue a fixed val prompt and save MIDI + piano roll PNG into the run directory.

    Rank zero only; works without any logger. The sample's style and memorisation figures against the
    training corpus (theremin.evaluate) go to every logger as ``samples/style/...`` and ``samples/memo/...``;
    with a WandbLogger the PNG is logged as an image too.
    """

    def __init__(self, out_dir: str, prompt_tokens: int = 64, new_notes: int = 48, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = 0.95, seed: int = 0):
        self.out_dir = Path(out_dir)
        self.prompt_tokens, self.new_notes = prompt_tokens, new_notes
        self.temperature, self.top_k, self.top_p, self.seed = temperature, top_k, top_p, seed
        self._roller = None  # keeps its constraint masks between validations
        self._corpus: list[str] | None = None
        self._index = None

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
        from theremin.midi import write_midi
        from theremin.render import piano_roll_png
        from theremin.sample import Roller, SamplingSettings

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
            logger.log_metrics(metrics, step=trainer.global_step)
            if type(logger).__name__ == "WandbLogger":
                logger.log_image(key="samples/piano_roll", images=[str(png)], step=trainer.global_step)

    def _evaluate(self, dm, text: str, prompt_notes: int) -> dict[str, float]:
        """Style and memorisation of the sample against the training corpus (theremin.evaluate)."""
        from theremin.evaluate import CopyIndex, evaluate, load_corpus

        if self._corpus is None:  # built once per run: the corpus does not change while training
            self._corpus = load_corpus(dm.corpus_dir)
            self._index = CopyIndex(self._corpus, dm.tokenizer.codec, any_key=True)
        out = evaluate([text], self._corpus, dm.tokenizer.codec, prompt_notes=[prompt_notes], index=self._index)
        return {f"samples/{k}": v for k, v in out.items() if k.startswith(("style/", "memo/"))}

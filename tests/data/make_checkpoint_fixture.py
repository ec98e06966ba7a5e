"""Writes checkpoint-0.1-ce441f1.ckpt: run with theremin at commit ce441f1 (the flat modules, before the
sub-packages) on the path, e.g. ``git worktree add /tmp/old ce441f1 && PYTHONPATH=/tmp/old python
tests/data/make_checkpoint_fixture.py /tmp/fixture``; the checkpoint is <out>/run/checkpoints/last.ckpt.
A tiny model of our own (1 layer x 16, vocab 660, 4 steps) on 12 of music21's Bach chorales."""

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from theremin.demo_data import build_demo_midi
from theremin.paths import conf_dir
from theremin.train import train

from theremin import resolvers  # noqa: F401  (the old module names: this ran before the move)

out = Path(sys.argv[1])
midi = build_demo_midi(out / "bach", limit=12, progress=False)
with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
    cfg = compose("train", overrides=[
        "model=nano", "model.model.n_layer=1", "model.model.n_embd=16", "tokenizer=1k", "tokenizer.vocab_size=660",
        "data.block_size=64", "data.batch_size=8", "logger=csv", "callbacks.sample_midi.new_notes=8",
        "trainer.max_steps=4", "trainer.val_check_interval=4", "trainer.enable_progress_bar=false",
        f"paths.data_dir={out / 'data'}", f"data.input_dir={midi}"], return_hydra_config=True)
with open_dict(cfg):
    cfg.paths.output_dir = str(out / "run")
    cfg.run_name = "old"
    del cfg["hydra"]
print(train(cfg))

"""theremin: a small GPT that learns from your MIDI files and rolls musical ideas (one note = one character).

The package reads in the order data flows (``ls theremin``)::

    music/    MIDI in and out: read/clean/write, music21 scores, humanize, render (WAV, piano roll)
    codec/    midichar (one note = one character), the sentencepiece tokenizer, REMI, the tokenizer interface
    data/     corpus (MIDI folder -> text), the DataModule, demo and base sources
    metrics/  style and memorisation figures, copy detection, sweeps
    model/    the GPT (a plain nn.Module), its LightningModule, checkpoints, callbacks, loggers, fine-tuning
    roll/     Roller (KV-cache sampling under grammar and musical constraints)
    serve/    the HTTP API and its batching engine; web/ the page
    apps/     every console script: thin entrypoints over the functions above

at the top: ``errors`` (the one error family), ``fsio`` (atomic writes), ``procs`` (worker processes),
``config`` (paths, resolvers, settings checks). Imports flow one way, from apps down to music and errors.

The names below are the public API; each is imported when first used, so ``from theremin import MidiChar``
does not import torch.
"""

from __future__ import annotations

import importlib

from theremin import _moved

_moved.install()

_API = {
    "ThereminError": "errors",
    "read_midi": "music.midi",
    "write_midi": "music.midi",
    "render_wav": "music.render",
    "piano_roll_png": "music.render",
    "MidiChar": "codec.midichar",
    "MidiTokenizer": "codec.tokenizer",
    "build_corpus": "data.corpus",
    "MidiDataModule": "data.datamodule",
    "evaluate": "metrics.style",
    "GPT": "model.gpt",
    "GPTConfig": "model.gpt",
    "LitGPT": "model.lit",
    "open_checkpoint": "model.checkpoint",
    "Roller": "roll.roller",
    "SamplingSettings": "roll.roller",
    "train": "apps.train",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(f"theremin.{_API[name]}"), name)
        globals()[name] = value  # once: the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'theremin' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

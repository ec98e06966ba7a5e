"""MIDI folders to training data: ``corpus`` (a folder -> train/val text + manifest), ``datamodule`` (the Lightning
DataModule: tokenizer, memmapped token ids, windows), ``demo`` (the demo's Bach chorales from music21), ``base`` (the
base corpus's sources).

``theremin.data`` was one module before the sub-packages; its names still resolve here (``MidiDataModule``, ...).
"""

from theremin import _moved


def __getattr__(name: str):
    return _moved.forward("data", _moved.PACKAGES["data"], name)

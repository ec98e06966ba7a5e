"""The tokenizer config's ``kind`` picks the tokenizer implementation the DataModule consumes.

``midichar`` (the default, when a config has no ``kind``): :class:`theremin.codec.tokenizer.MidiTokenizer`;
``remi``: :class:`theremin.codec.remi.RemiTokenizer` (the baseline). Each module has
``get_or_train(text_file, vocab_size, cache_root, codec, **options)`` and a class with ``load(dir, codec)``, and
writes ``tokenizer.json`` into the model dir (REMI's says ``"kind": "remi"``; midichar's has no kind).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from theremin.errors import ThereminError

KINDS = {"midichar": ("theremin.codec.tokenizer", "MidiTokenizer"), "remi": ("theremin.codec.remi", "RemiTokenizer")}
META_FILE = "tokenizer.json"


def _module(kind: str):
    if kind not in KINDS:
        raise ThereminError(f"tokenizer.kind={kind!r} is not a tokenizer kind: use one of {sorted(KINDS)}")
    return importlib.import_module(KINDS[kind][0])


def get_or_train_configured(text_file: str | os.PathLike, cfg: dict, cache_root: str | os.PathLike, codec=None):
    """The tokenizer a tokenizer config (conf/tokenizer/*.yaml: ``kind``, ``vocab_size``, options) describes,
    trained on ``text_file`` or reused from ``cache_root``."""
    opts = dict(cfg)
    kind = opts.pop("kind", None) or "midichar"
    if "vocab_size" not in opts:
        raise ThereminError("tokenizer.vocab_size is required")
    return _module(kind).get_or_train(text_file, int(opts.pop("vocab_size")), cache_root, codec=codec, **opts)


def kind_of(model_dir: str | os.PathLike) -> str:
    """The kind of the trained tokenizer in ``model_dir``."""
    return json.loads((Path(model_dir) / META_FILE).read_text()).get("kind", "midichar")


def load_configured(model_dir: str | os.PathLike, codec=None):
    """A trained tokenizer of any kind from its directory."""
    kind = kind_of(model_dir)
    return getattr(_module(kind), KINDS[kind][1]).load(model_dir, codec)

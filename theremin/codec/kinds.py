"""The tokenizer interface and the kinds a tokenizer config (conf/tokenizer/*.yaml) picks with ``kind``.

``midichar`` (the default, when a config has no ``kind``): :class:`theremin.codec.tokenizer.MidiTokenizer`;
``remi``: :class:`theremin.codec.remi.RemiTokenizer` (the baseline). Both follow :class:`Tokenizer`, which is all
the DataModule and the scorer use; both are trained once per corpus and settings by
:func:`theremin.codec.cache.get_or_train`, and write ``tokenizer.json`` (REMI's says ``"kind": "remi"``).
Rolling (the Roller's grammar masks) needs midichar.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from theremin.codec import cache
from theremin.codec.cache import META_FILE
from theremin.codec.midichar import MidiChar
from theremin.codec.remi import RemiTokenizer
from theremin.codec.tokenizer import MidiTokenizer
from theremin.errors import ThereminError


@runtime_checkable
class Tokenizer(Protocol):
    """What a tokenizer of any kind offers the DataModule, the scorer and the checkpoint."""

    kind: str
    dir: Path | None
    codec: MidiChar
    vocab_size: int
    bos_id: int
    eos_id: int
    from_cache: bool

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int], errors: str = "strict") -> str: ...

    def note_counts(self, ids: Sequence[int]) -> list[int]: ...


KINDS: dict[str, type] = {"midichar": MidiTokenizer, "remi": RemiTokenizer}


def kind_class(kind: str) -> type:
    if kind not in KINDS:
        raise ThereminError(f"tokenizer.kind={kind!r} is not a tokenizer kind: use one of {sorted(KINDS)}")
    return KINDS[kind]


def get_or_train_configured(text_file: str | os.PathLike, cfg: dict, cache_root: str | os.PathLike,
                            codec: MidiChar | None = None) -> Tokenizer:
    """The tokenizer a tokenizer config (``kind``, ``vocab_size``, options) describes, trained on ``text_file``
    or reused from ``cache_root``."""
    opts = dict(cfg)
    kind = opts.pop("kind", None) or "midichar"
    if "vocab_size" not in opts:
        raise ThereminError("tokenizer.vocab_size is required")
    return cache.get_or_train(kind_class(kind), text_file, int(opts.pop("vocab_size")), cache_root,
                              codec or MidiChar(), **opts)


def kind_of(model_dir: str | os.PathLike) -> str:
    """The kind of the trained tokenizer in ``model_dir``."""
    return json.loads((Path(model_dir) / META_FILE).read_text()).get("kind", "midichar")


def load_configured(model_dir: str | os.PathLike, codec: MidiChar | None = None) -> Tokenizer:
    """A trained tokenizer of any kind from its folder."""
    return kind_class(kind_of(model_dir)).load(model_dir, codec)

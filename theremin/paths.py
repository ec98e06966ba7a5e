"""Where theremin keeps things on disk when no config says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the source checkout (conf/ lives here)


def conf_dir() -> Path:
    return ROOT / "conf"


def data_dir() -> Path:
    """Generated data (demo MIDI, corpora, tokenizers): $THEREMIN_DATA, else <checkout>/data (git-ignored)."""
    return Path(os.environ.get("THEREMIN_DATA", ROOT / "data"))

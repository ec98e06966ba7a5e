"""Where theremin keeps things on disk when no config says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# a source checkout (pyproject.toml beside the package): generated data defaults to <checkout>/data there;
# an installed wheel has no checkout, and uses the folder the command runs from
_CHECKOUT = PACKAGE.parent if (PACKAGE.parent / "pyproject.toml").is_file() else None
ROOT = _CHECKOUT or Path.cwd()


def conf_dir() -> Path:
    """The Hydra configs: inside the package, so a wheel installed anywhere finds them (<checkout>/conf is a
    link here for the repository's layout)."""
    return PACKAGE / "conf"


def data_dir() -> Path:
    """Generated data (demo MIDI, corpora, tokenizers): $THEREMIN_DATA, else <checkout>/data (git-ignored),
    else ./data outside a checkout."""
    return Path(os.environ.get("THEREMIN_DATA", ROOT / "data"))

"""General MIDI's instrument names and families, read from pretty_midi's tables.

pretty_midi imports pyfluidsynth, and pyfluidsynth prints where it found libfluidsynth to stdout whenever the
environment sets ``CI``: a CLI whose stdout is its answer (``theremin-score``) must not carry that line, so every
import of either goes through :func:`quiet_import`.
"""

from __future__ import annotations

import contextlib
import importlib
import io


def quiet_import(name: str):
    """``import name`` with anything it prints on import swallowed (the module is cached by Python after)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return importlib.import_module(name)


def program_name(program: int) -> str:
    """General MIDI's name of a program 0..127, e.g. 33 -> "Electric Bass (finger)"."""
    return quiet_import("pretty_midi").program_to_instrument_name(program)


def family_name(program: int) -> str:
    """General MIDI's family of a program 0..127, e.g. 33 -> "Bass"."""
    return quiet_import("pretty_midi").program_to_instrument_class(program)


def program_of(name: str) -> int:
    """The program of a General MIDI instrument name ("Acoustic Grand Piano" -> 0); ValueError if none."""
    return int(quiet_import("pretty_midi").instrument_name_to_program(name))

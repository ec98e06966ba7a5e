"""Shared fixtures: MIDI files built in code (see tests/midi_factory.py for the plain functions)."""

from __future__ import annotations

import os
from pathlib import Path

import midi_factory as mf
import pytest


@pytest.fixture
def midi_factory():
    """The tests/midi_factory module (note-list helpers, raw SMF writer, truncate)."""
    return mf


def _under(tmp_path: Path, path: str | os.PathLike) -> Path:
    path = Path(path)
    return path if path.is_absolute() else tmp_path / path


@pytest.fixture
def make_midi(tmp_path):
    """``make_midi(path, notes, tpb=, tempos=[(tick, bpm)], drums=, extra_tracks=, ...)``; relative paths
    land under the test's tmp_path."""

    def make(path, notes=(), **kwargs) -> Path:
        return mf.make_midi(_under(tmp_path, path), notes, **kwargs)

    return make


@pytest.fixture
def write_smf(tmp_path):
    """``write_smf(path, tracks=[[(delta, bytes), ...]], tpb=, fmt=)`` for raw, possibly malformed files."""

    def write(path, tracks, **kwargs) -> Path:
        return mf.write_smf(_under(tmp_path, path), tracks, **kwargs)

    return write


@pytest.fixture
def midi_dir(tmp_path) -> Path:
    """A folder of four small valid pieces (midi_factory.build_good_set: scale, chords, band, tempo)."""
    folder = tmp_path / "midi"
    mf.build_good_set(folder)
    return folder


@pytest.fixture(scope="session")
def bach_midi(tmp_path_factory) -> Path:
    """30 Bach chorales from music21's corpus, written to MIDI once per test session (real, score-like MIDI)."""
    from theremin.demo_data import build_demo_midi

    return build_demo_midi(tmp_path_factory.mktemp("bach_midi") / "bach", limit=30, progress=False)

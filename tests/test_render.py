"""Rendering: the WAV follows the MIDI (timing, tempo map, silences), failures are clear, the piano roll shows
prompt and continuation apart.

Audio tests need libfluidsynth and skip without it (the project installs it in setup); the test of the
message given when it is missing always runs, on a simulated absence.
"""

from __future__ import annotations

import ctypes.util
import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from theremin.music.midi import Note, Piece
from theremin.music.render import (
    GENERATED_COLOR,
    PROMPT_COLOR,
    RenderError,
    default_soundfont,
    piano_roll_png,
    render_wav,
    roll_layout,
)

TPB = 480
SR = 22050  # half the default rate: the same checks, half the work


def _fluidsynth_loads() -> bool:
    try:
        import fluidsynth  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


needs_fluidsynth = pytest.mark.skipif(
    not _fluidsynth_loads(),
    reason="libfluidsynth cannot be loaded (apt-get install libfluidsynth3, or `make setup`)",
)


def tempo(bpm: float) -> list[tuple[int, int]]:
    return [(0, round(60_000_000 / bpm))]


def c_major_scale(bpm: float = 120, velocity: int = 100) -> Piece:
    pitches = [60, 62, 64, 65, 67, 69, 71, 72]
    notes = [Note(i * TPB, (i + 1) * TPB, p, velocity) for i, p in enumerate(pitches)]
    return Piece(notes, TPB, tempos=tempo(bpm))


def chord_progression(bpm: float) -> Piece:
    """I-IV-V-I, one bar (four beats) each."""
    chords = [(48, 60, 64, 67), (53, 60, 65, 69), (55, 59, 62, 67), (48, 60, 64, 67)]
    notes = [Note(i * 4 * TPB, (i + 1) * 4 * TPB, p, 90) for i, chord in enumerate(chords) for p in chord]
    return Piece(sorted(notes), TPB, tempos=tempo(bpm))


def read_wav(path: Path) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(str(path)) as w:
        params = w.getparams()
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return params, frames.reshape(-1, params.nchannels).astype(np.float64)


def rms(x: np.ndarray, t0: float, t1: float, sr: int = SR) -> float:
    return float(np.sqrt(np.mean(x[int(t0 * sr) : int(t1 * sr)] ** 2)))


def no_stray_files(folder: Path, expected: set[str]) -> bool:
    # atomic_write's temp files are dotfiles: iterdir lists them too
    return {p.name for p in folder.iterdir()} == expected


# ---------------------------------------------------------------------------------------------------- audio


@needs_fluidsynth
def test_wav_is_audible_stereo_16bit_and_as_long_as_the_notes(tmp_path):
    piece = c_major_scale(bpm=120)  # 8 beats at 120 bpm = 4 s
    out = render_wav(piece, tmp_path / "scale.wav", sample_rate=SR, tail_seconds=1.0)
    params, x = read_wav(out)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, SR)
    assert params.nframes / SR == pytest.approx(4.0 + 1.0, abs=0.01)
    assert rms(x, 0, 4) > 200  # int16 full scale is 32767; silence is ~1 (dither)
    assert no_stray_files(tmp_path, {"scale.wav"})


@needs_fluidsynth
def test_default_sample_rate_is_44100(tmp_path):
    params, _ = read_wav(render_wav(c_major_scale(), tmp_path / "a.wav", tail_seconds=0.5))
    assert params.framerate == 44100
    assert params.nframes / 44100 == pytest.approx(4.5, abs=0.01)


@needs_fluidsynth
def test_tempo_sets_the_length(tmp_path):
    slow = read_wav(render_wav(chord_progression(60), tmp_path / "slow.wav", sample_rate=SR, tail_seconds=0))
    fast = read_wav(render_wav(chord_progression(120), tmp_path / "fast.wav", sample_rate=SR, tail_seconds=0))
    slow_s, fast_s = slow[0].nframes / SR, fast[0].nframes / SR
    assert slow_s == pytest.approx(16.0, abs=0.01)  # 16 beats at 60 bpm
    assert slow_s / fast_s == pytest.approx(2.0, rel=0.01)


@needs_fluidsynth
def test_tempo_change_mid_piece_moves_later_notes(tmp_path):
    # 4 beats at 120 bpm (2 s), then 60 bpm: a note on beat 6 starts at 2 + 2 = 4 s, not at 3 s
    piece = Piece(
        [Note(0, TPB, 60, 100), Note(6 * TPB, 7 * TPB, 67, 100)],
        TPB,
        tempos=[(0, 500_000), (4 * TPB, 1_000_000)],
    )
    params, x = read_wav(render_wav(piece, tmp_path / "t.wav", sample_rate=SR, tail_seconds=0.5))
    assert params.nframes / SR == pytest.approx(piece.seconds(7 * TPB) + 0.5, abs=0.01)
    assert params.nframes / SR == pytest.approx(5.5, abs=0.01)
    loud = rms(x, 4.05, 4.5)
    assert rms(x, 2.5, 3.9) < loud / 20  # nothing sounds yet where 120 bpm would have put the note


@needs_fluidsynth
def test_loud_where_the_notes_are_quiet_between(tmp_path):
    # notes in seconds 0-1 and 3-4 at 120 bpm (beats 0-2 and 6-8), silence between
    piece = Piece(
        [Note(0, 2 * TPB, 60, 100), Note(0, 2 * TPB, 64, 100), Note(6 * TPB, 8 * TPB, 67, 100)],
        TPB,
        tempos=tempo(120),
    )
    _, x = read_wav(render_wav(piece, tmp_path / "gap.wav", sample_rate=SR))
    first, second, gap = rms(x, 0.1, 0.9), rms(x, 3.1, 3.9), rms(x, 1.6, 2.8)  # margins for release tails
    assert first > 100 and second > 100
    assert gap < min(first, second) / 20


@needs_fluidsynth
def test_overlapping_notes_of_one_pitch_sound_until_the_last_ends(tmp_path):
    # an organ (GM 19) holds its level: the early note's end must not cut the longer one still held
    piece = Piece([Note(0, 2 * TPB, 60, 100), Note(TPB, 6 * TPB, 60, 100)], TPB, tempos=tempo(120))
    _, x = read_wav(render_wav(piece, tmp_path / "o.wav", sample_rate=SR, program=19))
    assert rms(x, 1.5, 2.8) > rms(x, 0.1, 0.9) / 3


@needs_fluidsynth
def test_missing_soundfont_names_the_path_and_leaves_nothing(tmp_path):
    missing = tmp_path / "nowhere" / "piano.sf2"
    with pytest.raises(RenderError, match=re.escape(str(missing))):
        render_wav(c_major_scale(), tmp_path / "out.wav", soundfont=missing)
    assert no_stray_files(tmp_path, set())


@needs_fluidsynth
def test_unreadable_soundfont_leaves_no_partial_wav(tmp_path):
    bogus = tmp_path / "bogus.sf2"
    bogus.write_bytes(b"not a soundfont" * 100)
    with pytest.raises(RenderError, match=r"bogus\.sf2"):
        render_wav(c_major_scale(), tmp_path / "out.wav", soundfont=bogus)
    assert no_stray_files(tmp_path, {"bogus.sf2"})


@needs_fluidsynth
def test_unsupported_sample_rate_is_refused(tmp_path):
    # FluidSynth would silently keep 44100 and the WAV header would lie
    with pytest.raises(RenderError, match="sample_rate=1000000"):
        render_wav(c_major_scale(), tmp_path / "out.wav", sample_rate=1_000_000)
    assert no_stray_files(tmp_path, set())


def test_empty_piece_is_refused(tmp_path):
    with pytest.raises(RenderError, match="no notes"):
        render_wav(Piece([], TPB), tmp_path / "empty.wav")
    assert no_stray_files(tmp_path, set())


@pytest.mark.parametrize(
    ("found", "raised"),
    [(None, ImportError), ("/nonexistent/libfluidsynth.so.3", OSError)],  # not found; found but unloadable
)
def test_missing_library_gives_a_clear_message(tmp_path, monkeypatch, found, raised):
    # pyfluidsynth looks the library up with ctypes.util.find_library when it is imported: make that fail
    monkeypatch.delitem(sys.modules, "fluidsynth", raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: found)
    monkeypatch.delenv("HOMEBREW_PREFIX", raising=False)
    with pytest.raises(RenderError) as info:
        render_wav(c_major_scale(), tmp_path / "out.wav")
    assert isinstance(info.value.__cause__, raised)  # pyfluidsynth's own failure, kept as the cause
    message = str(info.value)
    assert "FluidSynth library (libfluidsynth)" in message
    assert "apt-get install libfluidsynth3" in message and "make setup" in message
    assert no_stray_files(tmp_path, set())


def test_default_soundfont_is_the_one_in_pretty_midi():
    path = default_soundfont()
    assert path.name == "TimGM6mb.sf2" and path.parent.name == "pretty_midi"
    assert path.stat().st_size > 1_000_000


def test_importing_render_stays_cheap():
    code = "import sys, theremin.music.render; print(sorted({'matplotlib', 'fluidsynth'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------------- piano roll


def colour_pixels(png: Path, colour: str, tol: float = 0.03) -> int:
    """How many pixels of the PNG have this colour (notes drawn at velocity 127 are opaque)."""
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    rgb = imread(str(png))[..., :3]
    return int(np.all(np.abs(rgb - np.array(to_rgb(colour))) < tol, axis=-1).sum())


def prompt_and_continuation() -> Piece:
    up = c_major_scale(velocity=127).notes
    down = [Note(n.start + 8 * TPB, n.end + 8 * TPB, 132 - n.pitch, 127) for n in up]  # 72 down to 60
    return Piece(up + down, TPB, tempos=tempo(100), time_signatures=[(0, 3, 4)])


def test_piano_roll_shows_prompt_and_continuation_in_their_colours(tmp_path):
    out = piano_roll_png(prompt_and_continuation(), tmp_path / "roll.png", prompt_end_tick=8 * TPB, title="t")
    assert out.stat().st_size > 10_000
    assert colour_pixels(out, PROMPT_COLOR) > 2_000
    assert colour_pixels(out, GENERATED_COLOR) > 2_000
    assert no_stray_files(tmp_path, {"roll.png"})


def test_piano_roll_prompt_only(tmp_path):
    out = piano_roll_png(c_major_scale(velocity=127), tmp_path / "p.png", prompt_end_tick=8 * TPB)
    assert colour_pixels(out, PROMPT_COLOR) > 2_000
    assert colour_pixels(out, GENERATED_COLOR) == 0


@pytest.mark.parametrize("prompt_end_tick", [None, 0])
def test_piano_roll_without_prompt_is_all_generated(tmp_path, prompt_end_tick):
    out = piano_roll_png(prompt_and_continuation(), tmp_path / "g.png", prompt_end_tick=prompt_end_tick)
    assert colour_pixels(out, GENERATED_COLOR) > 4_000
    assert colour_pixels(out, PROMPT_COLOR) == 0


def test_piano_roll_of_an_empty_piece_still_draws(tmp_path):
    out = piano_roll_png(Piece([], TPB), tmp_path / "e.png")
    assert out.stat().st_size > 5_000


def test_roll_layout_colours_by_origin_not_by_onset():
    """Issue 11.6: a note the model adds on the prompt's last onset was drawn as prompt, and the line sat at that
    onset. With the prompt's notes given, each note is drawn by where it came from; the line at the prompt's end."""
    bar = 4 * TPB
    prompt = [Note(0, bar, 60, 90), Note(TPB, 2 * TPB, 64, 90)]  # the last prompt onset is beat 1
    added = Note(TPB, 2 * TPB, 67, 90)  # the model's note on that onset
    later = Note(bar, bar + TPB, 62, 90)
    piece = Piece(sorted([*prompt, added, later]), TPB)
    layout = roll_layout(piece, prompt_end_tick=bar, prompt_notes={(n.start, n.pitch) for n in prompt})
    assert layout.prompt == prompt and layout.generated == [added, later]
    assert layout.prompt_end_beat == 4.0
    # without the notes' origin, where a note starts decides (the only information there is)
    assert roll_layout(piece, prompt_end_tick=bar).generated == [later]
    assert roll_layout(piece).prompt_end_beat is None and roll_layout(piece).prompt == []
    # a roll from nothing: no prompt note, no line
    empty = roll_layout(piece, prompt_end_tick=0, prompt_notes=set())
    assert empty.prompt == [] and empty.prompt_end_beat is None

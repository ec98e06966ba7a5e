"""Rendering: the WAV follows the MIDI (timing, tempo map, silences), each part sounds its own instrument (drums
on channel 10), failures are clear, the piano roll shows prompt and continuation apart and, with several
instruments, each part in its colour.

Audio tests need libfluidsynth and skip without it (the project installs it in setup); the test of the
message given when it is missing always runs, on a simulated absence.
"""

from __future__ import annotations

import ctypes.util
import os
import re
import subprocess
import sys
import wave
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import theremin.music.render as render
from theremin.music.midi import Note, Part, Piece
from theremin.music.render import (
    DRUM_BANK,
    DRUM_CHANNEL,
    GENERATED_COLOR,
    PITCHED_CHANNELS,
    PROMPT_COLOR,
    PROMPT_EDGE_COLOR,
    PROMPT_HATCH,
    RenderError,
    channel_plan,
    default_soundfont,
    draw_piano_roll,
    part_label,
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


PIANO_PART, BASS_PART, DRUM_PART = 0, 1, 2
KICK, SNARE, HAT = 36, 38, 42  # General MIDI drum sounds


def band(bpm: float = 120, drums: Part | None = None) -> Piece:
    """Piano chord and bass for beats 0-2 (0-1 s at 120 bpm); then, after a rest, drums alone for beats 6-8."""
    notes = [Note(0, 2 * TPB, p, 100, PIANO_PART) for p in (60, 64, 67)]
    notes += [Note(0, 2 * TPB, 36, 100, BASS_PART)]
    hits = [KICK, HAT, SNARE, HAT]
    notes += [Note(6 * TPB + i * TPB // 2, 6 * TPB + i * TPB // 2, p, 110, DRUM_PART) for i, p in enumerate(hits)]
    parts = [Part(0), Part(33), drums or Part(0, is_drum=True)]
    return Piece(sorted(notes), TPB, tempos=tempo(bpm), parts=parts)


def spy_synth(monkeypatch) -> list[tuple]:
    """Record what render_wav asks of FluidSynth: ("select", channel, bank, preset) and ("on", channel, pitch)."""
    import fluidsynth

    calls: list[tuple] = []

    class Spy(fluidsynth.Synth):
        def program_select(self, chan, sfid, bank, preset):
            calls.append(("select", chan, bank, preset))
            return super().program_select(chan, sfid, bank, preset)

        def noteon(self, chan, key, vel):
            calls.append(("on", chan, key))
            return super().noteon(chan, key, vel)

    monkeypatch.setattr(render, "_import_fluidsynth", lambda: SimpleNamespace(Synth=Spy))
    return calls


def sounds(calls: list[tuple]) -> set[tuple[int, int, int, int]]:
    """(channel, bank, preset, pitch) of each note struck: the preset its channel had when it was struck."""
    preset: dict[int, tuple[int, int]] = {}
    struck = set()
    for call in calls:
        if call[0] == "select":
            preset[call[1]] = call[2:]
        else:
            struck.add((call[1], *preset[call[1]], call[2]))
    return struck


@needs_fluidsynth
def test_band_drums_are_audible_in_their_own_window(tmp_path):
    _, x = read_wav(render_wav(band(), tmp_path / "band.wav", sample_rate=SR, tail_seconds=0.5))
    drums, rest = rms(x, 3.0, 4.0), rms(x, 1.8, 2.9)  # drums alone from 3 s; piano and bass died out by 1.8 s
    assert drums > 100  # int16 full scale is 32767; silence is ~1
    assert rest < drums / 10
    assert rms(x, 0.1, 0.9) > 100  # the piano and bass sound too


@needs_fluidsynth
def test_each_part_plays_its_program_on_its_channel_drums_on_channel_10(tmp_path, monkeypatch):
    calls = spy_synth(monkeypatch)
    render_wav(band(), tmp_path / "band.wav", sample_rate=SR, tail_seconds=0)
    piano, bass = PITCHED_CHANNELS[0], PITCHED_CHANNELS[1]
    assert sounds(calls) == {*((piano, 0, 0, p) for p in (60, 64, 67)), (bass, 0, 33, 36),
                             *((DRUM_CHANNEL, DRUM_BANK, 0, p) for p in (KICK, SNARE, HAT))}


@needs_fluidsynth
def test_an_explicit_program_plays_every_pitched_part_but_drums_stay_drums(tmp_path, monkeypatch):
    calls = spy_synth(monkeypatch)
    render_wav(band(), tmp_path / "band.wav", sample_rate=SR, tail_seconds=0, program=19)
    assert {(chan, bank, preset) for chan, bank, preset, _ in sounds(calls)} == {
        (PITCHED_CHANNELS[0], 0, 19), (PITCHED_CHANNELS[1], 0, 19), (DRUM_CHANNEL, DRUM_BANK, 0)}


@needs_fluidsynth
@pytest.mark.parametrize(("kit", "played"), [(25, 25), (127, 0)])  # TimGM6mb has kit 25, not 127: the standard kit
def test_a_drum_part_plays_its_kit_or_the_standard_one(tmp_path, monkeypatch, kit, played):
    calls = spy_synth(monkeypatch)
    out = render_wav(band(drums=Part(kit, is_drum=True)), tmp_path / "band.wav", sample_rate=SR, tail_seconds=0.5)
    assert {s for s in sounds(calls) if s[0] == DRUM_CHANNEL} == {
        (DRUM_CHANNEL, DRUM_BANK, played, p) for p in (KICK, SNARE, HAT)}
    assert rms(read_wav(out)[1], 3.0, 4.0) > 100


def test_a_note_of_no_part_is_refused(tmp_path):
    piece = Piece([Note(0, TPB, 60, 100, part=2)], TPB, parts=[Part(0), Part(33)])
    with pytest.raises(RenderError, match="names part 2, the piece has 2"):
        render_wav(piece, tmp_path / "bad.wav")
    assert no_stray_files(tmp_path, set())


def test_channel_plan_never_puts_a_pitched_part_on_the_drum_channel():
    drums = Part(8, is_drum=True)
    plan = channel_plan([Part(0), drums, Part(33)])
    assert plan == [(PITCHED_CHANNELS[0], 0, 0), (DRUM_CHANNEL, DRUM_BANK, 8), (PITCHED_CHANNELS[1], 0, 33)]
    assert DRUM_CHANNEL not in PITCHED_CHANNELS and len(PITCHED_CHANNELS) == 15
    # 15 pitched parts: one channel each
    assert sorted(c for c, _, _ in channel_plan([Part(p) for p in range(15)])) == sorted(PITCHED_CHANNELS)
    # more: the parts of one program share a channel...
    shared = channel_plan([Part(p % 3) for p in range(20)] + [drums])
    assert [c for c, _, _ in shared[:20]] == [PITCHED_CHANNELS[p % 3] for p in range(20)]
    assert shared[20] == (DRUM_CHANNEL, DRUM_BANK, 8)
    # ...and past 15 programs the channels are reused round-robin, never channel 10
    many = channel_plan([Part(p) for p in range(40)])
    assert [(c, p) for c, _, p in many] == [(PITCHED_CHANNELS[p % 15], p) for p in range(40)]
    # an explicit program for every pitched part; parts without notes take no channel
    assert channel_plan([Part(0), drums, Part(33)], program=19, used={1, 2}) == [
        None, (DRUM_CHANNEL, DRUM_BANK, 8), (PITCHED_CHANNELS[0], 0, 19)]


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


def test_general_midi_tables_and_fluidsynth_print_nothing_on_import():
    # pyfluidsynth prints "'fluidsynth' was found at ..." when CI is set; theremin-score's stdout is its answer
    code = ("from theremin.music import gm; from theremin.music.render import _import_fluidsynth; "
            "gm.family_name(33); _import_fluidsynth()")
    env = {**os.environ, "CI": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out == ""


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


def band_roll(parts: list[Part] | None = None) -> Piece:
    """Four bars at velocity 127: piano chords, a bass line and drums; the first two bars are the prompt."""
    notes = []
    for beat in range(0, 16, 2):
        notes += [Note(beat * TPB, (beat + 2) * TPB, p + beat % 4, 127, PIANO_PART) for p in (60, 64, 67)]
        notes += [Note(beat * TPB, (beat + 1) * TPB, 40 + beat % 3, 127, BASS_PART)]
        notes += [Note(beat * TPB + i * TPB // 2, beat * TPB + i * TPB // 2, p, 127, DRUM_PART)
                  for i, p in enumerate([KICK, HAT, SNARE, HAT])]
    parts = parts or [Part(0), Part(33), Part(0, is_drum=True)]
    return Piece(sorted(notes), TPB, tempos=tempo(120), parts=parts)


def legend_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_piano_roll_of_a_band_colours_each_part_and_names_it(tmp_path):
    from matplotlib import colormaps

    piece = band_roll()
    fig = draw_piano_roll(piece, prompt_end_tick=8 * TPB)
    assert legend_texts(fig) == ["Acoustic Grand Piano (Piano)", "Electric Bass (finger) (Bass)", "Drums",
                                 "prompt (light, hatched)", "generated (solid)", "prompt end"]
    out = piano_roll_png(piece, tmp_path / "band.png", prompt_end_tick=8 * TPB)
    assert out.stat().st_size > 10_000 and no_stray_files(tmp_path, {"band.png"})
    tab10 = colormaps["tab10"]
    assert colour_pixels(out, tab10(0)) > 1_000  # generated piano notes, solid in the piano's colour
    assert colour_pixels(out, tab10(1)) > 300  # the bass's
    assert colour_pixels(out, tab10(2)) > 100  # the drum hits' diamonds
    assert colour_pixels(out, PROMPT_COLOR) == 0 and colour_pixels(out, GENERATED_COLOR) == 0


def test_piano_roll_of_a_band_draws_the_prompt_light_and_hatched(tmp_path):
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgba

    fig = draw_piano_roll(band_roll(), prompt_end_tick=8 * TPB)
    boxes = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection) and c.get_zorder() == 2]
    prompt, generated = boxes  # prompt notes first, generated on top
    assert prompt.get_hatch() == PROMPT_HATCH and generated.get_hatch() is None
    assert all(tuple(e) == to_rgba(PROMPT_EDGE_COLOR) for e in prompt.get_edgecolor())
    assert prompt.get_facecolor()[:, 3].max() < generated.get_facecolor()[:, 3].min()  # lighter, at one velocity


def test_piano_roll_legend_names_named_parts_and_tells_twins_apart():
    parts = [Part(0, name="Left hand"), Part(33, name="Walking bass"), Part(0, is_drum=True, name="Kit")]
    assert legend_texts(draw_piano_roll(band_roll(parts)))[:3] == ["Left hand (Piano)", "Walking bass (Bass)",
                                                                  "Kit (Drums)"]
    twins = legend_texts(draw_piano_roll(band_roll([Part(33), Part(33), Part(25, is_drum=True)])))
    assert twins[:3] == ["Electric Bass (finger) (Bass) #1", "Electric Bass (finger) (Bass) #2", "Drums"]
    assert part_label(Part(25, is_drum=True, name="Drums")) == "Drums"


def test_piano_roll_of_one_instrument_keeps_the_prompt_and_generated_colours(tmp_path):
    # a violin piece, in a piece that lists other parts without notes: one instrument drawn, today's two colours
    up, down = prompt_and_continuation().notes[:8], prompt_and_continuation().notes[8:]
    piece = Piece([Note(n.start, n.end, n.pitch, n.velocity, part=1) for n in up + down], TPB,
                  tempos=tempo(100), parts=[Part(0), Part(40), Part(0, is_drum=True)])
    out = piano_roll_png(piece, tmp_path / "v.png", prompt_end_tick=8 * TPB)
    assert colour_pixels(out, PROMPT_COLOR) > 2_000 and colour_pixels(out, GENERATED_COLOR) > 2_000
    fig = draw_piano_roll(piece, prompt_end_tick=8 * TPB)
    assert legend_texts(fig) == ["prompt", "generated", "prompt end"]
    assert fig.axes[0].get_legend().get_title().get_text() == "Violin (Strings)"
    # the plain piano of old: the same legend, untitled
    piano = draw_piano_roll(prompt_and_continuation(), prompt_end_tick=8 * TPB)
    assert legend_texts(piano) == ["prompt", "generated", "prompt end"]
    assert piano.axes[0].get_legend().get_title().get_text() == ""


def test_roll_layout_takes_the_prompt_notes_part_when_given():
    # the bass and the piano both play C3 on beat 0: only the piano's came from the prompt
    piano, bass = Note(0, TPB, 48, 90, PIANO_PART), Note(0, TPB, 48, 90, BASS_PART)
    piece = Piece([piano, bass], TPB, parts=[Part(0), Part(33)])
    layout = roll_layout(piece, TPB, {(0, 48, PIANO_PART)})
    assert layout.prompt == [piano] and layout.generated == [bass]
    assert roll_layout(piece, TPB, {(0, 48)}).prompt == [piano, bass]  # a (start, pitch) pair: any part

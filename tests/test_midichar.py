"""The midichar codec: exact on its grid, nothing clamped or dropped, tempo survives in seconds."""

from __future__ import annotations

import dataclasses
import re
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from theremin.codec.midichar import BASE, CodecConfig, CodecError, MidiChar
from theremin.errors import ThereminError
from theremin.music.midi import DEFAULT_TEMPO_US, MidiError, Note, Piece, clean_tempos, read_midi, write_midi

CODEC = MidiChar()
K = CODEC.ticks_per_beat // CODEC.grid  # ticks per grid step in decoded files


def grid_piece(notes, tempos=(), tpb=CODEC.ticks_per_beat):
    """A Piece from grid-unit notes (pos, dur, pitch, velocity)."""
    k = tpb // CODEC.grid
    return Piece(
        notes=sorted(Note(p * k, (p + d) * k, pitch, v) for p, d, pitch, v in notes),
        ticks_per_beat=tpb,
        tempos=clean_tempos((p * k, us) for p, us in tempos),
    )


def canonical(notes):
    """What the grid keeps of notes (pos, dur, pitch, velocity): one per (pos, pitch), the longest."""
    best = {}
    for pos, dur, pitch, vel in notes:
        vel = CODEC.velocities[CODEC.velocity_index(vel)]
        if (pos, pitch) not in best or (dur, vel) > best[(pos, pitch)]:
            best[(pos, pitch)] = (dur, vel)
    return sorted((p, d, pitch, v) for (p, pitch), (d, v) in best.items())


def as_grid(piece):
    return sorted((n.start // K, (n.end - n.start) // K, n.pitch, n.velocity) for n in piece.notes)


# ---- the alphabet -----------------------------------------------------------------------------------------
def test_layout_fits_the_supplementary_planes():
    assert CODEC.n_codes <= 0x100000
    assert CODEC.kind(chr(BASE)) == "note"
    assert CODEC.kind(chr(BASE + CODEC.n_codes - 1)) == "select"
    assert MidiChar(instruments=False).kind(chr(BASE + MidiChar(instruments=False).n_codes - 1)) == "tempo_lo"
    assert CODEC.kind(chr(BASE + CODEC.n_codes)) == "invalid"
    assert CODEC.kind("a") == "invalid"


@given(st.integers(0, 0x10FFFF - BASE))
def test_every_char_is_printable_never_whitespace_control_or_surrogate(i):
    ch = chr(BASE + i)
    assert not ch.isspace() and ch != "\n"
    assert unicodedata.category(ch) not in ("Cc", "Cs", "Zs", "Zl", "Zp")
    assert ch.encode("utf-8").decode("utf-8") == ch


def test_layout_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="code points"):
        MidiChar(velocities=list(range(1, 128, 4)))


# ---- settings: defaults in code, conf/codec/default.yaml only overrides them ---------------------------------
# the codec config that every corpus, tokenizer and checkpoint made so far recorded: it must rebuild as it is
RECORDED = {
    "grid": 12, "velocities": [32, 64, 96, 124], "steps": [*range(31), 36, 42, 48, 72, 96],
    "durations": [*range(1, 41), 42, 45, 48, 54, 60, 72, 84, 96, 120, 144, 192, 240, 288, 384, 576, 768],
    "max_rest": 2048, "max_dur_ext": 2048, "ticks_per_beat": 480, "max_gap_beats": 4096,
}


def test_defaults_live_in_code_not_in_a_config_file(monkeypatch, tmp_path):
    import theremin.config

    monkeypatch.setattr(theremin.config, "conf_dir", lambda: tmp_path / "no-conf-here")  # e.g. a bare install
    assert MidiChar().config == {**RECORDED, "instruments": True}


def test_a_recorded_config_rebuilds_the_same_codec_and_keys():
    # a config recorded before instruments existed means a codec without them, keys and all
    old = MidiChar.from_recorded(RECORDED)
    assert old.instruments is False and old.config == {**RECORDED, "instruments": False}
    codec = MidiChar(**{**RECORDED, "instruments": True})
    assert MidiChar(**codec.config).config == codec.config
    assert MidiChar.from_recorded(codec.config).config == codec.config
    # a setting added later is recorded only when changed, so older configs keep their keys
    assert MidiChar(max_note_beats=4096).config == codec.config
    assert MidiChar(max_note_beats=100).config == {**codec.config, "max_note_beats": 100}
    assert MidiChar(max_same_program=12, max_name_bytes=64).config == codec.config


def test_the_yaml_only_overrides_the_defaults_in_code():
    import hydra
    from omegaconf import OmegaConf

    from theremin.config import conf_dir

    yaml = OmegaConf.load(conf_dir() / "codec" / "default.yaml")
    defaults = {f.name: f.default for f in dataclasses.fields(CodecConfig)}
    spelled = {k: tuple(v) if isinstance(v, list) else v for k, v in OmegaConf.to_container(yaml).items()}
    assert spelled.pop("_target_") == "theremin.codec.midichar.MidiChar"
    assert spelled == defaults  # the file spells the defaults out for the command line; it must not drift
    for convert in ("none", "all"):  # Hydra hands over ListConfig unless told to convert
        assert hydra.utils.instantiate(yaml, _convert_=convert).config == {**RECORDED, "instruments": True}
    assert hydra.utils.instantiate(yaml, grid=24).config["grid"] == 24


def test_unknown_setting_is_refused_by_name():
    with pytest.raises(ThereminError, match=r"codec\.gird is not a codec setting \(known: grid, velocities, .*"
                                            r"max_gap_beats, max_note_beats, instruments.*\)"):
        MidiChar(gird=12)


@pytest.mark.parametrize("bad, setting", [
    ({"grid": "twelve"}, "codec.grid"), ({"grid": 0}, "codec.grid"), ({"velocities": 64}, "codec.velocities"),
    ({"steps": [0, 1.5]}, "codec.steps"), ({"durations": [2, 3]}, "codec.durations"),
    ({"max_rest": 4}, "codec.max_rest"), ({"ticks_per_beat": 100}, "codec.ticks_per_beat"),
    ({"max_gap_beats": "long"}, "codec.max_gap_beats"), ({"max_note_beats": 0}, "codec.max_note_beats"),
])
def test_bad_setting_is_named(bad, setting):
    with pytest.raises(ThereminError, match=re.escape(setting)):
        MidiChar(**bad)


# ---- exact on the grid ------------------------------------------------------------------------------------
grid_notes = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 200), st.integers(0, 30_000)),  # position
        st.one_of(st.integers(1, 60), st.integers(1, 6000)),  # duration
        st.integers(0, 127),
        st.integers(1, 127),
    ),
    max_size=60,
)
tempo_values = st.one_of(st.integers(1, 0xFFFFFF), st.sampled_from([500_000, 789_474, 600_000, 250_000]))


@settings(max_examples=300, deadline=None)
@given(grid_notes, st.lists(st.tuples(st.integers(0, 30_000), tempo_values), max_size=5),
       st.sampled_from([480, 96, 10080, 384, 12]))
def test_decode_encode_is_identity_on_the_grid(notes, tempos, tpb):
    piece = grid_piece(notes, tempos, tpb)
    text = CODEC.encode(piece)
    back = CODEC.decode(text)
    assert as_grid(back) == canonical(notes)
    # tempo is exact: every note starts and ends at the same second
    for pos, dur, _, _ in canonical(notes):
        assert back.seconds(pos * K) == pytest.approx(piece.seconds(pos * tpb // CODEC.grid), abs=1e-9)
        assert back.seconds((pos + dur) * K) == pytest.approx(
            piece.seconds((pos + dur) * tpb // CODEC.grid), abs=1e-9)
    assert CODEC.encode(back) == text


@st.composite
def canonical_texts(draw):
    """Valid midichar texts, generated from the grammar in the module docstring (not from the encoder)."""
    c = CODEC
    rest = lambda n: [chr(BASE + c.rest_lo + c.max_rest - 1)] * (n // c.max_rest) + (  # noqa: E731
        [chr(BASE + c.rest_lo + n % c.max_rest - 1)] if n % c.max_rest else [])
    ext = lambda n: [chr(BASE + c.ext_lo + c.max_dur_ext - 1)] * (n // c.max_dur_ext) + (  # noqa: E731
        [chr(BASE + c.ext_lo + n % c.max_dur_ext - 1)] if n % c.max_dur_ext else [])
    out, tempo = [], DEFAULT_TEMPO_US
    for group in range(draw(st.integers(0, 12))):
        gap = draw(st.one_of(st.integers(0, 40), st.integers(0, 5000)))
        if group > 0:
            gap = max(gap, 1)  # one group per position
        new_tempo = draw(st.one_of(st.none(), tempo_values))
        if new_tempo is not None and new_tempo != tempo:
            hi, lo = divmod(new_tempo, 4096)
            out += [*rest(gap), chr(BASE + c.tempo_hi_lo + hi), chr(BASE + c.tempo_lo_lo + lo)]
            tempo, gap = new_tempo, 0
        pitches = sorted(draw(st.sets(st.integers(0, 127), min_size=1, max_size=6)))
        for j, pitch in enumerate(pitches):
            step = gap if j == 0 else 0
            step_i = max(i for i, s in enumerate(c.steps) if s <= step)
            dur = draw(st.one_of(st.integers(1, 50), st.integers(1, 5000)))
            dur_i = max(i for i, d in enumerate(c.durations) if d <= dur)
            out += rest(step - c.steps[step_i])
            out.append(c.note_char(step_i, dur_i, draw(st.integers(0, len(c.velocities) - 1)), pitch))
            out += ext(dur - c.durations[dur_i])
    return "".join(out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(canonical_texts())
def test_encode_decode_is_identity_for_every_valid_text(text):
    assert CODEC.encode(CODEC.decode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, CODEC.n_codes + 100), max_size=40))
def test_any_string_decodes_or_names_the_bad_char(codes):
    text = "".join(chr(BASE + i) for i in codes)
    try:
        piece = CODEC.decode(text)
    except CodecError as e:
        assert str(e).startswith("char ")
        return
    # a non-canonical text decodes to notes whose canonical text is stable
    again = CODEC.decode(CODEC.encode(piece))
    assert as_grid(again) == canonical(as_grid(piece))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, CODEC.n_codes + 100), max_size=40))
def test_repair_makes_any_string_decodable(codes):
    text = "".join(chr(BASE + i) for i in codes)
    fixed = CODEC.repair(text)
    CODEC.decode(fixed)
    assert CODEC.repair(fixed) == fixed
    assert CODEC.count_notes(fixed) == CODEC.count_notes(text)  # only escapes and foreign chars go


def test_orphans_are_errors():
    c = CODEC
    with pytest.raises(CodecError, match="DUR_EXT must follow a note"):
        c.decode(chr(BASE + c.ext_lo))
    with pytest.raises(CodecError, match="TEMPO_LO without"):
        c.decode(chr(BASE + c.tempo_lo_lo + 5))
    with pytest.raises(CodecError, match="ends inside a tempo"):
        c.decode(chr(BASE + c.tempo_hi_lo + 5))
    with pytest.raises(CodecError, match="not a midichar"):
        c.decode("x")
    with pytest.raises(CodecError, match="tempo of 0 microseconds"):
        c.decode(chr(BASE + c.tempo_hi_lo) + chr(BASE + c.tempo_lo_lo))


# the grammar written independently, as a regular expression over one letter per char: N note, E DUR_EXT,
# R REST, H/h TEMPO_HI (h: value 0), L/l TEMPO_LO (l: value 0), D part declaration, M name byte, S part switch,
# x anything else
WORDS = re.compile(r"(?:DM*)*(?:NE*|R|H[Ll]|hL|SNE*)*")
LETTER_CODES = {"N": [0, 127, 128 * 5 + 60, CODEC.n_notes - 1], "R": [CODEC.rest_lo, CODEC.ext_lo - 1],
                "E": [CODEC.ext_lo, CODEC.tempo_hi_lo - 1], "H": [CODEC.tempo_hi_lo + 1, CODEC.tempo_lo_lo - 1],
                "h": [CODEC.tempo_hi_lo], "L": [CODEC.tempo_lo_lo + 1, CODEC.decl_lo - 1],
                "l": [CODEC.tempo_lo_lo], "D": [CODEC.decl_lo, CODEC.name_lo - 1],
                "M": [CODEC.name_lo, CODEC.select_lo - 1], "S": [CODEC.select_lo, CODEC.n_codes - 1],
                "x": [CODEC.n_codes, -BASE + ord("x")]}


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(sorted(LETTER_CODES)), max_size=12), st.randoms())
def test_decode_and_repair_follow_the_grammar(letters, rnd):
    text = "".join(chr(BASE + rnd.choice(LETTER_CODES[x])) for x in letters)
    try:
        CODEC.decode(text)
        ok = True
    except CodecError:
        ok = False
    assert ok == bool(WORDS.fullmatch("".join(letters)))
    fixed = CODEC.repair(text)
    assert WORDS.fullmatch("".join(next(k for k, v in LETTER_CODES.items() if ord(c) - BASE in v) for c in fixed))
    if ok:
        assert fixed == text


# ---- nothing clamped or dropped ---------------------------------------------------------------------------
def test_extremes_survive():
    notes = [
        (0, 1, 0, 1),  # lowest pitch, quietest velocity, shortest note
        (0, 12 * 300, 127, 127),  # highest pitch, loudest, a 300-beat note
        (12 * 1000, 5, 60, 64),  # after a 1000-beat rest
        (12 * 1000 + 31, 37, 61, 90),  # a step and a duration that are not in the tables
    ]
    tempos = [(0, 0xFFFFFF), (12 * 500, 1), (12 * 1000, 857_143)]
    text = CODEC.encode(grid_piece(notes, tempos))
    back = CODEC.decode(text)
    assert as_grid(back) == canonical(notes)
    assert back.tempos == [(p * K, us) for p, us in tempos]
    assert CODEC.count_notes(text) == 4
    assert {n.velocity for n in back.notes} >= {CODEC.velocities[0], CODEC.velocities[-1]}


def test_chord_is_one_char_per_note_and_tempo_costs_two():
    notes = [(0, 12, p, 96) for p in (60, 64, 67)]
    assert len(CODEC.encode(grid_piece(notes))) == 3
    assert len(CODEC.encode(grid_piece(notes, [(0, 789_474)]))) == 5


def test_offgrid_onsets_round_by_absolute_position_not_by_delta():
    # 1000 notes 1/7 beat apart: rounding each delta would drift, absolute rounding never does
    tpb = 700
    piece = Piece([Note(i * 100, i * 100 + 90, 60 + i % 2, 80) for i in range(1000)], tpb)
    back = CODEC.decode(CODEC.encode(piece))
    for a, b in zip(piece.notes, back.notes):
        assert abs(a.start / tpb - b.start / CODEC.ticks_per_beat) <= 0.5 / CODEC.grid + 1e-9


def test_absurd_silence_is_refused_with_a_reason():
    piece = grid_piece([(0, 1, 60, 80), (12 * 100_000, 1, 60, 80)])
    with pytest.raises(ValueError, match="absurd silence"):
        CODEC.encode(piece)


def test_absurd_note_length_is_refused_with_a_reason(tmp_path):
    # an expansion bomb: notes held 2^28 beats at 1 tick per beat, ~1.6 M DUR_EXT chars each, from a tiny file
    bomb = Piece([Note(0, 1 << 28, 60 + i, 80) for i in range(4)], ticks_per_beat=1)
    with pytest.raises(MidiError, match=r"absurd note of 268435456 beats at beat 0 \(codec.max_note_beats=4096\)"):
        CODEC.encode(bomb)
    path = write_midi(Piece([Note(0, 1 << 27, 60, 80)], ticks_per_beat=1), tmp_path / "bomb.mid")
    with pytest.raises(MidiError, match=r"bomb\.mid: absurd note of 134217728 beats"):
        CODEC.encode_file(path)
    # the longest note allowed still encodes, in a few chars; the limit is a setting
    text = CODEC.encode(grid_piece([(0, 12 * 4096, 60, 80)]))
    assert len(text) < 30 and as_grid(CODEC.decode(text)) == canonical([(0, 12 * 4096, 60, 80)])
    with pytest.raises(MidiError, match="absurd note of 3 beats"):
        MidiChar(max_note_beats=2).encode(grid_piece([(0, 36, 60, 80)]))


def test_transpose():
    text = CODEC.encode(grid_piece([(0, 12, 60, 80), (12, 12, 64, 80)], [(0, 600_000)]))
    up = CODEC.transpose(text, 5)
    assert [n.pitch for n in CODEC.decode(up).notes] == [65, 69]
    assert CODEC.decode(up).tempos == CODEC.decode(text).tempos
    assert CODEC.transpose(text, 100) is None


# ---- files ------------------------------------------------------------------------------------------------
def test_file_round_trip_keeps_seconds_with_a_tempo_map(tmp_path):
    tpb = 10080  # music21's resolution: long pieces pass 10^7 ticks
    notes = [Note(i * tpb // 2, i * tpb // 2 + tpb // 3, 48 + (i * 7) % 36, 70) for i in range(2400)]
    piece = Piece(notes, tpb, tempos=[(0, 789_474), (tpb * 600, 400_000)], time_signatures=[(0, 3, 4)])
    src = write_midi(piece, tmp_path / "in.mid")
    assert max(n.end for n in read_midi(src).notes) > 10**7
    out = CODEC.decode_to_file(CODEC.encode_file(src), tmp_path / "out.mid")
    a, b = read_midi(src), read_midi(out)
    assert len(a.notes) == len(b.notes)
    for x, y in zip(a.notes, b.notes):
        assert x.pitch == y.pitch
        assert a.seconds(x.start) == pytest.approx(b.seconds(y.start), abs=0.5 / CODEC.grid * 0.79 + 1e-6)
        assert a.seconds(x.end) == pytest.approx(b.seconds(y.end), abs=0.5 / CODEC.grid * 0.79 + 1e-6)


def test_repeated_notes_of_one_pitch_survive_a_file(tmp_path):
    # back-to-back notes of one pitch: the writer must not let one note-off end the next note
    notes = [(i * 6, 6, 60, 96) for i in range(8)] + [(48, 24, 60, 96), (72, 6, 60, 96), (60, 24, 62, 96)]
    text = CODEC.encode(grid_piece(notes))
    out = CODEC.decode_to_file(text, tmp_path / "rep.mid")
    assert CODEC.encode(read_midi(out)) == text


def test_overlapping_notes_of_one_pitch_keep_their_durations_through_a_file(tmp_path):
    # two voices on one pitch (a held note and a shorter one inside it): one track would swap their note-offs
    notes = [(0, 48, 60, 96), (12, 12, 60, 64), (18, 4, 60, 32), (24, 6, 62, 96)]
    text = CODEC.encode(grid_piece(notes))
    out = CODEC.decode_to_file(text, tmp_path / "overlap.mid")
    assert CODEC.encode(read_midi(out)) == text

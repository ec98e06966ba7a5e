"""Instruments, drums and tracks through the codec (issue 18): round trips, the header, switches, refusals."""

from __future__ import annotations

import pytest
from midi_factory import chords, drum_pattern, make_midi, note_off, note_on, random_notes, scale, write_smf

from theremin.codec.midichar import DECL, NAME, SELECT, CodecError, MidiChar
from theremin.music.midi import PIANO, Note, Part, Piece, read_midi

CODEC = MidiChar()
OLD = MidiChar(instruments=False)


def band_piece() -> Piece:
    """Piano chords, a bass (program 33), drums and a second guitar of one program, on a 12-step grid."""
    parts = [Part(0, False, "Keys"), Part(33, False, "Bass"), Part(0, True, ""), Part(27, False, "Gtr"),
             Part(27, False, "Gtr 2")]
    notes = []
    for i in range(16):
        t = i * 240
        notes.append(Note(t, t + 120, 36 if i % 2 == 0 else 38, 124, 2))  # kick/snare
        notes.append(Note(t, t + 80, 42, 64, 2))  # hi-hat on the same onset
        if i % 4 == 0:
            notes += [Note(t, t + 960, p, 96, 0) for p in (60, 64, 67)]
            notes.append(Note(t, t + 480, 40, 96, 1))
        notes.append(Note(t + 120, t + 240, 64 + i % 5, 64, 3 + i % 2))
    return Piece(sorted(notes), 480, [(0, 400_000)], [(0, 4, 4)], parts)


def test_a_band_round_trips_note_for_note_with_its_parts():
    piece = band_piece()
    text = CODEC.encode(piece)
    back = CODEC.decode(text)
    assert back.parts == piece.parts
    assert sorted(back.notes) == sorted(piece.notes)
    assert CODEC.encode(back) == text  # canonical


def test_one_unnamed_piano_part_costs_no_char_and_texts_stay_as_before():
    notes = [Note(s, e, p, v) for s, e, p, v in scale(60) + chords(start=3840)]
    piece = Piece(notes, 480, [(0, 600_000)])
    text = CODEC.encode(piece)
    assert text == OLD.encode(piece)
    assert CODEC.count_notes(text) == len(text) - 2  # one char per note, plus the tempo
    assert CODEC.decode(text).parts == [PIANO]


def test_a_switch_costs_one_char_and_names_the_instrument():
    piece = band_piece()
    text = CODEC.encode(piece)
    header = len(CODEC.header(piece.parts))
    selects = [c for c in text if CODEC.char_class(c) == SELECT]
    assert len(text) - header - CODEC.count_notes(text) - len(selects) <= 4  # the tempo and few rests
    assert {CODEC.split_select(c)[0].program for c in selects} == {0, 33, 27}
    assert any(CODEC.split_select(c)[0].is_drum for c in selects)
    # two guitars of one program keep apart by ordinal
    assert {CODEC.split_select(c)[1] for c in selects if CODEC.split_select(c)[0].program == 27} == {0, 1}


def test_the_header_holds_programs_and_names_in_utf8():
    parts = [Part(0, False, "MELODY"), Part(0, False, "BRIDGE"), Part(0, False, "Piano 🎹 ü")]
    piece = Piece([Note(0, 480, 60 + k, 80, k) for k in range(3)], 480, parts=parts)
    text = CODEC.encode(piece)
    classes = [CODEC.char_class(c) for c in text]
    assert classes.count(DECL) == 3 and classes.count(NAME) == sum(len(p.name.encode()) for p in parts)
    assert CODEC.decode(text).parts == parts


def test_long_names_are_cut_at_a_character_boundary():
    name = "é" * 40  # 80 bytes
    piece = Piece([Note(0, 480, 60, 80, 0)], 480, parts=[Part(5, False, name)])
    back = CODEC.decode(CODEC.encode(piece)).parts[0]
    assert back.program == 5 and back.name == "é" * 32


def test_transposition_never_moves_drums():
    text = CODEC.encode(band_piece())
    up = CODEC.decode(CODEC.transpose(text, 3))
    for a, b in zip(sorted(band_piece().notes, key=lambda n: (n.part, n.start, n.pitch)),
                    sorted(up.notes, key=lambda n: (n.part, n.start, n.pitch - (0 if n.part == 2 else 3)))):
        assert b.pitch == a.pitch + (0 if a.part == 2 else 3)


def test_a_select_for_an_undeclared_part_adds_it():
    text = CODEC.encode(Piece([Note(0, 480, 60, 80)], 480))
    bass = CODEC.select_char(Part(33), 0)
    note = text[-1]
    notes, _, parts = CODEC.decode_parts(text + bass + note)
    assert parts == [PIANO, Part(33)] and [n[4] for n in notes] == [0, 1]


def test_grammar_refuses_misplaced_part_chars_and_repair_drops_them():
    text = CODEC.encode(band_piece())
    sel = CODEC.select_char(Part(33), 0)
    decl = CODEC.decl_char(Part(33))
    with pytest.raises(CodecError, match="ends after a part switch"):
        CODEC.decode(text + sel)
    with pytest.raises(CodecError, match=r"switch .* must be followed by a note"):
        CODEC.decode(text + sel + chr(0x10000 + CODEC.rest_lo))
    with pytest.raises(CodecError, match="header"):
        CODEC.decode(text + decl + text[-1])
    rest = chr(0x10000 + CODEC.rest_lo)
    fixed = CODEC.repair(text + sel + rest + decl)
    assert fixed == text + rest
    assert OLD.kind(sel) == "invalid"


def test_without_instruments_drums_go_and_parts_merge():
    piece = band_piece()
    back = OLD.decode(OLD.encode(piece))
    assert back.parts == [PIANO]
    assert len(back.notes) == sum(1 for n in piece.notes if n.part != 2)


# ---- files: what real MIDI brings ---------------------------------------------------------------------------


def test_a_band_file_keeps_programs_drums_and_track_names(tmp_path):
    path = make_midi(tmp_path / "band.mid", random_notes(1, 24), drums=drum_pattern(2),
                     extra_tracks=[{"notes": chords(start=0, length=1920), "program": 33, "name": "bass"}])
    piece = read_midi(path)
    assert [(p.program, p.is_drum, p.name) for p in piece.parts] == [(0, False, "melody"), (0, True, "drums"),
                                                                   (33, False, "bass")]
    out = CODEC.decode_to_file(CODEC.encode_file(path), tmp_path / "back.mid")
    back = read_midi(out)
    assert back.parts == piece.parts
    assert sorted((n.start, n.pitch, n.part) for n in back.notes) == sorted(
        (n.start, n.pitch, n.part) for n in piece.notes)
    import symusic

    drum_tracks = [t for t in symusic.Score(str(out)).tracks if t.is_drum]
    assert len(drum_tracks) == 1 and len(drum_tracks[0].notes) == len(drum_pattern(2))


def test_sixteen_tracks_and_all_128_programs_round_trip(tmp_path):
    extra = [{"notes": [(i * 120, i * 120 + 100, 40 + i % 40, 80)], "program": i, "name": f"t{i}"}
             for i in range(128)]
    path = make_midi(tmp_path / "many.mid", scale(60), drums=drum_pattern(1), extra_tracks=extra)
    piece = read_midi(path)
    assert len(piece.parts) == 130
    back = CODEC.decode(CODEC.encode_file(path))
    assert back.parts == piece.parts and len(back.notes) == len(piece.notes)


def test_drums_on_another_channel_stay_a_pitched_part(tmp_path):
    # a "drum" track on channel 1: General MIDI plays it as a piano; so does the round trip
    path = make_midi(tmp_path / "ch1.mid", extra_tracks=[{"notes": drum_pattern(1), "name": "Drums"}])
    piece = read_midi(path)
    assert piece.parts == [Part(0, False, "Drums")]
    back = CODEC.decode(CODEC.encode_file(path))
    assert back.parts == piece.parts and len(back.notes) == len(piece.notes)


def test_a_program_change_mid_track_gives_each_note_the_program_in_force(tmp_path):
    events = [(0, b"\xff\x03\x05Guitr"), (0, bytes([0xC0, 25])), (0, note_on(60)), (480, note_off(60)),
              (0, bytes([0xC0, 30])), (0, note_on(62)), (480, note_off(62)), (0, b"\xff\x2f\x00")]
    path = write_smf(tmp_path / "pc.mid", [events])
    piece = read_midi(path)
    assert [(p.program, p.name) for p in piece.parts] == [(25, "Guitr"), (30, "Guitr")]
    assert [(n.pitch, piece.parts[n.part].program) for n in piece.notes] == [(60, 25), (62, 30)]
    back = CODEC.decode(CODEC.encode_file(path))
    assert [(n.pitch, back.parts[n.part].program) for n in back.notes] == [(60, 25), (62, 30)]


def test_tracks_of_one_name_stay_apart(tmp_path):
    extra = [{"notes": scale(48), "program": 0, "name": "Piano"}, {"notes": scale(72), "program": 0, "name": "Piano"}]
    path = make_midi(tmp_path / "same.mid", extra_tracks=extra)
    back = CODEC.decode(CODEC.encode_file(path))
    assert [p.name for p in back.parts] == ["Piano", "Piano"]
    assert {n.pitch for n in back.notes if n.part == 1} == {72 + i for i in (0, 2, 4, 5, 7, 9, 11, 12)}


def test_parts_of_one_sound_beyond_the_cap_fold_and_keep_every_note(tmp_path):
    extra = [{"notes": [(i * 480, i * 480 + 240, 60, 80)], "program": 48, "name": f"s{i}"} for i in range(14)]
    path = make_midi(tmp_path / "strings.mid", extra_tracks=extra)
    back = CODEC.decode(CODEC.encode_file(path))
    assert [p.name for p in back.parts] == [f"s{i}" for i in range(12)]
    assert [(n.start, n.part) for n in back.notes] == [(i * 480, min(i, 11)) for i in range(14)]
    wide = MidiChar(max_same_program=14)
    assert len(wide.decode(wide.encode_file(path)).parts) == 14
    with pytest.raises(CodecError, match="more than 12 parts play program 48"):
        CODEC.part_keys([Part(48)] * 13)

"""Draw docs/img/roll.png: the README's piano roll, from a MIDI file built here (no third-party MIDI, no model).

    .venv/bin/python docs/img/make_roll.py

Four bars in C: chords under a tune. The first two bars are drawn as a prompt (blue) and the last two as a
continuation (orange), the way theremin-generate and theremin-serve draw a roll; the notes are written by hand
here, so the picture shows what a roll looks like, not what a model rolled.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from theremin import piano_roll_png, read_midi

TPB = 480
BAR = 4 * TPB
OUT = Path(__file__).resolve().parent / "roll.png"

# (bar, beat, beats long, pitch): a tune over C - Am - F - G, the last two bars an answer to the first two
TUNE = [(0, 0, 1, 76), (0, 1, 0.5, 74), (0, 1.5, 0.5, 72), (0, 2, 1, 74), (0, 3, 1, 76),
        (1, 0, 1.5, 72), (1, 1.5, 0.5, 71), (1, 2, 1, 69), (1, 3, 1, 72),
        (2, 0, 0.5, 77), (2, 0.5, 0.5, 76), (2, 1, 1, 74), (2, 2, 0.5, 72), (2, 2.5, 0.5, 74), (2, 3, 1, 77),
        (3, 0, 1, 79), (3, 1, 0.5, 77), (3, 1.5, 0.5, 76), (3, 2, 2, 74)]
CHORDS = [(48, 55, 60, 64), (45, 52, 57, 60), (41, 53, 57, 60), (43, 55, 59, 62)]


def notes() -> list[tuple[int, int, int, int]]:
    """(start, end, pitch, velocity) in ticks."""
    out = []
    for bar, beat, beats, pitch in TUNE:
        start = int(bar * BAR + beat * TPB)
        out.append((start, start + int(beats * TPB) - 20, pitch, 96))
    for bar, chord in enumerate(CHORDS):
        for half in (0, 2 * TPB):  # two half-note strokes a bar
            out += [(bar * BAR + half, bar * BAR + half + 2 * TPB - 30, p, 64) for p in chord]
    return out


def write_midi_file(path: Path) -> Path:
    import miditoolkit
    from miditoolkit.midi.containers import Instrument, Note, TempoChange, TimeSignature

    midi = miditoolkit.MidiFile(ticks_per_beat=TPB)
    piano = Instrument(program=0, name="piano")
    piano.notes = [Note(velocity=v, pitch=p, start=s, end=e) for s, e, p, v in notes()]
    midi.instruments = [piano]
    midi.tempo_changes = [TempoChange(tempo=96.0, time=0)]
    midi.time_signature_changes = [TimeSignature(4, 4, 0)]
    midi.dump(str(path))
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        piece = read_midi(write_midi_file(Path(tmp) / "roll.mid"))
        piano_roll_png(piece, OUT, prompt_end_tick=2 * BAR,
                       title="two bars of prompt (blue), a roll from there (orange)")
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()

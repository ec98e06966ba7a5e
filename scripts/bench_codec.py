"""Codec fidelity and size on a folder of MIDI files.

    python scripts/bench_codec.py 'data/demo_midi/bach/*.mid'            # score-like files
    python scripts/bench_codec.py '/path/to/maestro/**/*.mid' --performances

Fidelity: notes of the cleaned original (all non-drum tracks, in seconds with the tempo map applied; notes
of one pitch starting together count once, the longest) against the notes of
MidiChar().decode_to_file(MidiChar().encode_file(f)), matched with mir_eval.transcription at its standard
tolerances (onset 50 ms; offset max(50 ms, 20 % of the duration)); mean F1 over files; pitches must be exact.
Targets (issue 2): scores onset-F1 >= 0.999, onset+offset-F1 >= 0.99; performances >= 0.99 and >= 0.95.
Size: characters per note (1.0 = no escape characters needed) and the share of escape characters.
Files are read with symusic in seconds, so files beyond 10^7 ticks (music21 writes 10080 per beat) count too.
"""

from __future__ import annotations

import argparse
import glob
import tempfile
import time
from pathlib import Path

import numpy as np


def seconds_notes(path: str | Path):
    import symusic

    longest: dict[tuple[float, int], float] = {}
    for track in symusic.Score(str(path), ttype="second").tracks:
        if track.is_drum:
            continue
        for n in track.notes:
            key = (round(n.time, 4), n.pitch)
            longest[key] = max(longest.get(key, 0.0), n.duration)
    notes = sorted((a, a + d, p) for (a, p), d in longest.items())
    intervals = np.array([[a, max(b, a + 1e-3)] for a, b, _ in notes]).reshape(-1, 2)
    pitches = np.array([440.0 * 2 ** ((p - 69) / 12) for _, _, p in notes])
    return intervals, pitches


def f1(ref_iv, ref_p, est_iv, est_p, offset_ratio) -> float:
    from mir_eval.transcription import match_notes

    hits = 0  # notes only match at equal pitch: matching pitch by pitch avoids mir_eval's N x N matrices
    for p in np.unique(ref_p):
        r, e = ref_p == p, est_p == p
        if e.any():
            hits += len(match_notes(ref_iv[r], ref_p[r], est_iv[e], est_p[e], offset_ratio=offset_ratio))
    if hits == 0:
        return 0.0
    prec, rec = hits / len(est_p), hits / len(ref_p)
    return 2 * prec * rec / (prec + rec)


def main() -> None:
    from theremin.codec.midichar import MidiChar
    from theremin.music.midi import MidiError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pattern", help="quoted glob, ** allowed")
    ap.add_argument("--performances", action="store_true", help="use the targets for performance files")
    args = ap.parse_args()
    files = sorted(glob.glob(args.pattern, recursive=True))
    codec = MidiChar()
    on, both, notes, chars, escapes, refused = [], [], 0, 0, 0, {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rt.mid"
        for f in files:
            try:
                text = codec.encode_file(f)
            except MidiError as e:
                refused[f] = e.reason
                continue
            codec.decode_to_file(text, out)
            ri, rp = seconds_notes(f)
            ei, ep = seconds_notes(out)
            on.append(f1(ri, rp, ei, ep, None))
            both.append(f1(ri, rp, ei, ep, 0.2))
            n = codec.count_notes(text)
            notes, chars, escapes = notes + n, chars + len(text), escapes + len(text) - n
    need = (0.99, 0.95) if args.performances else (0.999, 0.99)
    a, b = float(np.mean(on)), float(np.mean(both))
    print(f"{len(on)} files ({len(refused)} refused), {notes} notes, {time.perf_counter() - t0:.1f} s")
    print(f"onset-F1        {a:.4f} (target >= {need[0]})  worst file {min(on):.4f}")
    print(f"onset+offset-F1 {b:.4f} (target >= {need[1]})  worst file {min(both):.4f}")
    print(f"chars per note  {chars / max(notes, 1):.4f}  (escape chars: {escapes / max(chars, 1):.2%} of the text)")
    for f, reason in refused.items():
        print(f"refused {f}: {reason}")


if __name__ == "__main__":
    main()

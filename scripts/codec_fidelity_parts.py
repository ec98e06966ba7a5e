"""Round-trip fidelity of midichar per instrument: ../shared/tools/codec_fidelity.py's method, note by part.

Usage: python scripts/codec_fidelity_parts.py NAME='GLOB' [NAME='GLOB' ...] [--no-instruments]

For each file: its notes (symusic, in seconds, tempo map applied) against those of
``MidiChar().decode_to_file(MidiChar().encode_file(file))`` read the same way, matched with mir_eval at its
standard tolerances (onset 50 ms; offsets max(50 ms, 20 % of the duration)) *within one instrument family*: a
note counts only if it comes back on its own General MIDI family (program // 8) or, for drums, on a drum part.
Reported per set: mean over files of instrument-onset-F1 and instrument-onset+offset-F1 over all notes, and
drums-onset-F1 over the drum notes of the files that have drums. ``--no-instruments`` measures the codec
without instruments (``MidiChar(instruments=False)``), the way it was before.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import warnings

import numpy as np

warnings.filterwarnings("ignore")


def family_notes(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Family ("drums" or GM family 0..15) → (intervals in seconds, pitches in Hz): notes of one pitch that
    start together on one track sound as one (the longest kept; two tracks of one family may double a line)."""
    import symusic

    sc = symusic.Score(path, ttype="second")
    longest: dict[tuple[str, int, float, int], float] = {}
    for i, t in enumerate(sc.tracks):
        fam = "drums" if t.is_drum else str(t.program // 8)
        for n in t.notes:
            key = (fam, i, round(n.time, 4), n.pitch)
            longest[key] = max(longest.get(key, 0.0), n.duration)
    out: dict[str, list] = {}
    for (fam, _, a, p), d in longest.items():
        out.setdefault(fam, []).append((a, a + d, p))
    return {fam: (np.array([[a, max(b, a + 1e-3)] for a, b, _ in ns]).reshape(-1, 2),
                  np.array([440.0 * 2 ** ((p - 69) / 12) for _, _, p in ns])) for fam, ns in out.items()}


def hits(ref, est, offset_ratio) -> int:
    """Matched notes (mir_eval), pitch by pitch (only notes of one pitch can match; no N x N matrices)."""
    import mir_eval

    (ri, rp), (ei, ep) = ref, est
    n = 0
    for p in np.unique(rp):
        r, e = rp == p, ep == p
        if e.any():
            n += len(mir_eval.transcription.match_notes(ri[r], rp[r], ei[e], ep[e], offset_ratio=offset_ratio))
    return n


def f1(h: int, n_ref: int, n_est: int) -> float:
    if h == 0:
        return 0.0
    p, r = h / max(n_est, 1), h / max(n_ref, 1)
    return 2 * p * r / (p + r)


def measure(files: list[str], instruments: bool = True) -> dict:
    from theremin import MidiChar

    codec = MidiChar(instruments=instruments)
    on, off, drums, notes, refused = [], [], [], 0, []
    empty = (np.zeros((0, 2)), np.zeros(0))
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "rt.mid")
        for f in files:
            ref = family_notes(f)
            n_ref = sum(len(v[1]) for v in ref.values())
            if not n_ref:
                continue
            try:
                codec.decode_to_file(codec.encode_file(f), out)
                est = family_notes(out)
            except Exception as e:  # a failed round trip scores zero on that file
                refused.append(f"{os.path.basename(f)}: {type(e).__name__}: {e}"[:200])
                est = {}
            n_est = sum(len(v[1]) for v in est.values())
            h_on = sum(hits(ref[k], est.get(k, empty), None) for k in ref)
            h_off = sum(hits(ref[k], est.get(k, empty), 0.2) for k in ref)
            on.append(f1(h_on, n_ref, n_est))
            off.append(f1(h_off, n_ref, n_est))
            if "drums" in ref:
                h = hits(ref["drums"], est.get("drums", empty), None)
                drums.append(f1(h, len(ref["drums"][1]), len(est.get("drums", empty)[1])))
            notes += n_ref
    return {"files": len(on), "notes": notes, "onset_f1": float(np.mean(on)) if on else float("nan"),
            "onset_offset_f1": float(np.mean(off)) if off else float("nan"),
            "drum_files": len(drums), "drums_f1": float(np.mean(drums)) if drums else float("nan"),
            "refused": refused}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="+", help="NAME='GLOB' (quoted; ** allowed)")
    ap.add_argument("--no-instruments", action="store_true", help="the codec without instruments")
    args = ap.parse_args(argv)
    print("| set | files | notes | instrument-onset-F1 | instrument-onset+offset-F1 | drum files | drums-F1 |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.sets:
        name, _, pattern = spec.partition("=")
        files = sorted(glob.glob(pattern, recursive=True))
        if not files:
            print(f"{name}: no files match {pattern!r}", file=sys.stderr)
            return 2
        m = measure(files, instruments=not args.no_instruments)
        print(f"| {name} | {m['files']} | {m['notes']:,} | {m['onset_f1']:.4f} | {m['onset_offset_f1']:.4f} | "
              f"{m['drum_files']} | {m['drums_f1']:.4f} |")
        for r in m["refused"]:
            print(f"  round trip failed: {r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

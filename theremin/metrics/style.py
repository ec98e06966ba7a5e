"""Does it sound like the corpus, and is it new? Metrics for generated samples against the training corpus.

Style (after Yang & Lerch 2020, "On the evaluation of generative models in music"): features of the samples
and of the corpus are compared as distributions; the overlapping area (OA) of two distributions is 1.0 when
they are identical and 0.0 when they share nothing.

- pooled histograms over all notes: pitch class (12 bins), melodic interval (highest note of each onset, in
  onset order, differences clipped to ±24: 49 bins). OA = sum of the bin-wise minimum of the normalised
  histograms; KL(samples ‖ corpus) with the probabilities smoothed, so a bin the corpus never uses costs a
  large but finite amount;
- one number per piece: note density (notes per beat over the piece's span, first onset to last note end),
  pitch range (semitones), mean duration (beats), polyphony (notes per distinct onset). OA = integral of the
  minimum of two Gaussian KDEs (Scott's bandwidth) on a shared grid; with fewer than two values or zero
  spread on a side, a KDE is undefined and a histogram OA over shared bins stands in.

Texture (does a continuation keep the prompt's chords on the beat, or scatter notes between beats?), pooled
over all notes of a set of pieces: ``texture/on_beat``, the share of note onsets on a quarter-note beat (grid
position a multiple of ``codec.grid``; positions count from the piece's tick 0, which is on a beat in a
MIDI file); ``texture/simultaneous``, the mean number of notes sounding at each distinct onset (notes whose
[start, end) covers it, those starting there included: a held note counts at every later onset it spans).
Notes per onset without held notes is the ``polyphony`` feature above. :func:`texture_figures` gives the same
figures of corpus pieces (e.g. the val split), to print next to those of samples.

Memorisation: the longest run of consecutive notes of a sample that occurs verbatim in one training piece
(:class:`CopyIndex`, a suffix array over the corpus). See :class:`CopyIndex` for what "verbatim" means.

With ``prompt_notes`` (notes of each sample that came from a prompt), everything is measured on the generated
part only: a continuation of a corpus prompt would otherwise "copy" its prompt and inherit its style.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from theremin.codec.midichar import MidiChar
from theremin.errors import ThereminError
from theremin.metrics.copies import CopyIndex
from theremin.metrics.notes import _generated, decode_notes, pitched
from theremin.music.midi import PROMPT_NOTES_MARKER, is_midi_path

PITCH_CLASSES = 12
MAX_INTERVAL = 24  # melodic intervals beyond two octaves are clipped into the end bins
KL_EPS = 1e-3  # probability mass mixed into every bin before KL (see _kl)
KDE_POINTS = 2048
SCALAR_FEATURES = ("note_density", "pitch_range", "duration", "polyphony")

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it



# ------------------------------------------------------------------------------------------------ notes








# ------------------------------------------------------------------------------------------------ features


def pitch_class_histogram(pieces: Sequence[np.ndarray]) -> np.ndarray:
    counts = np.zeros(PITCH_CLASSES, dtype=np.int64)
    for n in pieces:
        counts += np.bincount(pitched(n)[:, 2] % PITCH_CLASSES, minlength=PITCH_CLASSES)
    return counts


def melody(notes: np.ndarray) -> np.ndarray:
    """Pitch of the highest pitched (not drum) note of each onset, in onset order."""
    notes = pitched(notes)
    if not len(notes):
        return notes[:, 2]
    order = np.lexsort((notes[:, 2], notes[:, 0]))  # by onset, then pitch: the last of each onset is highest
    pos, pitch = notes[order, 0], notes[order, 2]
    last = np.append(pos[1:] != pos[:-1], True)
    return pitch[last]


def interval_histogram(pieces: Sequence[np.ndarray]) -> np.ndarray:
    counts = np.zeros(2 * MAX_INTERVAL + 1, dtype=np.int64)
    for n in pieces:
        d = np.clip(np.diff(melody(n)), -MAX_INTERVAL, MAX_INTERVAL)
        counts += np.bincount(d + MAX_INTERVAL, minlength=len(counts))
    return counts


def piece_features(notes: np.ndarray, grid: int) -> dict[str, float] | None:
    """The per-piece scalar features; None for a piece without notes (it has none of them)."""
    if not len(notes):
        return None
    pos, dur, pitch = notes[:, 0], notes[:, 1], notes[:, 2]
    span_beats = (int((pos + dur).max()) - int(pos.min())) / grid  # leading silence is not sparseness
    return {
        "note_density": len(notes) / span_beats,
        "pitch_range": float(pitch.max() - pitch.min()),
        "duration": float(dur.mean()) / grid,
        "polyphony": len(notes) / len(np.unique(pos)),
    }


def onset_counts(notes: np.ndarray, grid: int) -> tuple[int, int, int, int]:
    """(notes, notes on a beat, distinct onsets, notes sounding summed over the distinct onsets) of a piece."""
    if not len(notes):
        return 0, 0, 0, 0
    pos = notes[:, 0]
    onsets = np.unique(pos)
    # sounding at t: started at or before t and not yet ended (end > t); every duration is >= 1 step
    sounding = (np.searchsorted(np.sort(pos), onsets, side="right")
                - np.searchsorted(np.sort(pos + notes[:, 1]), onsets, side="right"))
    return len(notes), int(np.count_nonzero(pos % grid == 0)), len(onsets), int(sounding.sum())


def texture(pieces: Sequence[np.ndarray], grid: int) -> dict[str, float]:
    """``texture/on_beat`` and ``texture/simultaneous`` pooled over the pieces' notes; 0.0 without notes."""
    n, on_beat, onsets, sounding = np.sum([(0, 0, 0, 0), *(onset_counts(p, grid) for p in pieces)], axis=0)
    return {"texture/on_beat": float(on_beat / n) if n else 0.0,
            "texture/simultaneous": float(sounding / onsets) if onsets else 0.0}


def texture_figures(texts: Sequence[str], codec: MidiChar | None = None,
                    prompt_notes: Sequence[int] | None = None) -> dict[str, float]:
    """The texture figures of midichar texts (corpus pieces, or samples after their ``prompt_notes``):
    the same numbers :func:`evaluate` reports for samples, for a reference set to print beside them."""
    codec = codec or MidiChar()
    skips = list(prompt_notes) if prompt_notes is not None else [0] * len(texts)
    if len(skips) != len(texts):
        raise ValueError(f"prompt_notes has {len(skips)} entries for {len(texts)} texts")
    return texture([_generated(decode_notes(t, codec), k) for t, k in zip(texts, skips)], codec.grid)


# ------------------------------------------------------------------------------------------------ overlaps


def histogram_overlap(p: np.ndarray, q: np.ndarray) -> float:
    """Sum of the bin-wise minimum of two histograms, each normalised; 0.0 when either is empty."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0
    return float(np.minimum(p / p.sum(), q / q.sum()).sum())


def _kl(p: np.ndarray, q: np.ndarray, eps: float = KL_EPS) -> float:
    """KL(p ‖ q) in nats of two histograms, each normalised then mixed with ``eps`` per bin.

    Smoothing the probabilities (not the counts) keeps the result independent of how many notes each side
    has; a bin holding mass p that the corpus never uses costs about p·log(p/eps).
    """
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0 if p.sum() == q.sum() == 0 else math.log(1 / eps)  # nothing to compare: worst-ish, finite
    k = len(p)
    p = (p / p.sum() + eps) / (1 + k * eps)
    q = (q / q.sum() + eps) / (1 + k * eps)
    return float(max(0.0, np.sum(p * np.log(p / q))))


def _kde(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """1-D Gaussian KDE with Scott's bandwidth (what scipy.stats.gaussian_kde does by default), on x."""
    bw = values.std(ddof=1) * len(values) ** (-1 / 5)
    out = np.zeros_like(x)
    for chunk in np.array_split(values, max(1, len(values) * len(x) // 4_000_000)):  # bound the memory
        out += np.exp(-0.5 * ((x[:, None] - chunk[None, :]) / bw) ** 2).sum(axis=1)
    return out / (len(values) * bw * math.sqrt(2 * math.pi))


def _histogram_oa(a: np.ndarray, b: np.ndarray) -> float:
    both = np.concatenate([a, b])
    if np.ptp(both) == 0:
        return 1.0  # every value on both sides is the same
    edges = np.histogram_bin_edges(both, bins="auto")
    if len(edges) > 65:
        edges = np.linspace(both.min(), both.max(), 65)
    return histogram_overlap(np.histogram(a, edges)[0], np.histogram(b, edges)[0])


def kde_overlap(a: Sequence[float], b: Sequence[float], points: int = KDE_POINTS) -> float:
    """Overlapping area of the KDEs of two samples of a scalar: the integral of min(p, q), in [0, 1].

    Falls back to a histogram OA over shared bins when a KDE is undefined (fewer than two values or zero
    spread on a side); 0.0 when a side has no values at all.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not len(a) or not len(b):
        return 0.0
    if len(a) < 2 or len(b) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return _histogram_oa(a, b)
    bw = max(x.std(ddof=1) * len(x) ** (-1 / 5) for x in (a, b))
    x = np.linspace(min(a.min(), b.min()) - 4 * bw, max(a.max(), b.max()) + 4 * bw, points)
    p, q = _kde(a, x), _kde(b, x)
    # renormalise on the grid: the grid's discretisation error then cancels instead of inflating the OA
    p, q = p / _trapezoid(p, x), q / _trapezoid(q, x)
    return float(np.clip(_trapezoid(np.minimum(p, q), x), 0.0, 1.0))


def pitch_class_overlap(samples: Sequence[str], corpus: Sequence[str], codec: MidiChar | None = None) -> float:
    """Histogram intersection of the pooled, normalised pitch-class histograms of samples and corpus."""
    codec = codec or MidiChar()
    return histogram_overlap(pitch_class_histogram([decode_notes(t, codec) for t in samples]),
                             pitch_class_histogram([decode_notes(t, codec) for t in corpus]))


# ------------------------------------------------------------------------------------------------ copying
























# ------------------------------------------------------------------------------------------------ evaluate


def evaluate(
    samples: Sequence[str],
    corpus: Sequence[str],
    codec: MidiChar | None = None,
    prompt_notes: Sequence[int] | None = None,
    *,
    index: CopyIndex | None = None,
    any_key: bool = True,
) -> dict[str, float]:
    """All metrics as a flat dict of floats with stable keys (``style/...``, ``texture/...``, ``memo/...``,
    ``samples/...``, ``corpus/...``; the corpus's texture is ``corpus/on_beat`` and ``corpus/simultaneous``).

    ``prompt_notes[i]``: notes at the start of sample i that came from a prompt; they are left out of every
    metric. ``index``: a :class:`CopyIndex` already built on ``corpus`` (reuse it across calls); with
    ``any_key`` (and an index built with it) the transposition-invariant copy length is reported too.
    """
    codec = codec or MidiChar()
    if prompt_notes is not None and len(prompt_notes) != len(samples):
        raise ValueError(f"prompt_notes has {len(prompt_notes)} entries for {len(samples)} samples")
    skips = list(prompt_notes) if prompt_notes is not None else [0] * len(samples)
    full = [decode_notes(t, codec) for t in samples]
    gen = [_generated(n, k) for n, k in zip(full, skips)]
    ref = [decode_notes(t, codec) for t in corpus]
    if index is None:
        index = CopyIndex.from_notes(ref, codec, any_key=any_key)
    elif index.n_pieces != len(ref):
        raise ValueError(f"the CopyIndex holds {index.n_pieces} pieces, the corpus {len(ref)}")
    any_key = any_key and index.any_key

    out: dict[str, float] = {}
    pc_s, pc_c = pitch_class_histogram(gen), pitch_class_histogram(ref)
    iv_s, iv_c = interval_histogram(gen), interval_histogram(ref)
    out["style/pitch_class_overlap"] = histogram_overlap(pc_s, pc_c)
    out["style/pitch_class_kl"] = _kl(pc_s, pc_c)
    out["style/interval_oa"] = histogram_overlap(iv_s, iv_c)
    out["style/interval_kl"] = _kl(iv_s, iv_c)
    feats_s = [f for f in (piece_features(n, codec.grid) for n in gen) if f]
    feats_c = [f for f in (piece_features(n, codec.grid) for n in ref) if f]
    for name in SCALAR_FEATURES:
        a, b = [f[name] for f in feats_s], [f[name] for f in feats_c]
        out[f"style/{name}_oa"] = kde_overlap(a, b)
        out[f"samples/{name}_mean"] = float(np.mean(a)) if a else 0.0
        out[f"corpus/{name}_mean"] = float(np.mean(b)) if b else 0.0
    out.update(texture(gen, codec.grid))
    out.update({f"corpus/{k.split('/')[1]}": v for k, v in texture(ref, codec.grid).items()})

    lengths, fractions, key_lengths = [], [], []
    for n_full, n, k in zip(full, gen, skips):
        m = index.find(n_full, k)
        lengths.append(m.length)
        fractions.append(m.length / len(n) if len(n) else 0.0)
        if any_key:
            key_lengths.append(index.find(n_full, k, any_key=True).length)
    out["memo/longest_copied_notes_max"] = float(max(lengths, default=0))
    out["memo/longest_copied_notes_mean"] = float(np.mean(lengths)) if lengths else 0.0
    out["memo/copied_fraction"] = float(np.mean(fractions)) if fractions else 0.0
    if any_key:
        out["memo/longest_copied_notes_any_key_max"] = float(max(key_lengths, default=0))
        out["memo/longest_copied_notes_any_key_mean"] = float(np.mean(key_lengths)) if key_lengths else 0.0
    out["samples/count"] = float(len(samples))
    out["samples/notes_mean"] = float(np.mean([len(n) for n in gen])) if gen else 0.0
    out["corpus/pieces"] = float(len(corpus))
    out["corpus/notes"] = float(sum(len(n) for n in ref))
    return out


# ------------------------------------------------------------------------------------------------ corpus + CLI








def _sample_files(paths: Sequence[str]) -> list[Path]:

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and is_midi_path(f))
        elif p.exists():
            out.append(p)
        else:
            raise ThereminError(f"{p}: no such file or folder")
    return out


def marked_prompt_notes(path: str | Path) -> int | None:
    """How many of a MIDI file's notes came from a prompt, as theremin-generate marks it in each variation
    (``prompt notes: N`` marker, see theremin.music.midi.PROMPT_NOTES_MARKER); None when the file has no mark."""
    from symusic import Score


    try:
        markers = Score(str(path)).markers
    except Exception:  # unreadable: encode_file has already said why (it runs first)
        return None
    for m in markers:
        key, _, value = m.text.partition(":")
        if key.strip() == PROMPT_NOTES_MARKER and value.strip().isdigit():
            return int(value)
    return None


def _crop(text: str, codec: MidiChar, notes: int) -> str:
    """The text up to (not including) its notes beyond the first ``notes``."""
    seen = 0
    for i, ch in enumerate(text):
        if codec.is_note(ch):
            if seen == notes:
                return text[:i]
            seen += 1
    return text

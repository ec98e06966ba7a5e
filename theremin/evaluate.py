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

import argparse
import bisect
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from theremin.cli import ThereminError, run_cli
from theremin.corpus import load_manifest
from theremin.midichar import MidiChar

PITCH_CLASSES = 12
MAX_INTERVAL = 24  # melodic intervals beyond two octaves are clipped into the end bins
KL_EPS = 1e-3  # probability mass mixed into every bin before KL (see _kl)
KDE_POINTS = 2048
SCALAR_FEATURES = ("note_density", "pitch_range", "duration", "polyphony")

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it

# symbol packing for CopyIndex: fields are clipped to 24 bits (a gap or duration of 2^24 grid steps is
# already absurd), so a note fits one non-negative int64 and the separator value is never produced
_FIELD = (1 << 24) - 1
_SEP = (1 << 63) - 1


# ------------------------------------------------------------------------------------------------ notes


def decode_notes(text: str, codec: MidiChar) -> np.ndarray:
    """(n, 4) int64 array of (position, duration, pitch, velocity_index) in text order, grid units.

    Invalid characters (an unconstrained model sample) are skipped rather than failing the evaluation.
    """
    notes, _ = codec.decode_grid(text, errors="skip")
    return np.asarray(notes, dtype=np.int64).reshape(-1, 4)


def _generated(notes: np.ndarray, skip: int) -> np.ndarray:
    return notes[max(0, int(skip)):]


def _gaps(notes: np.ndarray) -> np.ndarray:
    """Grid steps from the previous note's onset (from position 0 for the first note)."""
    pos = notes[:, 0]
    return np.diff(pos, prepend=0) if len(pos) else pos


# ------------------------------------------------------------------------------------------------ features


def pitch_class_histogram(pieces: Sequence[np.ndarray]) -> np.ndarray:
    counts = np.zeros(PITCH_CLASSES, dtype=np.int64)
    for n in pieces:
        counts += np.bincount(n[:, 2] % PITCH_CLASSES, minlength=PITCH_CLASSES)
    return counts


def melody(notes: np.ndarray) -> np.ndarray:
    """Pitch of the highest note of each onset, in onset order."""
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


@dataclass(frozen=True)
class CopyMatch:
    length: int  # notes
    piece: int  # corpus piece index (-1 when length == 0)
    piece_note: int  # index of the run's first note in that piece
    sample_note: int  # index of the run's first note in the sample (after skipped prompt notes)
    transpose: int = 0  # semitones from the corpus run to the sample's run (any_key matches only)


_NO_MATCH = CopyMatch(0, -1, -1, -1)


class _SuffixArray:
    """Suffix array over rows of int64 words (one row per symbol), queried with byte-string comparisons.

    Each symbol is stored as its words in big-endian unsigned form, so comparing byte strings compares symbol
    sequences lexicographically (all words are non-negative); the array is built by prefix doubling with
    numpy sorts, O(n log n log L) for L the longest repeat.
    """

    def __init__(self, words: np.ndarray):
        self.width = 8 * words.shape[1]
        self.data = words.astype(">u8").tobytes()
        self.sa = _suffix_array(words)

    def longest(self, query: bytes) -> tuple[int, int, int]:
        """(symbols, corpus start, query start) of the longest common substring of the query and the data.

        For each query start, the suffix of greatest common prefix sits next to the query's insertion point
        in the sorted suffixes; starts that cannot beat the best so far are skipped.
        """
        w, data, sa = self.width, self.data, self.sa
        m = len(query) // w
        best = (0, -1, -1)
        if not len(sa):
            return best
        for i in range(m):
            if m - i <= best[0]:
                break
            q = query[i * w:]
            k = bisect.bisect_left(sa, q, key=lambda p: data[p * w:p * w + len(q)])
            for j in (k - 1, k):
                if 0 <= j < len(sa):
                    start = int(sa[j])
                    n = _common_symbols(q, data, start * w, w)
                    if n > best[0]:
                        best = (n, start, i)
        return best


def _common_symbols(q: bytes, data: bytes, at: int, w: int) -> int:
    """How many whole symbols of q match data from byte ``at`` (binary search on equal prefixes)."""
    lo, hi = 0, min(len(q), len(data) - at) // w
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if data[at:at + mid * w] == q[:mid * w]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _dense_rank(sorted_rows: np.ndarray) -> np.ndarray:
    if sorted_rows.ndim == 1:
        change = sorted_rows[1:] != sorted_rows[:-1]
    else:
        change = np.any(sorted_rows[1:] != sorted_rows[:-1], axis=1)
    return np.concatenate(([0], np.cumsum(change)))


def _suffix_array(words: np.ndarray) -> np.ndarray:
    n = len(words)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort(words.T[::-1])  # first column is the primary key
    rank = np.empty(n, dtype=np.int64)
    rank[order] = _dense_rank(words[order])
    k = 1
    while rank.max() < n - 1:  # ranks of 2k-symbol prefixes from pairs of k-symbol ranks
        second = np.full(n, -1, dtype=np.int64)
        second[:n - k] = rank[k:]
        key = rank * (n + 1) + second + 1
        order = np.argsort(key, kind="stable")
        rank[order] = _dense_rank(key[order])
        k *= 2
    sa = np.empty(n, dtype=np.int64)
    sa[rank] = np.arange(n)
    return sa


def _nonpitch(notes: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    return (np.minimum(gaps, _FIELD) << 31) | (np.minimum(notes[:, 1], _FIELD) << 7) | notes[:, 3]


def _exact_symbols(notes: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    return ((_nonpitch(notes, gaps) << 7) | notes[:, 2])[:, None]


def _any_key_symbols(notes: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """One symbol per pair of consecutive notes: (rhythm of the first, rhythm of the second + interval).

    k matching symbols in a row = k + 1 notes equal up to one transposition, with no off-by-one at the
    run's first note (its gap, duration and velocity are in the first symbol too).
    """
    if len(notes) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    rhythm = _nonpitch(notes, gaps)
    interval = np.diff(notes[:, 2]) + 128
    return np.stack([rhythm[:-1], (rhythm[1:] << 8) | interval], axis=1)


class CopyIndex:
    """Finds the longest run of a sample's notes that occurs verbatim in one corpus piece.

    "Verbatim": the same notes in the same text order (the canonical midichar order: by onset, then rising
    pitch), each with the same pitch, the same duration in grid steps, the same velocity level and the same
    gap in grid steps since the previous note's onset. This is equality of the note characters with their
    REST and DUR_EXT characters folded in (a note after a longer rest, or a longer note, is a different
    note); tempo characters are ignored. The first note of a run must match its gap too, so a phrase copied
    after different material matches from its first note only if it enters with the same timing.

    ``any_key=True`` also indexes runs equal up to one transposition of the whole run (the corpus may have
    been trained with transposition augmentation); such runs are counted from two notes.

    The index is a suffix array over all pieces' notes (pieces separated by a symbol no note equals, so a
    run never spans two pieces): about a second to build for 100k notes, milliseconds per 100-note sample.
    """

    def __init__(self, corpus: Sequence[str], codec: MidiChar | None = None, *, any_key: bool = False):
        codec = codec or MidiChar()
        self._build([decode_notes(t, codec) for t in corpus], any_key)
        self.codec = codec

    @classmethod
    def from_notes(cls, pieces: Sequence[np.ndarray], codec: MidiChar, *, any_key: bool = False) -> CopyIndex:
        """From already decoded pieces (see :func:`decode_notes`)."""
        self = cls.__new__(cls)
        self._build(pieces, any_key)
        self.codec = codec
        return self

    def _build(self, pieces: Sequence[np.ndarray], any_key: bool) -> None:
        self.n_pieces = len(pieces)
        self.n_notes = int(sum(len(n) for n in pieces))
        self.any_key = any_key
        self._exact = self._index(pieces, _exact_symbols, 1)
        self._key = self._index(pieces, _any_key_symbols, 2) if any_key else None

    @staticmethod
    def _index(pieces, symbols, width: int):
        rows, offsets, pitches = [], [], []
        total = 0
        for n in pieces:
            s = symbols(n, _gaps(n))
            offsets.append(total)
            rows += [s, np.full((1, width), _SEP, dtype=np.int64)]
            pitches += [n[:len(s), 2], np.zeros(1, dtype=np.int64)]
            total += len(s) + 1
        words = np.concatenate(rows) if rows else np.zeros((0, width), dtype=np.int64)
        pitch = np.concatenate(pitches) if pitches else np.zeros(0, dtype=np.int64)
        return _SuffixArray(words), np.asarray(offsets, dtype=np.int64), pitch

    def find(self, sample: str | np.ndarray, skip_notes: int = 0, any_key: bool = False) -> CopyMatch:
        """The longest verbatim run (or, with ``any_key``, run up to transposition) of the sample's notes
        after its first ``skip_notes`` (a prompt); ties go to the run that starts earliest in the sample.
        ``sample``: a midichar text or decoded notes (see :func:`decode_notes`)."""
        notes = decode_notes(sample, self.codec) if isinstance(sample, str) else np.asarray(sample, np.int64)
        gaps = _gaps(notes)[max(0, int(skip_notes)):]  # the first generated note keeps its gap from the prompt
        notes = _generated(notes, skip_notes)
        exact = self._search(self._exact, _exact_symbols(notes, gaps), notes, extra=0)
        if not any_key:
            return exact
        if self._key is None:
            raise ValueError("this CopyIndex was built without any_key=True")
        match = self._search(self._key, _any_key_symbols(notes, gaps), notes, extra=1)
        return match if match.length > exact.length else exact  # a 1-note run has no interval to compare

    @staticmethod
    def _search(index, symbols: np.ndarray, notes: np.ndarray, extra: int) -> CopyMatch:
        sa, offsets, pitch = index
        n, start, at = sa.longest(symbols.astype(">u8").tobytes())
        if n == 0:
            return _NO_MATCH
        piece = int(np.searchsorted(offsets, start, side="right")) - 1
        return CopyMatch(n + extra, piece, start - int(offsets[piece]), at, int(notes[at, 2] - pitch[start]))


def longest_copied_run(sample_text: str, index: CopyIndex, skip_notes: int = 0) -> tuple[int, int]:
    """(length in notes, corpus piece index) of the longest verbatim run; (0, -1) when nothing matches."""
    m = index.find(sample_text, skip_notes)
    return m.length, m.piece


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


def corpus_codec(corpus_dir: str | Path) -> MidiChar:
    """The codec a corpus was built with (from its manifest), else the default codec."""
    m = load_manifest(Path(corpus_dir))
    cfg = ((m or {}).get("codec") or {}).get("config")
    return MidiChar(**cfg) if cfg else MidiChar()


def load_corpus(
    corpus_dir: str | Path, split: str = "train", limit: int | None = None, augmented: bool = False
) -> list[str]:
    """The pieces of ``split`` (one midichar text per line of ``<split>.txt``), at most ``limit``.

    Without ``augmented``, transposed copies made by the corpus build are left out when the manifest says
    which lines they are (the first line of each file's block is the original): a style reference with all
    twelve keys would flatten the pitch-class histogram, and the copy index would be 12x larger.
    """
    corpus_dir = Path(corpus_dir)
    path = corpus_dir / f"{split}.txt"
    if not path.exists():
        raise ThereminError(f"{path}: no such corpus split (expected {split}.txt in {corpus_dir})")
    lines = [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln]
    m = load_manifest(corpus_dir)
    if not augmented and m and (m.get("settings") or {}).get("transpose"):
        blocks = [int(r.get("lines", 1)) for r in m.get("files", []) if r.get("split") == split]
        if sum(blocks) == len(lines):  # otherwise the manifest is not about this file: keep every line
            starts = np.cumsum([0, *blocks[:-1]])
            lines = [lines[s] for s in starts]
    return lines[:limit] if limit is not None else lines


def _split_paths(corpus_dir: Path, split: str) -> list[str] | None:
    m = load_manifest(corpus_dir)
    return [r["path"] for r in m.get("files", []) if r.get("split") == split] if m else None


def _sample_files(paths: Sequence[str]) -> list[Path]:
    from theremin.midi import is_midi_path

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
    (``prompt notes: N`` marker, see theremin.sample.PROMPT_NOTES_MARKER); None when the file has no mark."""
    from symusic import Score

    from theremin.sample import PROMPT_NOTES_MARKER

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


def _table(columns: dict[str, dict[str, float]]) -> str:
    keys = list(next(iter(columns.values())))
    names = list(columns)
    kw = max(len(k) for k in keys)
    head = f"{'metric':<{kw}}  " + "  ".join(f"{n:>12}" for n in names)
    rows = [head, "-" * len(head)]
    for k in keys:
        cells = []
        for n in names:
            v = columns[n].get(k)
            cells.append(f"{'':>12}" if v is None else f"{v:>12.4g}")
        rows.append(f"{k:<{kw}}  " + "  ".join(cells))
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("theremin-evaluate", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(
        prog="theremin-evaluate",
        description="Style and memorisation metrics of generated samples against a corpus's train split. "
                    "The val split (real music the model never saw, cropped to the samples' length) is shown "
                    "alongside as a reference: what 'sounds like the corpus' and 'chance copying' look like.")
    p.add_argument("samples", nargs="*", help="sample MIDI files or folders of them")
    p.add_argument("--corpus", required=True, help="corpus folder (train.txt, val.txt, manifest.json)")
    p.add_argument("--samples-txt", action="append", default=[], metavar="FILE",
                   help="midichar samples, one per line (repeatable)")
    p.add_argument("--prompt-notes", type=int, default=None, metavar="N",
                   help="the first N notes of every sample came from a prompt: leave them out (default: the "
                        "number theremin-generate marks in each MIDI file, else 0)")
    p.add_argument("--split", default="train", help="corpus split to compare with (default: train)")
    p.add_argument("--limit", type=int, default=None, help="use at most this many corpus pieces")
    p.add_argument("--augmented", action="store_true", help="include transposed copies from the corpus build")
    p.add_argument("--no-reference", action="store_true", help="skip the val-split reference column")
    p.add_argument("--per-sample", action="store_true", help="list each sample's longest copied run")
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    args = p.parse_args(argv)

    from theremin.midi import MidiError

    corpus_dir = Path(args.corpus)
    codec = corpus_codec(corpus_dir)
    samples: list[str] = []
    names: list[str] = []
    prompts: list[int] = []
    for f in _sample_files(args.samples):
        try:
            samples.append(codec.encode_file(f))
        except MidiError as e:
            print(f"skipped: {e}", file=sys.stderr)
            continue
        names.append(str(f))
        prompts.append(args.prompt_notes if args.prompt_notes is not None else marked_prompt_notes(f) or 0)
    for txt in args.samples_txt:
        try:
            lines = [ln for ln in Path(txt).read_text(encoding="utf-8").split("\n") if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise ThereminError(f"--samples-txt {txt}: cannot be read ({e})") from None
        samples += lines
        names += [f"{txt}:{i + 1}" for i in range(len(lines))]
        prompts += [args.prompt_notes or 0] * len(lines)
    if not samples:
        raise ThereminError("no samples: give MIDI files/folders or --samples-txt")

    corpus = load_corpus(corpus_dir, args.split, args.limit, args.augmented)
    index = CopyIndex(corpus, codec, any_key=True)
    columns = {"samples": evaluate(samples, corpus, codec, prompts, index=index)}
    val_path = corpus_dir / "val.txt"
    if not args.no_reference and args.split != "val" and val_path.exists():
        val = load_corpus(corpus_dir, "val")
        if val:
            length = int(np.median([max(1, codec.count_notes(s) - k) for s, k in zip(samples, prompts)]))
            val = [_crop(v, codec, length) for v in val]
            columns["val (ref)"] = evaluate(val, corpus, codec, index=index)
    print(_table(columns))

    if args.per_sample:
        paths = _split_paths(corpus_dir, args.split)
        if paths and len(paths) != len(load_corpus(corpus_dir, args.split, None, args.augmented)):
            paths = None  # lines are not one per file (augmented, or a manifest of another build)
        print()
        for name, s, k in zip(names, samples, prompts):
            m = index.find(s, k)
            src = paths[m.piece] if paths and 0 <= m.piece < len(paths) else f"piece {m.piece}"
            where = f"from {src} (note {m.piece_note})" if m.length else ""
            print(f"{m.length:5d} notes copied  {name}  {where}")
    if args.json:
        Path(args.json).write_text(json.dumps(columns, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

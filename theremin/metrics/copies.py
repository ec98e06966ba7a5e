"""Memorisation: the longest run of a sample's notes copied from a corpus (exact, or in any key), over a suffix
array of note symbols; :func:`copy_warnings` for rolls that copy whole bars."""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from theremin.codec.midichar import MidiChar
from theremin.metrics.notes import _gaps, _generated, decode_notes, load_corpus


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


# ---- sampling: how much of a roll is copied ---------------------------------------------------------------
@dataclass(frozen=True)
class Copied:
    notes: int  # the longest run of the roll's generated notes found verbatim in one training piece
    bars: float  # its length in bars (from the first note's onset to the last note's onset + 1 grid step)
    piece: int  # the training piece (line of train.txt, without transpositions), -1 when none

def copied_run(text: str, prompt_notes: int, index, codec, bar_steps: int) -> Copied:
    """The longest copied run of a roll (``index``: a theremin.metrics.copies.CopyIndex over the training corpus)."""

    m = index.find(text, prompt_notes)
    if m.length == 0:
        return Copied(0, 0.0, -1)
    notes = decode_notes(text, codec)[max(0, prompt_notes):]
    run = notes[m.sample_note: m.sample_note + m.length]
    span = int(run[-1, 0] - run[0, 0]) + 1 if len(run) else 0
    return Copied(int(m.length), span / max(1, bar_steps), int(m.piece))

def copy_warnings(texts: list[str], prompt_notes: int, corpus_dir: str | os.PathLike, codec,
                  time_signature: tuple[int, int] = (4, 4), warn_bars: float = 2.0) -> tuple[list[Copied], list[str]]:
    """Each roll's longest run copied from the training corpus, and a warning for each that copies more than
    ``warn_bars`` bars."""

    corpus = load_corpus(corpus_dir)
    index = CopyIndex(corpus, codec)
    num, den = time_signature
    bar_steps = round(codec.grid * 4 * num / den)
    runs = [copied_run(t, prompt_notes, index, codec, bar_steps) for t in texts]
    warnings = [f"variation {i + 1} copies {c.bars:.1f} bars ({c.notes} notes) verbatim from training piece "
                f"{c.piece + 1}: a small corpus is being quoted, not varied (try sampling=wild, a higher "
                "temperature, or an earlier checkpoint)" for i, c in enumerate(runs) if c.bars > warn_bars]
    return runs, warnings


# symbol packing for CopyIndex: fields are clipped to 24 bits (a gap or duration of 2^24 grid steps is
# already absurd), so a note fits one non-negative int64 and the separator value is never produced
_FIELD = (1 << 24) - 1

_SEP = (1 << 63) - 1

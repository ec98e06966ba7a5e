"""Sentencepiece BPE over midichar text, lossless for any text of codec characters, cached per corpus.

One line of the training file is one piece. BPE learns multi-note tokens (a chord, a motif). Two ways to
handle a note that is not a piece of the vocabulary (never seen in training, or too rare to keep):

- ``fallback="bytes"``: sentencepiece's byte fallback, 4 UTF-8 byte tokens per such note;
- ``fallback="factored"`` (default): before sentencepiece sees the text, such a note is replaced by a short
  sequence of *factor* characters from the BMP private-use area (U+E000..U+F8FF), one per group of its fields,
  by default ``step+vel, dur, pitch``. Every factor char is a piece, and training factors the rare notes too
  (``min_count``; and beyond ``char_budget`` of the vocab, the rarest), so BPE learns merges of factor
  sequences (a common step+duration becomes one token): an unseen note costs 2-3 tokens instead of 4, and
  a small vocab keeps room for merges. Decoding maps each complete factor group back to its note.

Byte fallback stays on in both modes, so rests, tempos or anything else outside the vocabulary still
round-trip: ``decode(encode(t)) == t`` for every text of codec characters.

``pitch="relative"`` (opt-in) codes each note's pitch as an interval before all that (see
:func:`to_relative`): chord shapes and bass motion become the same chars in every key, worth about +0.25
notes/token on held-out Bach at 8k (scripts/bench_compression.py). Each instrument part counts its intervals
from its own notes (a bass line and a melody interleaved keep their own), and drum notes keep their absolute
pitch (a drum sound is no interval); a text of one piano part is transformed as before parts existed. The
price: token meaning depends on earlier notes, so decode whole sequences (prompt + continuation); a
continuation decoded alone comes out transposed; and the GPT then models intervals, not absolute register.

Ids: sentencepiece's defaults, unk=0, bos=1, eos=2 (the GPT's piece boundaries), no pad; then 256 byte
pieces, then characters and merges. ``vocab_size`` counts all of them. A vocab size the corpus cannot
support is a ValueError naming the feasible range, checked before training where possible.

:func:`get_or_train` caches a model in a directory named from sha256(corpus bytes) and every setting that
changes the result (vocab size, options, codec config, :data:`FORMAT_VERSION`); a file lock keeps parallel
jobs from training the same one twice and the model is trained in a temp dir, then renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import sentencepiece as spm

from theremin.codec import cache
from theremin.codec.cache import META_FILE
from theremin.codec.midichar import BASE, DECL, SELECT, SOUNDS, MidiChar
from theremin.config import known_settings
from theremin.errors import ThereminError
from theremin.fsio import atomic_write, file_sha256
from theremin.music.midi import Note, Part, Piece

FORMAT_VERSION = 1
PLAN_VERSION = 2  # the char plan (_char_plan): 2 reserves a piece for each instrument switch of a multi-part corpus
MODEL_FILE = "spm.model"
N_META = 3 + 256  # unk, bos, eos + one piece per byte (byte_fallback)
FACTOR_LO, FACTOR_HI = 0xE000, 0xF8FF  # BMP private use: 3-byte UTF-8, never whitespace, never a midichar
NOTE_FIELDS = ("step", "dur", "vel", "pitch")

# Options of train()/get_or_train() and their defaults. Those in _RUNTIME_OPTIONS do not change the model,
# so they stay out of the cache key.
DEFAULT_OPTIONS: dict = {
    "fallback": "factored",  # "factored" | "bytes"
    "factor_layout": "step+vel,dur,pitch",  # factored: groups of note fields, one factor char per group
    "min_count": 2,  # factored: a note seen fewer times in the training text is factored there too
    "char_budget": 0.5,  # factored: single-char pieces take at most this share of the vocab (rarest notes
    #                       beyond it are factored), so even a small vocab keeps room for merges
    "pitch": "absolute",  # "relative": spm sees intervals (see to_relative), transposition-invariant
    "augment_transpose": None,  # [lo, hi]: also train on every piece transposed by lo..hi semitones
    "augment_time_scale": None,  # e.g. [2]: also train on every piece with note values scaled by 2
    "model_type": "bpe",
    "max_sentence_length": 1 << 24,  # bytes; raised to the longest line if needed (spm drops longer ones)
    "input_sentence_size": 0,  # 0 = every line; else spm samples this many lines
    "shuffle_input_sentence": True,
    "max_piece_length": 16,  # longest piece in chars (spm's max_sentencepiece_length)
    "hard_vocab_limit": True,  # False: spm may return a smaller vocab than asked instead of failing
    "num_threads": None,  # None = all cores
}
# sentencepiece 0.2.0-0.2.2 abort the process (a C++ check, no message) on a line over 65,535 symbols: a long
# performance is trained on in parts of at most this many characters (BPE only loses the pairs across a cut)
SPM_MAX_LINE = 65_535
_RUNTIME_OPTIONS = {"num_threads"}


class TokenizerError(ThereminError):
    """A tokenizer setting that cannot work, or a tokenizer that cannot be loaded; the message names it."""


def _norm_options(options: dict) -> dict:
    opts = {**DEFAULT_OPTIONS, **known_settings(DEFAULT_OPTIONS, options, "tokenizer", "a tokenizer setting",
                                                TokenizerError)}
    if opts["fallback"] not in ("factored", "bytes"):
        raise TokenizerError(f"tokenizer fallback must be 'factored' or 'bytes', got {opts['fallback']!r}")
    if opts["pitch"] not in ("absolute", "relative"):
        raise TokenizerError(f"tokenizer pitch must be 'absolute' or 'relative', got {opts['pitch']!r}")
    if opts["augment_time_scale"] is not None:
        opts["augment_time_scale"] = [float(f) for f in opts["augment_time_scale"]]
        if not all(f > 0 for f in opts["augment_time_scale"]):
            raise TokenizerError(f"augment_time_scale factors must be > 0, got {opts['augment_time_scale']}")
    if opts["augment_transpose"] is not None:
        lo, hi = (int(k) for k in opts["augment_transpose"])
        if lo > hi:
            raise TokenizerError(f"augment_transpose must be [lo, hi] with lo <= hi, got {[lo, hi]}")
        opts["augment_transpose"] = [lo, hi]
    if opts["fallback"] == "bytes":  # factor settings mean nothing there: keep them out of the cache key
        opts["factor_layout"] = opts["min_count"] = opts["char_budget"] = None
    else:
        opts["min_count"] = int(opts["min_count"])
        opts["char_budget"] = float(opts["char_budget"])
        if not 0 < opts["char_budget"] <= 1:
            raise TokenizerError(f"char_budget must be in (0, 1], got {opts['char_budget']}")
    return opts


def _has_parts(codec: MidiChar, text: str) -> bool:
    """Whether ``text`` holds a DECL or SELECT char (a part other than the one piano); a regex, not a loop."""
    if not codec.instruments:
        return False
    decl, name, sel, end = (chr(BASE + x) for x in (codec.decl_lo, codec.name_lo, codec.select_lo, codec.n_codes))
    return re.search(f"[{decl}-{chr(ord(name) - 1)}{sel}-{chr(ord(end) - 1)}]", text) is not None


def _relative(codec: MidiChar, text: str, forward: bool) -> str:
    """The pitch field of every note ↔ (pitch - reference) mod 128; all other fields and chars stay.

    Reference: for a note at the same grid position as the previous note of its part (a chord tone, canonical
    order rising), that note's pitch; for the first note of its part at a new position, the first (lowest) pitch
    of that part at its previous position; 60 for a part's first note. Chord shapes and bass motion become the
    same chars in every key. Each part keeps its own references (the part is the current one of
    :meth:`~theremin.codec.midichar.MidiChar.drum_flags`: the header's first DECL, then each SELECT's), so a bass
    line and a melody interleaved keep their own intervals; a note of a drum part keeps its absolute pitch (a drum
    sound is no interval) and moves no reference. A text with no DECL or SELECT char is one piano part: the
    transform is the single-instrument one. Times and parts are untouched, so decoding recomputes the same
    references: a bijection on any text.
    """
    lo, hi = chr(BASE), chr(BASE + codec.n_notes)
    rest_lo, ext_lo = BASE + codec.rest_lo, BASE + codec.ext_lo
    per_step, steps = len(codec.durations) * len(codec.velocities) * 128, codec.steps
    parts = _has_parts(codec, text)
    if parts:
        decl, name, sel, end = (BASE + x for x in (codec.decl_lo, codec.name_lo, codec.select_lo, codec.n_codes))
    others: dict[int, tuple] = {}  # part (SELECT code) → its (last_pos, prev, group_first) while another plays
    out = []
    pos, part, drum, declared = 0, 0, False, False
    last_pos, prev, group_first = None, 60, 60
    for ch in text:
        if lo <= ch < hi:
            code = ord(ch) - BASE
            pos += steps[code // per_step]
            if drum:
                out.append(ch)
                continue
            ref = group_first if pos != last_pos else prev
            pitch = code % 128
            new = (pitch - ref) % 128 if forward else (pitch + ref) % 128
            absolute = pitch if forward else new
            if pos != last_pos:
                group_first = absolute
            prev, last_pos = absolute, pos
            out.append(chr(BASE + code - pitch + new))
            continue
        o = ord(ch)
        if rest_lo <= o < ext_lo:
            pos += o - rest_lo + 1
        elif parts and (sel <= o < end or (decl <= o < name and not declared)):
            key = o - sel if o >= sel else o - decl  # a DECL's part is the first of its sound
            declared = declared or o < name
            others[part] = (last_pos, prev, group_first)
            last_pos, prev, group_first = others.pop(key, (None, 60, 60))
            part, drum = key, key % SOUNDS >= SOUNDS // 2
        out.append(ch)
    return "".join(out)


def to_relative(codec: MidiChar, text: str) -> str:
    return _relative(codec, text, True)


def to_absolute(codec: MidiChar, text: str) -> str:
    return _relative(codec, text, False)


def time_scaled(codec: MidiChar, text: str, factor: float) -> str:
    """The text with every onset and duration scaled by ``factor`` (re-quantised on the grid); parts stay."""

    piece = codec.decode(text)

    def sc(t: int) -> int:
        return round(t * factor)

    notes = [Note(sc(n.start), max(sc(n.end), sc(n.start) + 1), n.pitch, n.velocity, n.part) for n in piece.notes]
    return codec.encode(Piece(notes=notes, ticks_per_beat=piece.ticks_per_beat,
                              tempos=[(sc(t), us) for t, us in piece.tempos], parts=piece.parts))


class FactorCode:
    """The factor alphabet of a codec: a note ↔ one char per group of fields (mixed radix in each group)."""

    def __init__(self, codec: MidiChar, layout: str):
        radix = {"step": len(codec.steps), "dur": len(codec.durations), "vel": len(codec.velocities),
                 "pitch": 128}
        groups = [tuple(f.strip() for f in g.split("+")) for g in layout.split(",")]
        flat = [f for g in groups for f in g]
        if sorted(flat) != sorted(NOTE_FIELDS):
            raise TokenizerError(f"factor_layout {layout!r} must name each of {NOTE_FIELDS} exactly once")
        self.codec, self.layout, self.groups = codec, layout, groups
        self.sizes = [_prod(radix[f] for f in g) for g in groups]
        self.radix = radix
        self.starts = [FACTOR_LO + sum(self.sizes[:i]) for i in range(len(groups))]
        self.n_chars = sum(self.sizes)
        if FACTOR_LO + self.n_chars - 1 > FACTOR_HI:
            raise TokenizerError(f"factor_layout {layout!r} needs {self.n_chars} factor chars for this codec, "
                             f"more than the {FACTOR_HI - FACTOR_LO + 1} of U+E000..U+F8FF: use more groups")
        classes = "".join(f"([{chr(s)}-{chr(s + n - 1)}])" for s, n in zip(self.starts, self.sizes))
        self.group_re = re.compile(classes)
        self.any_re = re.compile(f"[{chr(FACTOR_LO)}-{chr(FACTOR_HI)}]")

    def chars(self) -> list[str]:
        return [chr(c) for c in range(FACTOR_LO, FACTOR_LO + self.n_chars)]

    def factor(self, note: str) -> str:
        fields = dict(zip(NOTE_FIELDS, self.codec.split_note(note)))
        out = []
        for g, start in zip(self.groups, self.starts):
            v = 0
            for f in g:
                v = v * self.radix[f] + fields[f]
            out.append(chr(start + v))
        return "".join(out)

    def unfactor(self, m: re.Match) -> str:
        fields = {}
        for i, g in enumerate(self.groups):
            v = ord(m.group(i + 1)) - self.starts[i]
            for f in reversed(g):
                v, fields[f] = divmod(v, self.radix[f])
        return self.codec.note_char(*(fields[f] for f in NOTE_FIELDS))


def _prod(xs: Iterable[int]) -> int:
    p = 1
    for x in xs:
        p *= x
    return p


class _FactorTable(dict):
    """str.translate table built lazily: a note char that is no piece → its factors; others stay."""

    def __init__(self, codec: MidiChar, factors: FactorCode, direct: set[str]):
        super().__init__()
        self.codec, self.factors, self.direct = codec, factors, direct

    def __missing__(self, o: int) -> str:
        ch = chr(o)
        if FACTOR_LO <= o <= FACTOR_HI:
            raise ValueError(f"U+{o:04X} lies in the tokenizer's factor range (U+E000..U+F8FF): not a midichar")
        out = self.factors.factor(ch) if self.codec.is_note(ch) and ch not in self.direct else ch
        self[o] = out
        return out


class MidiTokenizer:
    """A trained tokenizer: ``encode(text) -> ids``, ``decode(ids) -> text``; see the module docstring."""

    kind = "midichar"  # the tokenizer config's `kind` (theremin.codec.kinds; theremin.codec.remi's is "remi")

    def __init__(self, model_dir: str | os.PathLike | None, meta: dict, codec: MidiChar,
                 model_proto: bytes | None = None, source: str | None = None):
        """``model_dir`` holds spm.model; or ``model_proto`` is its bytes (``model_dir`` None: a tokenizer
        carried inside a checkpoint). ``source`` names where it came from in messages."""
        self.dir = Path(model_dir) if model_dir is not None else None
        self.source = source or str(self.dir)
        self.meta = meta
        self.codec = codec
        try:
            self.fallback = meta["options"]["fallback"]
            self.relative = meta["options"].get("pitch") == "relative"
        except (KeyError, TypeError, AttributeError):
            raise TokenizerError(f"{self.source}: {META_FILE} lacks the tokenizer's options: not a theremin "
                                 "tokenizer, or a damaged one (train it again)") from None
        if model_proto is None:
            model_proto = _read(self.dir / MODEL_FILE)
        self.model_proto = model_proto  # kept: a checkpoint carries these bytes (see theremin.model.checkpoint)
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except RuntimeError:
            raise TokenizerError(f"{self.source}: {MODEL_FILE} is not a sentencepiece model (damaged or cut off): "
                                 "delete the tokenizer folder to train it again") from None
        self.vocab_size = int(self.sp.get_piece_size())
        self.unk_id, self.bos_id, self.eos_id = self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id()
        self.from_cache = False  # get_or_train sets it when it reused a model
        pieces = [self.sp.id_to_piece(i) for i in range(self.vocab_size)]
        # byte pieces: id -> byte value; other pieces: id -> notes they complete (see note_counts)
        self._byte_of = {i: int(p[3:5], 16) for i, p in enumerate(pieces) if self.sp.is_byte(i)}
        self.factors = None
        if self.fallback == "factored":
            self.factors = FactorCode(codec, meta["options"]["factor_layout"])
            direct = {p for p in pieces if len(p) == 1 and codec.is_note(p)}
            self._table = _FactorTable(codec, self.factors, direct)
            missing = [c for c in self.factors.chars() if self.sp.piece_to_id(c) == self.unk_id]
            if missing:
                raise TokenizerError(f"{self.source}: {len(missing)} factor chars are not pieces of the model")
        self._notes_of = [0 if (self.sp.is_byte(i) or self.sp.is_control(i) or self.sp.is_unknown(i))
                          else sum(1 for ch in p if self._completes_note(ch)) for i, p in enumerate(pieces)]

    def _completes_note(self, ch: str) -> bool:
        """A note char, or the last factor of a factor group (the char that completes a factored note)."""
        if self.codec.is_note(ch):
            return True
        f = self.factors
        return f is not None and f.starts[-1] <= ord(ch) < f.starts[-1] + f.sizes[-1]

    # ---- training / loading -------------------------------------------------------------------------------
    @classmethod
    def train(cls, text_file: str | os.PathLike, vocab_size: int, out_dir: str | os.PathLike,
              codec: MidiChar | None = None, **options) -> MidiTokenizer:
        """Train on ``text_file`` (one piece per line) into ``out_dir``; see :data:`DEFAULT_OPTIONS`.

        Raises ValueError naming the feasible range when ``vocab_size`` cannot be reached on this corpus.
        """
        codec = codec or MidiChar()
        opts = _norm_options(options)
        vocab_size = int(vocab_size)
        raw = Path(text_file).read_bytes()
        lines = _training_lines(codec, raw, opts, text_file)
        counts = Counter()
        for ln in lines:
            counts.update(ln)
        plan = _char_plan(codec, counts, opts, vocab_size, text_file)
        if plan.spelled or plan.dropped:
            table = str.maketrans({**plan.spelled, **{c: None for c in plan.dropped}})
            lines = [ln.translate(table) for ln in lines]
        _check_vocab_size(vocab_size, plan.n_chars, lines, opts, text_file)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        _train_spm(lines, plan.extra_lines, out / Path(MODEL_FILE).stem, vocab_size, opts, text_file, plan.n_chars)
        meta = {
            "format_version": FORMAT_VERSION,
            "corpus_file": str(Path(text_file).resolve()),
            "corpus_sha256": hashlib.sha256(raw).hexdigest(),
            "vocab_size_requested": vocab_size,
            "options": {k: v for k, v in opts.items() if k not in _RUNTIME_OPTIONS},
            "codec": codec.config,
            "special_ids": {"unk": 0, "bos": 1, "eos": 2, "pad": None},
            "stats": {
                "train_lines": len(lines), "train_chars": sum(counts.values()),
                "train_notes": sum(n for c, n in counts.items() if codec.is_note(c)),
                "distinct_chars": len(counts), "notes_factored_in_training": plan.n_factored,
                "train_seconds": round(time.time() - t0, 2),
            },
        }
        tok = cls(out, {**meta, "vocab_size": None}, codec)
        meta["vocab_size"] = tok.vocab_size
        tok.meta = meta
        _write_json(out / META_FILE, meta)
        return tok

    @classmethod
    def cache_name(cls, text_file: str | os.PathLike, vocab_size: int, codec: MidiChar, **options) -> str:
        """The cache folder's name for this corpus and settings (runtime options such as threads left out)."""
        key = cache_key(file_sha256(text_file), vocab_size, codec, **options)
        return f"spm{int(vocab_size)}-{_norm_options(options)['fallback']}-{key[:16]}"

    @classmethod
    def load(cls, model_dir: str | os.PathLike, codec: MidiChar | None = None) -> MidiTokenizer:
        """Load a trained tokenizer; ``codec`` (optional) must have the config it was trained with."""
        d = Path(model_dir)
        return cls._checked(d, _read_meta(_read(d / META_FILE), str(d)), codec, None, str(d))

    @classmethod
    def from_bytes(cls, model: bytes, meta: bytes | dict, codec: MidiChar | None = None,
                   source: str = "tokenizer") -> MidiTokenizer:
        """A tokenizer from the bytes of its spm.model and tokenizer.json (what a checkpoint carries), in memory."""
        meta = meta if isinstance(meta, dict) else _read_meta(meta, source)
        return cls._checked(None, meta, codec, model, source)

    @classmethod
    def _checked(cls, d: Path | None, meta: dict, codec: MidiChar | None, model: bytes | None,
                 source: str) -> MidiTokenizer:
        if meta.get("kind", "midichar") != "midichar":  # another implementation (theremin.codec.kinds)
            raise TokenizerError(f"{source} is a {meta['kind']} tokenizer, not midichar: load it with theremin.codec."
                                 "kinds.load_configured (sampling and its constraints need midichar)")
        if meta.get("format_version") != FORMAT_VERSION:
            raise TokenizerError(f"{source}: tokenizer format {meta.get('format_version')}, this code reads "
                                 f"{FORMAT_VERSION}: train it again")
        if codec is None:
            try:
                codec = MidiChar.from_recorded(meta["codec"])
            except (KeyError, TypeError, ThereminError) as e:
                raise TokenizerError(f"{source}: its codec settings do not make a codec ({e})") from None
        elif codec.config != _recorded_config(meta.get("codec")):
            raise TokenizerError(f"{source}: trained with another codec config than the one given")
        return cls(d, meta, codec, model, source)

    # ---- use ----------------------------------------------------------------------------------------------
    def to_spm_text(self, text: str) -> str:
        """The text sentencepiece sees: relative pitches (pitch=relative), then notes that are no piece
        become factors (factored fallback)."""
        if self.relative:
            text = to_relative(self.codec, text)
        return text.translate(self._table) if self.factors is not None else text

    def from_spm_text(self, s: str, errors: str = "strict") -> str:
        if self.factors is not None:
            s = self.factors.group_re.sub(self.factors.unfactor, s)
            m = self.factors.any_re.search(s)
            if m and errors == "strict":
                raise ValueError(f"incomplete factor group at char {m.start()} (U+{ord(m.group()):04X}): "
                                 "these ids are not the encoding of a text (decode(..., errors='ignore') drops it)")
            if m and errors not in ("ignore", "replace"):
                raise ValueError(f"errors must be 'strict', 'ignore' or 'replace', got {errors!r}")
            if m:
                s = self.factors.any_re.sub("" if errors == "ignore" else "\ufffd", s)
        return to_absolute(self.codec, s) if self.relative else s

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(self.to_spm_text(text))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode([self.to_spm_text(t) for t in texts], num_threads=os.cpu_count() or 1)

    def decode(self, ids: Iterable[int], errors: str = "strict") -> str:
        """Ids → text; bos/eos/unk are skipped. Sampled ids may hold a broken factor group: ``errors``
        'strict' raises ValueError, 'ignore' drops its chars, 'replace' writes U+FFFD."""
        return self.from_spm_text(self.sp.decode([int(i) for i in ids]), errors)

    def pieces(self, text: str) -> list[str]:
        return self.sp.encode(self.to_spm_text(text), out_type=str)

    def byte_tokens(self, ids: Iterable[int]) -> int:
        """How many of ``ids`` are byte-fallback pieces (a sign of chars outside the vocabulary)."""
        return sum(1 for i in ids if i in self._byte_of)

    def note_counts(self, ids: Sequence[int]) -> list[int]:
        """Notes completed by each token of an encoding: ``sum(note_counts(encode(t))) == count_notes(t)``.

        A note spread over several tokens (UTF-8 bytes, or a factor group) counts at the token that completes
        it, so per-token losses sum to exact bits per note.
        """
        out, pending, need = [], bytearray(), 0
        for i in ids:
            i = int(i)
            b = self._byte_of.get(i)
            if b is None:
                pending.clear()
                out.append(self._notes_of[i] if 0 <= i < self.vocab_size else 0)
                continue
            if not pending:  # a UTF-8 lead byte tells the length of its char
                need = 1 if b < 0x80 else 2 if b >> 5 == 6 else 3 if b >> 4 == 14 else 4 if b >> 3 == 30 else 0
                if need == 0:  # a stray continuation byte: decodes to U+FFFD, no note
                    out.append(0)
                    continue
            pending.append(b)
            n = 0
            if len(pending) == need:
                ch = pending.decode("utf-8", errors="replace")
                n = int(len(ch) == 1 and self._completes_note(ch))
                pending.clear()
            out.append(n)
        return out

    def notes_per_token(self, texts: str | Iterable[str]) -> float:
        return compression(self, texts)["notes_per_token"]

    def __repr__(self) -> str:
        return f"MidiTokenizer({self.source!r}, vocab_size={self.vocab_size}, fallback={self.fallback!r})"


class _CharPlan(NamedTuple):
    """Which chars of the training text become pieces: ``spelled`` maps rare notes to their factor chars,
    ``dropped`` chars are left to byte fallback, ``extra_lines`` make every factor char a piece."""

    spelled: dict[str, str]
    dropped: set[str]
    extra_lines: list[str]
    n_chars: int
    n_factored: int


def _training_lines(codec: MidiChar, raw: bytes, opts: dict, text_file) -> list[str]:
    """The corpus lines as the tokenizer learns them: time-scaled and transposed copies, relative pitch."""
    lines = [ln for ln in raw.decode("utf-8").split("\n") if ln]
    if not lines:
        raise TokenizerError(f"{text_file}: no pieces (the file is empty)")
    if opts["augment_time_scale"] is not None:
        lines = lines + [time_scaled(codec, ln, f) for f in opts["augment_time_scale"] for ln in lines]
    if opts["augment_transpose"] is not None:
        lo, hi = opts["augment_transpose"]
        lines = [t for ln in lines for k in range(lo, hi + 1) if (t := codec.transpose(ln, k)) is not None]
    if opts["pitch"] == "relative":
        lines = [to_relative(codec, ln) for ln in lines]
    return lines


def _char_plan(codec: MidiChar, counts: Counter, opts: dict, vocab_size: int, text_file) -> _CharPlan:
    """The char budget: single-char pieces may take at most ``char_budget`` of the vocab (the rest is for
    merges). With the factored fallback the most frequent notes that fit stay chars, the others are spelled
    by factors; rests, duration extensions and tempos stay chars while they fit, and beyond that (performances
    hold hundreds of rest and extension amounts) the rarest are left to byte fallback, keeping half the room
    for notes."""
    if opts["fallback"] != "factored":
        return _CharPlan({}, set(), [], len(counts), 0)
    factors = FactorCode(codec, opts["factor_layout"])
    bad = [c for c in counts if FACTOR_LO <= ord(c) <= FACTOR_HI]
    if bad:
        raise TokenizerError(f"{text_file}: holds chars of the factor range U+E000..U+F8FF "
                             f"(e.g. U+{ord(bad[0]):04X}), which are not midichars")
    others = sorted((c for c in counts if not codec.is_note(c)), key=lambda c: (-counts[c], c))
    room = int(opts["char_budget"] * vocab_size) - N_META - factors.n_chars
    if room < 0:
        fixed = N_META + factors.n_chars + len(others)
        need = -(-fixed // opts["char_budget"]) if opts["char_budget"] else float("inf")
        raise TokenizerError(
            f"vocab_size {vocab_size} is too small for {text_file} with the factored fallback: "
            f"{N_META} special and byte pieces + {factors.n_chars} factor chars must fit in char_budget="
            f"{opts['char_budget']} of it (and {len(others)} other chars should); use vocab_size >= "
            f"{need:.0f} (or a larger char_budget)")
    dropped = set(others[room // 2:]) if len(others) > room else set()
    room -= len(others) - len(dropped)
    notes = sorted((c for c, n in counts.items() if codec.is_note(c)), key=lambda c: (-counts[c], c))
    parts = _part_switches(codec, counts, room)
    room -= len(parts)
    keep = [c for c in notes if counts[c] >= opts["min_count"]][:room]
    rare = set(notes) - set(keep)
    # one char per line: each a piece, adding no pairs for BPE to count
    extra_lines = factors.chars() + parts
    n_chars = len(set(counts) - (rare | dropped) | set(extra_lines))
    return _CharPlan({c: factors.factor(c) for c in rare}, dropped, extra_lines, n_chars,
                     sum(counts[c] for c in rare))


def _part_switches(codec: MidiChar, counts: Counter, room: int) -> list[str]:
    """The switches to each instrument (first part of each sound: SELECT ordinal 0) that a corpus with several
    parts does not hold, as pieces of their own: a prompt's bass or strings the corpus never had then cost one
    token a switch, not four byte tokens. Only for a corpus that has parts (a single-instrument corpus keeps its
    vocabulary as it was) and while they take at most half the room left for notes."""
    if not codec.instruments or not any(codec.char_class(c) in (SELECT, DECL) for c in counts):
        return []
    switches = [codec.select_char(Part(p % 128, p >= 128), 0) for p in range(256)]
    missing = [c for c in switches if c not in counts]
    return missing if 2 * len(missing) <= room else []


def _train_spm(lines: list[str], extra_lines: list[str], prefix: Path, vocab_size: int, opts: dict, text_file,
               n_chars: int) -> None:
    """sentencepiece on the lines, with the flags midichar text needs; its "vocab too high" answered with the
    feasible range."""
    with tempfile.TemporaryDirectory(prefix="spm-input-") as tmp:
        inp = Path(tmp) / "train.txt"
        parts = [ln[i:i + SPM_MAX_LINE] for ln in lines for i in range(0, len(ln), SPM_MAX_LINE)]
        with open(inp, "w", encoding="utf-8") as f:
            for ln in (*parts, *extra_lines):
                f.write(ln + "\n")
        longest = max(len(ln.encode("utf-8")) for ln in parts)
        try:
            spm.SentencePieceTrainer.train(**_spm_args(inp, prefix, vocab_size, opts, longest))
        except RuntimeError as e:
            m = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", str(e))
            if m:
                raise TokenizerError(
                    f"vocab_size {vocab_size} is too large for {text_file}: sentencepiece can reach at most "
                    f"{m.group(2)} on this corpus (feasible range {N_META + n_chars}..{m.group(2)}); "
                    f"try vocab_size={m.group(2)} or less, or a larger corpus") from e
            raise


def _spm_args(inp: Path, prefix: Path, vocab_size: int, opts: dict, longest: int) -> dict:
    return dict(
        input=str(inp), model_prefix=str(prefix), vocab_size=vocab_size, model_type=opts["model_type"],
        # required for midichar text: no NFKC (it rewrites some chars), no script splits (unassigned code points
        # could not merge), no whitespace splits, every char a piece, bytes for the rest
        normalization_rule_name="identity", split_by_unicode_script=False, split_by_whitespace=False,
        split_by_number=False, byte_fallback=True, character_coverage=1.0,
        add_dummy_prefix=False, remove_extra_whitespaces=False,
        max_sentence_length=max(int(opts["max_sentence_length"]), longest + 1),
        input_sentence_size=int(opts["input_sentence_size"]),
        shuffle_input_sentence=bool(opts["shuffle_input_sentence"]),
        hard_vocab_limit=bool(opts["hard_vocab_limit"]),
        max_sentencepiece_length=int(opts["max_piece_length"]),
        num_threads=int(opts["num_threads"] or os.cpu_count() or 1),
        unk_surface="",  # an unk id (never in an encoding, maybe in a sample) decodes to nothing
        minloglevel=2,
    )


def compression(tok: MidiTokenizer, texts: str | Iterable[str], check: bool = False) -> dict:
    """Notes per token over ``texts`` (codec notes / tokens), byte-token share, and (``check``) losslessness."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    ids = tok.encode_batch(texts)
    notes = sum(tok.codec.count_notes(t) for t in texts)
    tokens = sum(len(x) for x in ids)
    out = {"pieces": len(texts), "notes": notes, "tokens": tokens,
           "notes_per_token": notes / tokens if tokens else 0.0,
           "byte_tokens": sum(tok.byte_tokens(x) for x in ids)}
    if check:
        out["lossless"] = all(tok.decode(x) == t for x, t in zip(ids, texts))
    return out


def _check_vocab_size(vocab_size: int, n_chars: int, lines: list[str], opts: dict, text_file) -> None:
    """Refuse a vocab size that cannot work before spending time on training."""
    lo = N_META + n_chars
    # every merge removes at least one token from the corpus, so merges <= chars - lines
    hi = lo + sum(len(ln) - 1 for ln in lines)
    if vocab_size < lo:
        hint = "" if opts["fallback"] == "factored" else " (fallback='factored' needs fewer)"
        raise TokenizerError(f"vocab_size {vocab_size} is too small for {text_file}: it needs at least {lo} "
                         f"({N_META} special and byte pieces + {n_chars} distinct characters); "
                         f"use vocab_size >= {lo}{hint}")
    if vocab_size > hi and opts["hard_vocab_limit"]:
        raise TokenizerError(f"vocab_size {vocab_size} is too large for {text_file}: at most {hi} pieces can "
                         f"exist on it (feasible range {lo}..{hi}, sentencepiece usually stops well below); "
                         "use a smaller vocab_size or a larger corpus")


# ---- cache ----------------------------------------------------------------------------------------------------
def cache_key(corpus_sha256: str, vocab_size: int, codec: MidiChar, **options) -> str:
    opts = {k: v for k, v in _norm_options(options).items() if k not in _RUNTIME_OPTIONS}
    blob = {"format": FORMAT_VERSION, "corpus": corpus_sha256, "vocab_size": int(vocab_size), "options": opts,
            "codec": codec.config}
    if codec.instruments:  # the char plan reserves part switches (issue 18): another tokenizer than before
        blob["plan"] = PLAN_VERSION
    blob = json.dumps(blob, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_dir_for(text_file: str | os.PathLike, vocab_size: int, cache_root: str | os.PathLike,
                  codec: MidiChar | None = None, **options) -> Path:
    return Path(cache_root) / MidiTokenizer.cache_name(text_file, vocab_size, codec or MidiChar(), **options)


def get_or_train(text_file: str | os.PathLike, vocab_size: int, cache_root: str | os.PathLike,
                 codec: MidiChar | None = None, **options) -> MidiTokenizer:
    """The tokenizer for this corpus and settings: loaded from ``cache_root`` if there, else trained
    (:func:`theremin.codec.cache.get_or_train`; ``tok.from_cache`` says which)."""
    return cache.get_or_train(MidiTokenizer, text_file, vocab_size, cache_root, codec or MidiChar(), **options)


def _recorded_config(recorded) -> dict | None:
    """The config of the codec a tokenizer recorded (one recorded before instruments existed: without them);
    None when it makes no codec."""
    try:
        return MidiChar.from_recorded(recorded).config if isinstance(recorded, dict) else None
    except (TypeError, ThereminError):
        return None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        reason = "does not exist" if isinstance(e, FileNotFoundError) else f"cannot be read ({e.strerror})"
        raise TokenizerError(f"{path} {reason}: the tokenizer folder is incomplete (delete it to train it again)"
                             ) from None


def _read_meta(raw: bytes, source: str) -> dict:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    if not isinstance(meta, dict):
        raise TokenizerError(f"{source}: {META_FILE} is not a tokenizer description (damaged?): train it again")
    return meta


def _write_json(path: Path, obj: dict) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def unknown_note_share(tok, lines: list[str]) -> float:
    """Share of the notes of ``lines`` that are no piece of the tokenizer's vocabulary (its factored fallback
    spells them, 2-3 tokens each)."""
    total = unknown = 0
    f = tok.factors
    for line in lines:
        total += tok.codec.count_notes(line)
        if f is not None:  # a factored note ends with exactly one char of the last factor group
            lo, hi = f.starts[-1], f.starts[-1] + f.sizes[-1]
            unknown += sum(1 for ch in tok.to_spm_text(line) if lo <= ord(ch) < hi)
        else:  # byte fallback: a note char that is no piece
            unknown += sum(1 for ch in line if tok.codec.is_note(ch) and tok.sp.piece_to_id(ch) == tok.unk_id)
    return unknown / max(total, 1)

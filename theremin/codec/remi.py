"""REMI + MidiTok's own BPE behind the tokenizer interface the DataModule consumes: the baseline midichar is
measured against (``tokenizer=remi_bpe``).

It reads the same corpus as :class:`theremin.codec.tokenizer.MidiTokenizer`: each midichar line (train.txt / val.txt,
same split, same transposed copies) is decoded to notes on the codec's grid, built into a one-track
``symusic.Score`` and tokenized by MidiTok's REMI; MidiTok trains its BPE on the train lines at the asked vocab
size. ``encode(text) -> ids`` and ``decode(ids) -> text`` keep the midichar text interface, so the DataModule,
the LightningModule and ``val/bits_per_note`` stay the same code.

What makes both codecs see the same notes:
- REMI's time grid is the codec's (``beat_res = {(0, max_duration_beats): codec.grid}``): positions and
  durations on the same 1/12 beat; the Score's ticks per quarter is the grid, so MidiTok resamples nothing;
- velocity bins are one per codec velocity level (bin i ↔ level i); pitch range is all of MIDI's 0..127, so
  no note is dropped; midichar has already merged notes of one pitch at one onset;
- no time signatures (midichar has none; REMI's bars are then 4/4 from the start).

Instruments: midichar keeps each note's part (program, drum flag, name; :meth:`MidiChar.decode_parts`). REMI sees
every one of those notes either way; ``tokenizer.use_programs`` says whether it sees their instruments:
- ``use_programs: false`` (the default, the baseline as it was): every note, drum notes included, goes to one
  program-0 track and is a plain ``Pitch`` token; :meth:`RemiTokenizer.decode` gives one piano part. Instrument
  identity is lost (a drum note comes back as a piano note of that pitch; notes of two parts at one pitch and
  onset are tokenized and counted both, but decode as one, reported missing by :func:`grid_mismatches`): that is
  what this baseline does not model, and what the comparison with midichar measures.
- ``use_programs: true`` (conf/tokenizer/remi_bpe_programs.yaml): MidiTok's multi-track single-stream REMI
  (``use_programs=True, one_token_stream_for_programs=True``, programs -1 (drums) and 0..127, no program
  changes): a ``Program`` token before each note, drum notes as ``PitchDrum`` tokens over all of 0..127 (so no
  drum note is dropped). The Score has one track per part; decoding gives one part per program (+ drum flag), in
  the order the stream first plays them. Part names are not kept (REMI has none), and MidiTok merges parts of
  one sound (e.g. POP909's three piano tracks) into one: equal notes of two such parts then sound as one, which
  :func:`grid_mismatches` reports as missing.

Two differences, both reported by :func:`grid_mismatches` and by ``scripts/bench_remi.py``: a note longer than
``max_duration_beats`` is clipped to it (REMI has no duration extension); a tempo becomes the nearest of MidiTok's
``num_tempos`` bins (midichar keeps it exactly). Neither adds or removes a note, so the per-token note counts
sum to the codec's count of the val split and ``val/bits_per_note`` is the same measure for both.

A note is counted at the token that holds its ``Pitch`` or ``PitchDrum`` (a BPE token may hold several).

:func:`get_or_train` caches a model per corpus + settings the one way (:mod:`theremin.codec.cache`): a folder named
from sha256(train.txt) and every setting that changes the result, a file lock, trained in a temp folder then
renamed into place. ``tokenizer.json`` there says ``"kind": "remi"``; MidiTok's own file is ``miditok.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from importlib.metadata import version
from pathlib import Path

from theremin.codec import cache
from theremin.codec.cache import META_FILE
from theremin.codec.midichar import MidiChar
from theremin.codec.tokenizer import _recorded_config, compression
from theremin.config import known_settings
from theremin.errors import ThereminError
from theremin.fsio import atomic_write, file_sha256
from theremin.music.midi import PIANO, Note, Part, Piece

KIND = "remi"
FORMAT_VERSION = 1
MIDITOK_FILE = "miditok.json"
SPECIAL_TOKENS = ["PAD", "BOS", "EOS"]

# Options of train()/get_or_train() and their defaults (conf/tokenizer/remi_bpe.yaml overrides them).
DEFAULT_OPTIONS: dict = {
    "max_duration_beats": 16,  # REMI durations on the codec grid up to this many beats; longer notes clip
    "use_tempos": True,  # midichar codes tempo too; REMI's is binned (num_tempos in tempo_range bpm)
    "num_tempos": 32,
    "tempo_range": [40, 250],
    "encode_ids_split": "bar",  # MidiTok's default: a BPE token never crosses a bar line
    "model": "BPE",
    "use_programs": False,  # True: a Program token per note, one track per part (see the module docstring)
}
NOTE_TOKENS = ("Pitch", "PitchDrum")  # the REMI token types that hold a note (PitchDrum: a drum note, with programs)


class RemiConfigError(ThereminError):
    """A REMI tokenizer setting that cannot work on this corpus; the message names the setting."""


def _norm_options(options: dict) -> dict:
    options = {k: v for k, v in options.items() if k != "kind"}
    known = known_settings(DEFAULT_OPTIONS, options, "tokenizer", "a REMI tokenizer setting", RemiConfigError,
                           "the midichar ones (fallback, pitch, ...) do not apply")
    opts = {**DEFAULT_OPTIONS, **known}
    opts["max_duration_beats"] = int(opts["max_duration_beats"])
    if opts["max_duration_beats"] < 1:
        raise RemiConfigError(f"tokenizer.max_duration_beats must be >= 1, got {opts['max_duration_beats']}")
    opts["tempo_range"] = [float(x) for x in opts["tempo_range"]]
    opts["num_tempos"] = int(opts["num_tempos"])
    opts["use_tempos"] = bool(opts["use_tempos"])
    opts["use_programs"] = bool(opts["use_programs"])
    if opts["encode_ids_split"] not in ("bar", "beat", "no"):
        raise RemiConfigError(f"tokenizer.encode_ids_split must be bar, beat or no, got {opts['encode_ids_split']!r}")
    if opts["model"] != "BPE":
        raise RemiConfigError(f"tokenizer.model must be BPE (the baseline is REMI + BPE), got {opts['model']!r}")
    return opts


def remi_config(codec: MidiChar, opts: dict):
    """MidiTok's TokenizerConfig for this codec: the codec's grid, velocity levels and MIDI's whole pitch range;
    with ``use_programs`` every program, drums (-1) included, in one token stream, drum notes over all of 0..127."""
    from miditok import TokenizerConfig

    programs = {}
    if opts.get("use_programs", False):
        programs = {"use_programs": True, "one_token_stream_for_programs": True, "program_changes": False,
                    "programs": list(range(-1, 128)), "use_pitchdrum_tokens": True, "drums_pitch_range": (0, 127)}
    return TokenizerConfig(
        pitch_range=(0, 127), beat_res={(0, opts["max_duration_beats"]): codec.grid},
        num_velocities=len(codec.velocities), use_velocities=True,
        use_tempos=opts["use_tempos"], num_tempos=opts["num_tempos"], tempo_range=tuple(opts["tempo_range"]),
        use_time_signatures=False, use_chords=False, use_rests=False,
        special_tokens=list(SPECIAL_TOKENS), encode_ids_split=opts["encode_ids_split"],
        **({"use_programs": False} | programs),
    )


class _Scores:
    """midichar text ↔ symusic Score on the codec grid (ticks per quarter = grid), velocity level i ↔ bin i; one
    track per part with programs, else every note on one program-0 track."""

    def __init__(self, codec: MidiChar, remi):
        self.codec = codec
        self.programs = bool(remi.config.use_programs)
        self.bins = [int(v) for v in remi.velocities]
        if len(self.bins) != len(codec.velocities):
            raise RemiConfigError(f"REMI has {len(self.bins)} velocity bins, the codec {len(codec.velocities)} levels")
        self.level_of = {b: i for i, b in enumerate(self.bins)}

    def score(self, text: str):
        from symusic import Note as SNote
        from symusic import Score, Tempo, Track

        notes, tempos, parts = self.codec.decode_parts(text)
        s = Score(self.codec.grid)
        if not self.programs:  # drum notes too: the baseline sees every note, not their instruments
            parts, notes = [PIANO], [(*n[:4], 0) for n in notes]
        by_part: list[list] = [[] for _ in parts]
        for pos, dur, pitch, vel, part in notes:
            by_part[part].append(SNote(pos, dur, pitch, self.bins[vel]))
        for part, part_notes in zip(parts, by_part):
            track = Track(name=part.name, program=part.program, is_drum=part.is_drum)
            track.notes.extend(part_notes)
            s.tracks.append(track)
        s.tempos.extend([Tempo(pos, mspq=us) for pos, us in tempos])
        return s

    def text(self, score) -> str:
        """A decoded Score (MidiTok writes it at ticks per quarter = the REMI grid) → canonical midichar text: a
        part per track (its program and drum flag, no name) with programs, else one piano part."""
        tpq = score.ticks_per_quarter
        parts = [Part(tr.program, tr.is_drum) for tr in score.tracks] if self.programs else [PIANO]
        notes = [Note(n.time, n.time + max(1, n.duration), n.pitch,
                      self.codec.velocities[self.level_of.get(int(n.velocity), self._nearest(n.velocity))],
                      k if self.programs else 0)
                 for k, tr in enumerate(score.tracks) for n in tr.notes]
        piece = Piece(notes=sorted(notes), ticks_per_beat=tpq, tempos=[(t.time, int(t.mspq)) for t in score.tempos],
                      parts=parts or [PIANO])
        return self.codec.encode(piece)

    def sequence(self, remi, text: str):
        """The text's one REMI TokSequence before BPE (MidiTok gives one per track without programs: one here)."""
        from miditok import TokSequence

        seq = remi.encode(self.score(text), encode_ids=False)
        if isinstance(seq, TokSequence):  # one token stream for all programs
            return seq
        return seq[0] if seq else TokSequence()  # a text with no note: MidiTok drops the empty track

    def _nearest(self, velocity: int) -> int:
        return min(range(len(self.bins)), key=lambda i: abs(self.bins[i] - int(velocity)))


def _texts_iterator(remi, scores: _Scores, texts: Sequence[str]):
    """MidiTok's training iterator over midichar lines instead of MIDI files (its own splitting into bars and
    conversion to the bytes its BPE trains on)."""
    from miditok.tokenizer_training_iterator import TokTrainingIterator

    class TextIterator(TokTrainingIterator):
        def load_file(self, text: str) -> list[str]:
            seq = scores.sequence(self.tokenizer, text)
            if self.tokenizer.config.encode_ids_split == "bar":
                seqs = [s for s in seq.split_per_bars() if len(s) > 0]
            elif self.tokenizer.config.encode_ids_split == "beat":
                seqs = [s for s in seq.split_per_beats() if len(s) > 0]
            else:
                seqs = [seq]
            return [self.tokenizer._ids_to_bytes(s.ids, as_one_str=True) for s in seqs]

    return TextIterator(remi, list(texts))


class RemiTokenizer:
    """A trained REMI + BPE tokenizer with MidiTokenizer's interface (encode/decode midichar text, note_counts)."""

    kind = KIND

    def __init__(self, model_dir: str | os.PathLike, meta: dict, codec: MidiChar):
        from miditok import REMI

        self.dir = Path(model_dir)
        self.meta, self.codec = meta, codec
        self.remi = REMI(params=self.dir / MIDITOK_FILE)
        if not self.remi.is_trained:
            raise RemiConfigError(f"{self.dir / MIDITOK_FILE}: a REMI tokenizer without its BPE model")
        self.scores = _Scores(codec, self.remi)
        self.vocab_size = int(self.remi.vocab_size)
        model = self.remi._model
        byte_of = self.remi._vocab_base_id_to_byte  # base token id -> the char MidiTok's BPE model sees
        self.pad_id, self.bos_id, self.eos_id = (model.token_to_id(byte_of[self.remi[f"{t}_None"]])
                                                 for t in SPECIAL_TOKENS)
        self.unk_id = self.pad_id  # no unknown token in REMI; pad stands in where callers expect one
        self._special = {self.pad_id, self.bos_id, self.eos_id}
        learned = self.remi._vocab_learned_bytes_to_tokens
        self._base_of = [learned[model.id_to_token(i)] for i in range(self.vocab_size)]
        self._notes_of = [sum(1 for t in base if t.split("_", 1)[0] in NOTE_TOKENS) for base in self._base_of]
        self.from_cache = False

    @property
    def model_dir(self) -> Path:
        return self.dir

    # ---- training / loading -------------------------------------------------------------------------------
    @classmethod
    def train(cls, text_file: str | os.PathLike, vocab_size: int, out_dir: str | os.PathLike,
              codec: MidiChar | None = None, **options) -> RemiTokenizer:
        """Train MidiTok's BPE on the REMI tokens of ``text_file`` (one midichar piece per line) into ``out_dir``.

        Raises :class:`RemiConfigError` naming ``tokenizer.vocab_size`` when the corpus cannot support it.
        """
        from miditok import REMI

        codec = codec or MidiChar()
        opts = _norm_options(options)
        vocab_size = int(vocab_size)
        raw = Path(text_file).read_bytes()
        lines = [ln for ln in raw.decode("utf-8").split("\n") if ln]
        if not lines:
            raise RemiConfigError(f"{text_file}: no pieces (the file is empty)")
        remi = REMI(remi_config(codec, opts))
        base = len(remi)
        if vocab_size <= base:
            raise RemiConfigError(
                f"tokenizer.vocab_size={vocab_size} is too small for REMI: its base vocabulary already has {base} "
                f"tokens (grid {codec.grid}/beat, durations up to tokenizer.max_duration_beats="
                f"{opts['max_duration_beats']} beats, 128 pitches, {len(codec.velocities)} velocities"
                f"{', 129 programs and 128 drum pitches' if opts['use_programs'] else ''}); "
                f"use tokenizer.vocab_size > {base}")
        scores = _Scores(codec, remi)
        t0 = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            remi.train(vocab_size=vocab_size, model=opts["model"], iterator=_texts_iterator(remi, scores, lines))
        if len(remi) < vocab_size:
            raise RemiConfigError(
                f"tokenizer.vocab_size={vocab_size} is too large for {text_file}: MidiTok's BPE found only "
                f"{len(remi)} tokens on it (feasible range {base + 1}..{len(remi)}); use tokenizer.vocab_size="
                f"{len(remi)} or less, or a larger corpus")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        remi.save(out / MIDITOK_FILE)
        meta = {
            "kind": KIND, "format_version": FORMAT_VERSION,
            "corpus_file": str(Path(text_file).resolve()),
            "corpus_sha256": hashlib.sha256(raw).hexdigest(),
            "vocab_size_requested": vocab_size, "vocab_size": len(remi), "base_vocab_size": base,
            "options": opts, "codec": codec.config,
            "special_ids": dict(zip(("pad", "bos", "eos"), range(len(SPECIAL_TOKENS)))),
            "stats": {"train_lines": len(lines), "train_seconds": round(time.time() - t0, 2)},
        }
        _write_json(out / META_FILE, meta)
        return cls.load(out, codec)

    @classmethod
    def cache_name(cls, text_file: str | os.PathLike, vocab_size: int, codec: MidiChar, **options) -> str:
        """The cache folder's name: every setting, the corpus bytes and miditok's version (its BPE may change)."""
        blob = json.dumps({"kind": KIND, "format": FORMAT_VERSION, "corpus": file_sha256(text_file),
                           "vocab_size": int(vocab_size), "options": _norm_options(options), "codec": codec.config,
                           "miditok": version("miditok")}, sort_keys=True)
        return f"remi{int(vocab_size)}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    @classmethod
    def load(cls, model_dir: str | os.PathLike, codec: MidiChar | None = None) -> RemiTokenizer:
        d = Path(model_dir)
        meta = json.loads((d / META_FILE).read_text())
        if meta.get("kind") != KIND:
            raise RemiConfigError(f"{d}: a {meta.get('kind', 'midichar')} tokenizer, not a REMI one")
        if meta.get("format_version") != FORMAT_VERSION:
            raise RemiConfigError(f"{d}: REMI tokenizer format {meta.get('format_version')}, this code reads "
                                  f"{FORMAT_VERSION}: train it again")
        if codec is None:
            codec = MidiChar.from_recorded(meta["codec"])
        elif codec.config != _recorded_config(meta["codec"]):
            raise RemiConfigError(f"{d}: trained with another codec config than the one given")
        return cls(d, meta, codec)

    # ---- use ----------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        seqs = [self.scores.sequence(self.remi, t) for t in texts]
        self.remi.encode_token_ids(seqs)
        return [list(s.ids) for s in seqs]

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """The REMI tokens (before BPE) that ``ids`` stand for: Bar_None, Position_12, Program_33, Pitch_60, ..."""
        return [t for i in ids if 0 <= int(i) < self.vocab_size for t in self._base_of[int(i)]]

    def decode(self, ids: Iterable[int], errors: str = "strict") -> str:
        """Ids → midichar text; pad/bos/eos are skipped. A sampled sequence may break REMI's grammar (a Pitch
        without Duration, ...): ``errors='strict'`` raises, 'ignore' (or 'replace') keeps what MidiTok decodes."""
        from miditok import TokSequence

        if errors not in ("strict", "ignore", "replace"):
            raise ValueError(f"errors must be 'strict', 'ignore' or 'replace', got {errors!r}")
        ids = [int(i) for i in ids if int(i) not in self._special]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad and errors == "strict":
            raise RemiConfigError(f"token id {bad[0]} is outside the REMI vocabulary of {self.vocab_size}")
        tokens = self.tokens(ids)
        if not tokens:
            return ""
        seq = TokSequence(tokens=tokens)
        self.remi.complete_sequence(seq)
        if errors == "strict":
            share = self.remi.tokens_errors(seq)  # MidiTok gives the share of tokens in error, not a count
            if share:
                raise RemiConfigError(f"{share:.1%} of these REMI tokens break its grammar: the ids are not the "
                                      "encoding of a piece (decode(..., errors='ignore') keeps the valid notes)")
        return self.scores.text(self.remi.decode(seq if self.remi.one_token_stream else [seq]))

    def note_counts(self, ids: Sequence[int]) -> list[int]:
        """Notes held by each token (its Pitch and PitchDrum tokens): ``sum(note_counts(encode(t))) ==
        count_notes(t)``, drum notes included."""
        return [self._notes_of[int(i)] if 0 <= int(i) < self.vocab_size else 0 for i in ids]

    def byte_tokens(self, ids: Iterable[int]) -> int:
        """REMI has no byte fallback (kept for :func:`theremin.codec.tokenizer.compression`)."""
        return 0

    def notes_per_token(self, texts: str | Iterable[str]) -> float:
        return compression(self, texts)["notes_per_token"]

    def __repr__(self) -> str:
        return f"RemiTokenizer({str(self.dir)!r}, vocab_size={self.vocab_size})"


def grid_mismatches(tok: RemiTokenizer, text: str) -> dict:
    """How ``decode(encode(text))`` differs from ``text`` on the grid: notes (position, duration, pitch,
    velocity level, and with programs the part's program + drum flag) missing / added, durations clipped at
    max_duration_beats, tempos changed. Without programs a note's part is not compared (REMI has one track)."""

    notes, tempos, parts = tok.codec.decode_parts(text)
    back_notes, back_tempos, back_parts = tok.codec.decode_parts(tok.decode(tok.encode(text)))
    cap = tok.meta["options"]["max_duration_beats"] * tok.codec.grid
    programs = tok.scores.programs

    def sound(ps: list[Part], k: int):
        return (ps[k].program, ps[k].is_drum) if programs else None

    expected = Counter((p, min(d, cap), pitch, v, sound(parts, k)) for p, d, pitch, v, k in notes)
    got = Counter((p, d, pitch, v, sound(back_parts, k)) for p, d, pitch, v, k in back_notes)
    return {"notes": len(notes), "missing": sum((expected - got).values()), "added": sum((got - expected).values()),
            "clipped": sum(1 for n in notes if n[1] > cap),
            "tempos": len(tempos), "tempos_changed": sum(1 for a, b in zip(tempos, back_tempos) if a != b)
            + abs(len(tempos) - len(back_tempos))}


# ---- cache ----------------------------------------------------------------------------------------------------
def cache_dir_for(text_file: str | os.PathLike, vocab_size: int, cache_root: str | os.PathLike,
                  codec: MidiChar | None = None, **options) -> Path:
    return Path(cache_root) / RemiTokenizer.cache_name(text_file, vocab_size, codec or MidiChar(), **options)


def get_or_train(text_file: str | os.PathLike, vocab_size: int, cache_root: str | os.PathLike,
                 codec: MidiChar | None = None, **options) -> RemiTokenizer:
    """The REMI tokenizer for this corpus and settings: loaded from ``cache_root`` if there, else trained
    (:func:`theremin.codec.cache.get_or_train`; ``tok.from_cache`` says which)."""
    return cache.get_or_train(RemiTokenizer, text_file, vocab_size, cache_root, codec or MidiChar(), **options)


def _write_json(path: Path, obj: dict) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))

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
- no time signatures (midichar has none; REMI's bars are then 4/4 from the start), one track, no programs.
Two differences, both reported by :func:`grid_mismatches` and by ``scripts/bench_remi.py``: a note longer than
``max_duration_beats`` is clipped to it (REMI has no duration extension); a tempo becomes the nearest of MidiTok's
``num_tempos`` bins (midichar keeps it exactly). Neither adds or removes a note, so the per-token note counts
sum to the codec's count of the val split and ``val/bits_per_note`` is the same measure for both.

A note is counted at the token that holds its ``Pitch`` (a BPE token may hold several).

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
from theremin.codec.tokenizer import compression
from theremin.config import known_settings
from theremin.errors import ThereminError
from theremin.fsio import atomic_write, file_sha256
from theremin.music.midi import Note, Piece

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
}


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
    if opts["encode_ids_split"] not in ("bar", "beat", "no"):
        raise RemiConfigError(f"tokenizer.encode_ids_split must be bar, beat or no, got {opts['encode_ids_split']!r}")
    if opts["model"] != "BPE":
        raise RemiConfigError(f"tokenizer.model must be BPE (the baseline is REMI + BPE), got {opts['model']!r}")
    return opts


def remi_config(codec: MidiChar, opts: dict):
    """MidiTok's TokenizerConfig for this codec: the codec's grid, velocity levels and MIDI's whole pitch range."""
    from miditok import TokenizerConfig

    return TokenizerConfig(
        pitch_range=(0, 127), beat_res={(0, opts["max_duration_beats"]): codec.grid},
        num_velocities=len(codec.velocities), use_velocities=True,
        use_tempos=opts["use_tempos"], num_tempos=opts["num_tempos"], tempo_range=tuple(opts["tempo_range"]),
        use_time_signatures=False, use_programs=False, use_chords=False, use_rests=False,
        special_tokens=list(SPECIAL_TOKENS), encode_ids_split=opts["encode_ids_split"],
    )


class _Scores:
    """midichar text ↔ symusic Score on the codec grid (ticks per quarter = grid), velocity level i ↔ bin i."""

    def __init__(self, codec: MidiChar, remi):
        self.codec = codec
        self.bins = [int(v) for v in remi.velocities]
        if len(self.bins) != len(codec.velocities):
            raise RemiConfigError(f"REMI has {len(self.bins)} velocity bins, the codec {len(codec.velocities)} levels")
        self.level_of = {b: i for i, b in enumerate(self.bins)}

    def score(self, text: str):
        from symusic import Note as SNote
        from symusic import Score, Tempo, Track

        notes, tempos = self.codec.decode_grid(text)
        s = Score(self.codec.grid)
        track = Track(program=0)
        track.notes.extend([SNote(pos, dur, pitch, self.bins[vel]) for pos, dur, pitch, vel in notes])
        s.tracks.append(track)
        s.tempos.extend([Tempo(pos, mspq=us) for pos, us in tempos])
        return s

    def text(self, score) -> str:
        """A decoded Score (MidiTok writes it at ticks per quarter = the REMI grid) → canonical midichar text."""
        tpq = score.ticks_per_quarter
        notes = [Note(n.time, n.time + max(1, n.duration), n.pitch,
                      self.codec.velocities[self.level_of.get(int(n.velocity), self._nearest(n.velocity))])
                 for tr in score.tracks for n in tr.notes]
        piece = Piece(notes=sorted(notes), ticks_per_beat=tpq, tempos=[(t.time, int(t.mspq)) for t in score.tempos])
        return self.codec.encode(piece)

    def _nearest(self, velocity: int) -> int:
        return min(range(len(self.bins)), key=lambda i: abs(self.bins[i] - int(velocity)))


def _texts_iterator(remi, scores: _Scores, texts: Sequence[str]):
    """MidiTok's training iterator over midichar lines instead of MIDI files (its own splitting into bars and
    conversion to the bytes its BPE trains on)."""
    from miditok.tokenizer_training_iterator import TokTrainingIterator

    class TextIterator(TokTrainingIterator):
        def load_file(self, text: str) -> list[str]:
            seq = self.tokenizer.encode(scores.score(text), encode_ids=False)[0]
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
        self._notes_of = [sum(1 for t in base if t.startswith("Pitch_")) for base in self._base_of]
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
                f"{opts['max_duration_beats']} beats, 128 pitches, {len(codec.velocities)} velocities); "
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
            codec = MidiChar(**meta["codec"])
        elif codec.config != meta["codec"]:
            raise RemiConfigError(f"{d}: trained with another codec config than the one given")
        return cls(d, meta, codec)

    # ---- use ----------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        seqs = [self.remi.encode(self.scores.score(t), encode_ids=False)[0] for t in texts]
        self.remi.encode_token_ids(seqs)
        return [list(s.ids) for s in seqs]

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """The REMI tokens (before BPE) that ``ids`` stand for: Bar_None, Position_12, Pitch_60, ..."""
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
            n_err = self.remi.tokens_errors(seq)
            if n_err:
                raise RemiConfigError(f"{n_err} REMI tokens break its grammar: these ids are not the encoding "
                                      "of a piece (decode(..., errors='ignore') keeps the valid notes)")
        return self.scores.text(self.remi.decode([seq]))

    def note_counts(self, ids: Sequence[int]) -> list[int]:
        """Notes held by each token (its Pitch tokens): ``sum(note_counts(encode(t))) == count_notes(t)``."""
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
    velocity level) missing / added, durations clipped at max_duration_beats, tempos changed."""

    notes, tempos = tok.codec.decode_grid(text)
    back_notes, back_tempos = tok.codec.decode_grid(tok.decode(tok.encode(text)))
    cap = tok.meta["options"]["max_duration_beats"] * tok.codec.grid
    expected = Counter((p, min(d, cap), pitch, v) for p, d, pitch, v in notes)
    got = Counter(back_notes)
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

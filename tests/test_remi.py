"""The REMI baseline tokenizer (theremin/codec/remi.py): same notes on the grid, exact note counts, caching, settings
that cannot work, and the whole training pipeline with tokenizer=remi_bpe."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from midi_factory import chords, drum_pattern, random_notes, scale

from theremin.codec.kinds import Tokenizer, get_or_train_configured, kind_of, load_configured
from theremin.codec.midichar import MidiChar
from theremin.codec.remi import RemiTokenizer, get_or_train, grid_mismatches
from theremin.errors import ThereminError
from theremin.fsio import current_umask
from theremin.music.midi import PIANO, Note, Part, Piece

SMALL = {"max_duration_beats": 4, "use_tempos": True}  # a small base vocabulary keeps training quick
BAND = [PIANO, Part(33, name="Bass"), Part(0, is_drum=True, name="Drums")]


def _piece(notes, tempos=(), parts=(PIANO,)) -> Piece:
    return Piece(notes=sorted(Note(*n) for n in notes), ticks_per_beat=480, tempos=list(tempos), parts=list(parts))


def _band(seed: int) -> Piece:
    """Piano (55..84), bass program 33 (28..34) and drums (kick, snare, hats, and 25: outside MidiTok's default
    drum range 27..88): no two parts play one pitch at one onset, so one track holds them all."""
    notes = [(*n, 0) for n in random_notes(seed, n=24, low=55)]
    notes += [(*n, 1) for n in random_notes(seed + 100, n=12, low=28, high=34)]
    notes += [(*n, 2) for n in [*drum_pattern(3), (240, 360, 25, 90)]]
    return _piece(notes, parts=BAND)


def _by_sound(codec: MidiChar, text: str) -> dict[tuple[int, bool], Counter]:
    """The text's notes (position, duration, pitch, velocity level) per part sound (program, drum)."""
    notes, _, parts = codec.decode_parts(text)
    out: dict[tuple[int, bool], Counter] = {}
    for *note, k in notes:
        out.setdefault((parts[k].program, parts[k].is_drum), Counter())[tuple(note)] += 1
    return out


@pytest.fixture(scope="module")
def codec() -> MidiChar:
    return MidiChar()


@pytest.fixture(scope="module")
def texts(codec) -> list[str]:
    """Pieces as midichar lines: random melodies with chords, a scale in triplets, block chords, tempo changes."""
    pieces = [_piece(random_notes(seed, n=48)) for seed in range(12)]
    pieces.append(_piece(scale(step=160, length=160)))  # 8th-note triplets: 4 grid steps each
    pieces.append(_piece(chords(), tempos=[(0, 600_000), (960, 400_000)]))
    return [codec.encode(p) for p in pieces]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, texts, codec) -> Path:
    d = tmp_path_factory.mktemp("remi_corpus")
    lines = [t for text in texts for k in range(-3, 4) if (t := codec.transpose(text, k))]
    (d / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (d / "val.txt").write_text("\n".join(texts[:3]) + "\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def tok(corpus, codec) -> RemiTokenizer:
    return get_or_train(corpus / "train.txt", 400, corpus / "tokenizers", codec, **SMALL)


@pytest.fixture(scope="module")
def band_texts(codec) -> list[str]:
    return [codec.encode(_band(seed)) for seed in range(6)]


@pytest.fixture(scope="module", params=[False, True], ids=["one_track", "programs"])
def band_tok(request, tmp_path_factory, band_texts, codec) -> RemiTokenizer:
    """REMI + BPE on a band corpus (transposed copies: drums stay), without and with programs."""
    d = tmp_path_factory.mktemp("remi_band")
    lines = [t for text in band_texts for k in range(-2, 3) if (t := codec.transpose(text, k))]
    (d / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return get_or_train(d / "train.txt", 600, d / "tokenizers", codec, **SMALL, use_programs=request.param)


def test_decode_encode_gives_the_same_notes_on_the_grid(tok, texts, codec):
    for text in texts:
        ids = tok.encode(text)
        assert tok.bos_id not in ids and tok.eos_id not in ids
        back = tok.decode(ids)
        assert codec.decode_grid(back)[0] == codec.decode_grid(text)[0]
        assert grid_mismatches(tok, text) | {"tempos_changed": 0} == {
            "notes": codec.count_notes(text), "missing": 0, "added": 0, "clipped": 0,
            "tempos": len(codec.decode_grid(text)[1]), "tempos_changed": 0}


def test_note_counts_sum_to_the_codec_count(tok, texts, codec):
    for text in texts:
        ids = tok.encode(text)
        counts = tok.note_counts(ids)
        assert len(counts) == len(ids)
        assert sum(counts) == codec.count_notes(text)
    assert tok.note_counts([tok.bos_id, tok.eos_id, tok.pad_id]) == [0, 0, 0]


def test_bpe_merges_tokens(tok, texts):
    ids = tok.encode(texts[0])
    assert len(ids) < len(tok.tokens(ids))  # BPE tokens stand for several REMI tokens
    assert tok.vocab_size == 400


def test_a_note_longer_than_the_duration_range_is_clipped_and_reported(tok, codec):
    text = codec.encode(_piece([(0, 480 * 6, 60, 80), (480, 960, 64, 80)]))  # 6 beats > max_duration_beats=4
    report = grid_mismatches(tok, text)
    assert report["clipped"] == 1 and report["missing"] == 0 and report["added"] == 0
    back = codec.decode_grid(tok.decode(tok.encode(text)))[0]
    assert [n[1] for n in back] == [4 * codec.grid, codec.grid]


def test_cache_reuses_the_model_and_keys_every_setting(tok, corpus, codec):
    again = get_or_train(corpus / "train.txt", 400, corpus / "tokenizers", codec, **SMALL)
    assert again.from_cache and again.dir == tok.dir
    other = get_or_train(corpus / "train.txt", 400, corpus / "tokenizers", codec, **{**SMALL, "use_tempos": False})
    assert other.dir != tok.dir and not other.from_cache


def test_kind_picks_the_implementation(tok, corpus, codec):
    cfg = {"kind": "remi", "vocab_size": 400, **SMALL}
    got = get_or_train_configured(corpus / "train.txt", cfg, corpus / "tokenizers", codec)
    assert isinstance(got, RemiTokenizer) and got.dir == tok.dir
    assert kind_of(tok.dir) == "remi"
    assert isinstance(load_configured(tok.dir), RemiTokenizer)
    assert isinstance(got, Tokenizer)  # the interface the DataModule and the scorer use
    # the one cache: REMI's folder gets the umask's mode like midichar's (it stayed 0700 before)
    assert oct(tok.dir.stat().st_mode & 0o777) == oct(0o777 & ~current_umask())
    with pytest.raises(ThereminError, match=r"tokenizer\.kind='wordpiece'"):
        get_or_train_configured(corpus / "train.txt", {"kind": "wordpiece", "vocab_size": 400}, corpus, codec)


def test_theremin_tokenize_measures_a_remi_tokenizer(tok, corpus, texts, codec, capsys):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from theremin import config as resolvers  # noqa: F401
    from theremin.apps.tokenize import tokenize
    from theremin.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("tokenize", overrides=["tokenizer=remi_bpe", "tokenizer.vocab_size=400",
                                             "tokenizer.max_duration_beats=4", f"data.corpus_dir={corpus}",
                                             f"data.tokenizer_cache={corpus / 'tokenizers'}"])
    out = tokenize(cfg)
    assert out["dir"] == str(tok.dir) and out["from_cache"]
    notes = sum(codec.count_notes(t) for t in texts[:3])
    assert out["notes"] == notes and out["grid_missing"] == 0 and out["grid_added"] == 0
    assert f"same notes: {notes} of {notes} on the grid" in capsys.readouterr().out


def test_a_remi_checkpoint_is_refused_by_name_where_midichar_is_needed(tok, codec, tmp_path):
    import torch

    from theremin.model.checkpoint import CheckpointError, open_checkpoint, tokenizer_files
    from theremin.model.gpt import GPT, GPTConfig

    config = {"n_layer": 1, "n_head": 1, "n_embd": 8, "block_size": 16, "vocab_size": tok.vocab_size}
    state = {f"model.{k}": v for k, v in GPT(GPTConfig(**config)).state_dict().items()}
    ckpt = tmp_path / "remi.ckpt"
    torch.save({"hyper_parameters": {"model": config, "codec": codec.config, "tokenizer": {"dir": str(tok.dir)}},
                "state_dict": state, "theremin": {"format": 1, "tokenizer": tokenizer_files(tok)}}, ckpt)
    with pytest.raises(CheckpointError, match="holds a remi tokenizer: rolling, scoring and fine-tuning need"):
        open_checkpoint(ckpt)
    assert open_checkpoint(ckpt, with_tokenizer=False).tokenizer is None  # resuming a REMI run still opens it


def test_a_midichar_loader_refuses_a_remi_tokenizer(tok):
    from theremin.codec.tokenizer import MidiTokenizer

    with pytest.raises(ThereminError, match="is a remi tokenizer, not midichar"):
        MidiTokenizer.load(tok.dir)


@pytest.mark.parametrize("vocab_size, words", [(100, "too small for REMI"), (100_000, "too large")])
def test_a_vocab_the_corpus_cannot_support_names_the_setting(corpus, codec, tmp_path, vocab_size, words):
    with pytest.raises(ThereminError, match=rf"tokenizer\.vocab_size={vocab_size} is {words}"):
        get_or_train(corpus / "train.txt", vocab_size, tmp_path, codec, **SMALL)
    assert not any(p.is_dir() for p in tmp_path.iterdir())  # nothing half-trained left in the cache


def test_midichar_settings_are_refused_by_name(corpus, codec, tmp_path):
    with pytest.raises(ThereminError, match="fallback"):
        get_or_train(corpus / "train.txt", 400, tmp_path, codec, fallback="bytes")


def test_decoding_sampled_ids(tok, texts):
    ids = tok.encode(texts[0])
    broken = [*ids[:5], tok.bos_id, *ids[5:]]  # specials are skipped
    assert tok.decode(broken) == tok.decode(ids)
    pitch_only = [i for i in range(tok.vocab_size) if tok.tokens([i]) == ["Pitch_60"]]
    garbage = [*ids[:10], *pitch_only * 3, *ids[10:]]  # pitches with no velocity or duration: not REMI
    with pytest.raises(ThereminError, match="grammar"):
        tok.decode(garbage)
    assert tok.decode(garbage, errors="ignore")  # the valid notes survive
    with pytest.raises(ThereminError, match="outside"):
        tok.decode([tok.vocab_size + 3])


def test_the_sampling_callback_skips_a_remi_run(tok, tmp_path):
    """Rolling (theremin.roll.roller.Roller) is midichar-only: the default callback must not break a REMI run."""
    from types import SimpleNamespace

    from theremin.roll.callbacks import SampleMidi

    cb = SampleMidi(out_dir=str(tmp_path / "samples"))
    trainer = SimpleNamespace(sanity_checking=False, fast_dev_run=False, datamodule=SimpleNamespace(tokenizer=tok),
                              global_step=1, loggers=[])
    cb.on_validation_end(trainer, None)
    assert not (tmp_path / "samples").exists()


@pytest.mark.slow  # ~100 s on a busy 2-core machine (REMI BPE on 30 chorales x 3 transpositions)
def test_training_on_remi_reports_bits_per_note_over_the_same_notes(bach_midi, tmp_path):
    """theremin-train's own pipeline with tokenizer=remi_bpe (default callbacks: sampling skips REMI): the val
    notes are the corpus's, counted exactly."""
    import json

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from theremin import config as resolvers  # noqa: F401
    from theremin.apps.train import train
    from theremin.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[
            "model=nano", "tokenizer=remi_bpe", "tokenizer.vocab_size=1000", "data.block_size=64",
            "data.batch_size=8", "data.transpose=[-1,1]", "logger=csv", "trainer.max_steps=2",
            "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
            f"paths.data_dir={tmp_path / 'data'}", f"data.input_dir={bach_midi}"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.run_name = "remi"
        del cfg["hydra"]
    metrics = train(cfg)
    assert 0 < metrics["val/bits_per_note"] < 20
    corpus = tmp_path / "data" / "corpus" / "bach"
    (tok_dir,) = [p for p in (corpus / "tokenizers").iterdir() if p.is_dir()]
    assert kind_of(tok_dir) == "remi"
    meta = json.loads((tok_dir / "tokens" / "tokens.json").read_text())
    val = [ln for ln in (corpus / "val.txt").read_text(encoding="utf-8").split("\n") if ln]
    assert meta["val"]["notes"] == sum(MidiChar().count_notes(t) for t in val)
    assert metrics["val/notes_per_token"] == pytest.approx(meta["val"]["notes"] / (meta["val"]["tokens"] - 1), rel=1e-4)


# ---- instruments: every note seen without programs, each part kept with them ------------------------------------
def test_note_counts_count_every_band_note_once_drums_included(band_tok, band_texts, codec):
    programs = band_tok.meta["options"]["use_programs"]
    for text in band_texts:
        drums = sum(codec.drum_flags(text))
        assert drums == len(drum_pattern(3)) + 1  # + pitch 25
        ids = band_tok.encode(text)
        counts = band_tok.note_counts(ids)
        assert len(counts) == len(ids) and sum(counts) == codec.count_notes(text)
        kinds = Counter(t.split("_")[0] for t in band_tok.tokens(ids))
        assert kinds["PitchDrum"] == (drums if programs else 0)
        assert kinds["Pitch"] + kinds["PitchDrum"] == codec.count_notes(text)
        assert kinds["Program"] == (codec.count_notes(text) if programs else 0)  # one per note: no program changes


def test_a_band_round_trips_per_part(band_tok, band_texts, codec):
    """With programs each part comes back as its program + drum flag (names are not REMI's); without, every note
    comes back on one piano part. Either way the same notes on the grid."""
    programs = band_tok.meta["options"]["use_programs"]
    for text in band_texts:
        back = band_tok.decode(band_tok.encode(text))
        parts = codec.decode_parts(back)[2]
        if programs:
            assert parts == [Part(p.program, p.is_drum) for p in BAND]
            assert _by_sound(codec, back) == _by_sound(codec, text)
        else:
            assert parts == [PIANO]
            assert _by_sound(codec, back) == {(0, False): sum(_by_sound(codec, text).values(), Counter())}
        report = grid_mismatches(band_tok, text)
        assert report["missing"] == report["added"] == report["clipped"] == 0
        assert report["notes"] == codec.count_notes(text)


def test_one_track_merges_notes_of_different_parts_and_programs_keep_them(band_tok, codec):
    """A kick (drum 36) and a bass note 36 at one onset: one piano track sounds them as one note (reported as
    missing), programs keep both; note counts see both either way."""
    text = codec.encode(_piece([(0, 480, 36, 100, 2), (0, 480, 36, 100, 1), (480, 960, 60, 80, 0)], parts=BAND))
    assert sum(band_tok.note_counts(band_tok.encode(text))) == 3
    report = grid_mismatches(band_tok, text)
    assert report["missing"] == (0 if band_tok.meta["options"]["use_programs"] else 1) and report["added"] == 0


def test_use_programs_is_part_of_the_cache_key_and_of_its_config(tok, corpus, codec):
    from omegaconf import OmegaConf

    from theremin.config import conf_dir

    assert tok.meta["options"]["use_programs"] is False and not tok.remi.config.use_programs
    assert RemiTokenizer.cache_name(corpus / "train.txt", 400, codec, **SMALL, use_programs=True) != tok.dir.name
    assert RemiTokenizer.cache_name(corpus / "train.txt", 400, codec, **SMALL, use_programs=False) == tok.dir.name
    base = OmegaConf.to_container(OmegaConf.load(conf_dir() / "tokenizer" / "remi_bpe.yaml"))
    programs = OmegaConf.to_container(OmegaConf.load(conf_dir() / "tokenizer" / "remi_bpe_programs.yaml"))
    assert programs == {"defaults": ["remi_bpe", "_self_"], "use_programs": True}
    assert "use_programs" not in base  # remi_bpe keeps the default: false

"""Sampling constraints walk midichar's grammar: what they allow decodes strictly, what they refuse would not."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from theremin.codec.midichar import BASE, DUR_EXT, NOTE, REST, START, TEMPO_HI, TEMPO_LO, CodecError, MidiChar
from theremin.codec.tokenizer import MidiTokenizer
from theremin.model.gpt import GPT, GPTConfig
from theremin.music.midi import Note, Piece
from theremin.roll.constraints import ConstraintError, Constraints, RowState, parse_key
from theremin.roll.roller import Roller, SamplingSettings, register_window

CODEC = MidiChar()


def random_piece(rng: random.Random) -> Piece:
    """Chords on a few steps and lengths, with rests, long notes (DUR_EXT) and tempo changes (one under 4096 us)."""
    notes, tempos, pos = [], [], 0
    for _ in range(50):
        pos += rng.choice([0, 6, 12, 12, 24, 12 * 40])
        dur = rng.choice([6, 12, 24, 12 * 70])
        notes += [Note(pos * 40, (pos + dur) * 40, p, 80) for p in rng.sample(range(55, 70), rng.randint(1, 3))]
        if rng.random() < 0.1:
            tempos.append((pos * 40, rng.choice([400_000, 600_000, 3000])))
    return Piece(notes, 480, tempos=tempos)


@pytest.fixture(scope="module")
def toks(tmp_path_factory) -> dict[str, MidiTokenizer]:
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("ctoks")
    corpus = root / "train.txt"
    corpus.write_text("".join(CODEC.encode(random_piece(rng)) + "\n" for _ in range(40)), encoding="utf-8")
    return {"bytes": MidiTokenizer.train(corpus, 600, root / "bytes", CODEC, fallback="bytes"),
            "factored": MidiTokenizer.train(corpus, 900, root / "factored", CODEC, fallback="factored",
                                            char_budget=1.0),
            "relative": MidiTokenizer.train(corpus, 900, root / "relative", CODEC, fallback="factored",
                                            char_budget=1.0, pitch="relative"),
            "relative_bytes": MidiTokenizer.train(corpus, 900, root / "relative_bytes", CODEC, fallback="bytes",
                                                  pitch="relative")}


def decodes(text: str) -> bool:
    """A valid text, or a valid one cut inside a tempo (its TEMPO_LO is still to come)."""
    try:
        CODEC.decode(text)
    except CodecError as e:
        return "ends inside a tempo" in str(e)
    return True


def walk(cons: Constraints, rng: random.Random, steps: int, complete: bool = True) -> tuple[list[int], RowState]:
    """Tokens drawn among those the masks allow (then, with ``complete``, more until the text is complete)."""
    row, ids = RowState(), []
    while len(ids) < steps or (complete and not cons.complete(row)):
        allowed = cons.row_mask(row).nonzero().flatten().tolist()
        ids.append(rng.choice(allowed))
        cons.advance(row, ids[-1])
    return ids, row


@pytest.mark.parametrize("name", ["bytes", "factored", "relative", "relative_bytes"])
@pytest.mark.parametrize("kwargs", [{}, {"pitch_range": (57, 66), "key": "D minor", "max_polyphony": 2}])
def test_every_allowed_walk_decodes_strictly(toks, name, kwargs):
    tok, rng = toks[name], random.Random(1)
    cons = Constraints(tok, **kwargs)
    for _ in range(100):
        ids, row = walk(cons, rng, rng.randint(1, 40))
        text = tok.decode(ids)
        piece = CODEC.decode(text)  # strict: raises on any char the grammar refuses
        assert CODEC.repair(text) == text
        assert row.notes == len({(n.start, n.pitch) for n in piece.notes})
        if kwargs:
            assert all(57 <= n.pitch <= 66 for n in piece.notes)


def test_masks_allow_exactly_the_tokens_that_keep_the_text_decodable(toks):
    tok, rng = toks["bytes"], random.Random(2)
    cons = Constraints(tok)
    zero_tempo_hi = chr(BASE + CODEC.tempo_hi_lo)  # a tempo under 4096 us: valid, but never sampled
    seen: dict[int, int] = {}
    for _ in range(300):
        ids, row = walk(cons, rng, rng.randint(0, 12), complete=False)  # may stop inside a tempo
        if seen.get(row.state, 0) >= 3:
            continue
        seen[row.state] = seen.get(row.state, 0) + 1
        text, allowed = tok.decode(ids), cons.mask(row.state)
        for t, piece in enumerate(cons.pieces):
            if piece is None:  # byte pieces, unk, bos, eos: never sampled
                assert not allowed[t]
                continue
            expected = decodes(text + piece) and zero_tempo_hi not in piece
            assert bool(allowed[t]) == expected, (row.state, piece)
    assert set(seen) == {START, NOTE, DUR_EXT, REST, TEMPO_HI, TEMPO_LO}  # every state the sampler can be in


SAMPLING = {"temperature": 1.0, "top_k": None, "top_p": None, "min_p": None}


def roll_rows(cons: Constraints, tok, seed: int, n_notes: int, prompt: str = "",
              register: tuple[int, int] | None = None) -> list[str]:
    """Texts sampled through ``apply`` from random logits (4 rows), each prompt + continuation, decoded whole."""
    gen = torch.Generator().manual_seed(seed)
    prompt_ids = tok.encode(prompt)
    base = RowState(register=register)
    for t in prompt_ids:
        cons.advance(base, t)
    texts = []
    for _ in range(4):
        row, ids = base.copy(), list(prompt_ids)
        while not row.done:
            assert len(ids) < len(prompt_ids) + 40 * n_notes + 200
            logits = torch.randn(tok.vocab_size, generator=gen) * 3
            out = cons.apply(row, logits, row.notes - base.notes >= n_notes, SAMPLING)
            t = int(torch.multinomial(out.softmax(-1), 1, generator=gen))
            if t != tok.eos_id:
                ids.append(t)
            cons.advance(row, t)
        texts.append(tok.decode(ids))
        assert row.notes == len({(n.start, n.pitch) for n in CODEC.decode(texts[-1]).notes})
    return texts


RANGE_KEY = [{"key": "D dorian"}, {"pitch_range": (48, 72)}, {"pitch_range": (48, 72), "key": "D dorian"},
             {"pitch_range": (61, 61)}]


@pytest.mark.parametrize("name", ["relative", "relative_bytes", "factored", "bytes"])
@pytest.mark.parametrize("kwargs", RANGE_KEY)
def test_pitch_range_and_key_hold_for_every_sampled_note(toks, name, kwargs):
    """Relative tokens are checked at the pitch they decode to from the row's state; absolute ones as before."""
    tok = toks[name]
    cons = Constraints(tok, max_polyphony=3, **kwargs)
    lo, hi = kwargs.get("pitch_range", (0, 127))
    pcs = parse_key(kwargs["key"]) if "key" in kwargs else set(range(12))
    if name in ("bytes", "factored"):  # absolute: the static masks are all there is
        assert cons.row_mask(RowState()).equal(cons.mask(START))
    for seed in range(4):
        for text in roll_rows(cons, tok, seed, 24):
            notes = CODEC.decode(text).notes
            assert len(notes) >= 1
            assert all(lo <= n.pitch <= hi and n.pitch % 12 in pcs for n in notes), sorted(n.pitch for n in notes)
            for n in notes:
                assert sum(1 for m in notes if m.start <= n.start < m.end) <= 3


@pytest.mark.parametrize("name", ["relative", "factored"])
def test_a_prompt_far_outside_the_range_sets_where_intervals_count_from(toks, name):
    """The prompt ends high; the range excludes its whole region: continuations still land only in range."""
    tok = toks[name]
    prompt = CODEC.encode(Piece([Note(i * 480, i * 480 + 480, p, 80) for i, p in enumerate((60, 80, 96))]
                                + [Note(3 * 480, 4 * 480, p, 80) for p in (100, 104, 107)], 480))
    cons = Constraints(tok, pitch_range=(48, 60), key="C major")
    for seed in range(4):
        for text in roll_rows(cons, tok, seed, 16, prompt):
            assert text.startswith(prompt)
            old = {(n.start, n.pitch) for n in CODEC.decode(prompt).notes}
            new = [n for n in CODEC.decode(text).notes if (n.start, n.pitch) not in old]
            assert new and all(48 <= n.pitch <= 60 and n.pitch % 12 in parse_key("C major") for n in new)


@pytest.mark.parametrize("name", ["relative", "relative_bytes"])
def test_relative_chords_rise_also_from_a_high_prompt(toks, name):
    """A chord note's interval counts up from the note before it; one that wraps past 127 decodes to a note far
    below the chord (a keep_bars roll once added pitch 1 to a chord at 62). From a prompt ending on a chord at the
    top of the range, every onset's pitches rise in the text, with no pitch constraint at all."""
    tok = toks[name]
    prompt = CODEC.encode(Piece([Note(0, 480, p, 80) for p in (60, 64)] + [Note(480, 960, p, 80) for p in (118, 124)],
                                480))
    cons = Constraints(tok)
    for seed in range(3):
        for text in roll_rows(cons, tok, seed, 24, prompt):
            grid = CODEC.decode_grid(text)[0]
            for (pos, _, pitch, _), (pos2, _, pitch2, _) in itertools.pairwise(grid):
                assert pos2 > pos or pitch2 > pitch, (pos, pitch, pitch2)


@pytest.mark.parametrize("name", ["relative", "relative_bytes", "factored", "bytes"])
def test_a_register_window_keeps_sampled_notes_inside_it(toks, name):
    """The soft register window (sampling.register_margin) keeps every new note inside it: a relative token that
    opens a chord note (its factor group with the step comes before the one with the pitch) needs room above the
    note below it, else the chord note, bound to rise, left the window (a pop roll stacked chords up to C9).
    Without it the same random logits wander outside (the window is narrower than the corpus's 55-70)."""
    tok = toks[name]
    cons = Constraints(tok)
    prompt = CODEC.encode(Piece([Note(i * 480, i * 480 + 480, p, 80) for i, p in enumerate((60, 62, 64, 62))], 480))
    old = {(n.start, n.pitch) for n in CODEC.decode(prompt).notes}

    def new_pitches(register):
        return [n.pitch for seed in range(3) for text in roll_rows(cons, tok, seed, 24, prompt, register)
                for n in CODEC.decode(text).notes if (n.start, n.pitch) not in old]

    kept = new_pitches((58, 66))
    assert len(kept) >= 3 * 4 * 24 and all(58 <= p <= 66 for p in kept), sorted(set(kept))
    free = new_pitches(None)
    assert sum(58 <= p <= 66 for p in free) < 0.8 * len(free)


def test_the_roller_takes_its_register_from_the_prompt(toks):
    """register_margin=M: new notes stay within M semitones of the prompt's lowest and highest notes; an
    explicit pitch_range replaces the window; None lets them go anywhere."""
    tok = toks["relative"]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=1, n_head=1, n_embd=16)).eval()
    roller = Roller(model, tok, CODEC)
    prompt = Piece([Note(i * 480, i * 480 + 480, p, 80) for i, p in enumerate((60, 64, 67, 64))], 480)

    def new_pitches(**kw):
        res = roller.roll(prompt, SamplingSettings(n=3, length=16, seed=2, top_p=None, temperature=2.0, **kw))
        return [n.pitch for v in res.variations for n in v.piece.notes if (n.start, n.pitch) not in v.prompt_notes]

    assert register_window([60, 64, 67, 64], SamplingSettings(register_margin=5)) == (55, 72)
    assert register_window([], SamplingSettings()) == (21, 108)
    assert register_window([60, 64, 67, 64], SamplingSettings(pitch_range=(40, 50))) is None
    assert all(55 <= p <= 72 for p in new_pitches(register_margin=5))
    assert all(40 <= p <= 50 for p in new_pitches(register_margin=5, pitch_range=(40, 50)))
    assert not all(55 <= p <= 72 for p in new_pitches(register_margin=None))


def test_relative_row_counts_absolute_pitches(toks):
    """Equal intervals are different pitches: a chord C E G# counts three notes and repeats none."""
    tok = toks["relative"]
    cons = Constraints(tok)
    text = CODEC.encode(Piece([Note(0, 480, p, 80) for p in (60, 64, 68)] + [Note(480, 960, 72, 80)], 480))
    row = RowState()
    for t in tok.encode(text):
        cons.advance(row, t)
    assert (row.notes, row.chord, row.prev, row.group_first) == (4, {72}, 72, 72)


def test_roller_decodes_a_relative_continuation_after_its_prompt(toks):
    """Roller with a (random) GPT over a relative tokenizer: the continuation's intervals count from the prompt."""
    tok = toks["relative"]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=1, n_head=1, n_embd=16)).eval()
    roller = Roller(model, tok, CODEC)
    prompt = Piece([Note(i * 480, i * 480 + 480, p, 80) for i, p in enumerate((90, 95, 100, 105))], 480)
    s = SamplingSettings(n=3, length=12, seed=1, top_p=None, pitch_range=(40, 55), key="G minor")
    for v in roller.roll(prompt, s).variations:
        new = [n for n in v.piece.notes if (n.start, n.pitch) not in v.prompt_notes]
        assert sorted(p for _, p in v.prompt_notes) == [90, 95, 100, 105]
        assert len(new) == v.generated_notes == 12
        assert all(40 <= n.pitch <= 55 and n.pitch % 12 in parse_key("G minor") for n in new)


def test_relative_pitch_constraints_need_the_pitch_in_the_last_factor_group(tmp_path):
    corpus = tmp_path / "train.txt"
    rng = random.Random(3)
    corpus.write_text("".join(CODEC.encode(random_piece(rng)) + "\n" for _ in range(20)), encoding="utf-8")
    tok = MidiTokenizer.train(corpus, 700, tmp_path / "tok", CODEC, fallback="factored", char_budget=1.0,
                              pitch="relative", factor_layout="pitch,step+vel,dur")
    Constraints(tok, max_polyphony=2)  # no pitch constraint: nothing to refuse
    with pytest.raises(ConstraintError, match="factor_layout"):
        Constraints(tok, key="C major")

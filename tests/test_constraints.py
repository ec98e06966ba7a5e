"""Sampling constraints walk midichar's grammar: what they allow decodes strictly, what they refuse would not."""

from __future__ import annotations

import random

import pytest

from theremin.constraints import Constraints, RowState
from theremin.midi import Note, Piece
from theremin.midichar import BASE, DUR_EXT, NOTE, REST, START, TEMPO_HI, TEMPO_LO, CodecError, MidiChar
from theremin.tokenizer import MidiTokenizer

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
                                            char_budget=1.0)}


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
        allowed = cons.mask(row.state).nonzero().flatten().tolist()
        ids.append(rng.choice(allowed))
        cons.advance(row, ids[-1])
    return ids, row


@pytest.mark.parametrize("name", ["bytes", "factored"])
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

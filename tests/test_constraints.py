"""Sampling constraints walk midichar's grammar: what they allow decodes strictly, what they refuse would not."""

from __future__ import annotations

import itertools
import random

import midi_factory
import pytest
import torch

from theremin.codec import midichar
from theremin.codec.midichar import (
    BASE,
    DECL,
    DUR_EXT,
    NOTE,
    REST,
    SELECT,
    START,
    TEMPO_HI,
    TEMPO_LO,
    CodecError,
    MidiChar,
)
from theremin.codec.tokenizer import MidiTokenizer, to_relative
from theremin.model.gpt import GPT, GPTConfig
from theremin.music.midi import PIANO, Note, Part, Piece
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
    """A valid text, or a valid one cut inside a tempo (its TEMPO_LO is still to come) or after a part switch (its
    note is still to come)."""
    try:
        CODEC.decode(text)
    except CodecError as e:
        return "ends inside a tempo" in str(e) or "ends after a part switch" in str(e)
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
              register: tuple[int, int] | None = None, allowed: frozenset[str] | None = None) -> list[str]:
    """Texts sampled through ``apply`` from random logits (4 rows), each prompt + continuation, decoded whole;
    ``allowed``: the parts the rows may switch to."""
    gen = torch.Generator().manual_seed(seed)
    prompt_ids = tok.encode(prompt)
    base = RowState(register=register, allowed_parts=allowed)
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
        assert row.notes == len({(n.start, n.pitch, n.part) for n in CODEC.decode(texts[-1]).notes})
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
            for (pos, _, pitch, *_), (pos2, _, pitch2, *_) in itertools.pairwise(grid):
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


# ---- instruments ---------------------------------------------------------------------------------------------
KEYS, BASS, DRUMS = Part(0, False, "keys"), Part(33, False, "bass"), Part(0, True, "drums")
OTHERS = [Part(25, False), Part(48, False, "strings"), Part(0, False, "keys 2")]  # in the corpus, not the prompt


def band_piece(rng: random.Random, parts, bars: int = 4) -> Piece:
    return midi_factory.band_piece(rng, parts, bars)


BAND_PROMPT = CODEC.encode(band_piece(random.Random(7), [KEYS, BASS, DRUMS], bars=1))


@pytest.fixture(scope="module")
def band_toks(tmp_path_factory) -> dict[str, MidiTokenizer]:
    """Tokenizers of band pieces (keys, bass, drums, and other parts the prompt lacks, in any order)."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("btoks")
    corpus = root / "train.txt"
    lines = []
    for _ in range(40):
        parts = [KEYS, BASS, DRUMS, *rng.sample(OTHERS, rng.randint(0, 2))]
        rng.shuffle(parts)
        lines.append(CODEC.encode(band_piece(rng, parts)))
    corpus.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    opts = {"bytes": dict(fallback="bytes"), "factored": dict(fallback="factored", char_budget=1.0),
            "relative": dict(fallback="factored", char_budget=1.0, pitch="relative"),
            "relative_bytes": dict(fallback="bytes", pitch="relative")}
    return {name: MidiTokenizer.train(corpus, 700 if name == "bytes" else 1000, root / name, CODEC, **o)
            for name, o in opts.items()}


def band_row(cons: Constraints, tok, prompt: str = BAND_PROMPT, **fields) -> tuple[list[int], RowState]:
    """The prompt's ids and the row after them (as the Roller builds it), allowed the prompt's parts."""
    ids, row = tok.encode(prompt), RowState(**fields)
    for t in ids:
        cons.advance(row, t)
    row.allowed_parts = cons.allowed_parts(prompt)
    return ids, row


def selects(text: str) -> set[str]:
    return {ch for ch in text if CODEC.char_class(ch) == SELECT}


def part_code(parts: list[Part], k: int) -> int:
    """The SELECT code (RowState.part) of part ``k`` of a piece."""
    return ord(CODEC.part_keys(parts)[k]) - BASE - CODEC.select_lo


def test_a_row_learns_its_part_from_the_prompt(band_toks):
    """The header's first DECL sets the part, each SELECT switches; no header: the piano (SELECT code 0)."""
    tok = band_toks["relative"]
    cons = Constraints(tok)
    for parts in ([KEYS, BASS, DRUMS], [DRUMS, KEYS], [BASS]):
        text = CODEC.encode(band_piece(random.Random(1), parts, bars=1))
        _, row = band_row(cons, tok, text)
        last = [ch for ch in text if CODEC.char_class(ch) == SELECT]
        want = CODEC.split_select(last[-1]) if last else (parts[0], 0)
        assert (row.part % 256, row.part // 256, row.drum) == (midichar.sound(want[0]), want[1], want[0].is_drum)
        assert row.allowed_parts == frozenset(CODEC.part_keys(parts)) == cons.allowed_parts(parts)
        notes, _, dec = CODEC.decode_parts(text)
        assert row.notes == len({(n[0], n[2], n[4]) for n in notes})
        for k, part in enumerate(dec):  # each pitched part's references: its own last notes
            if part.is_drum:
                continue
            mine = [n for n in notes if n[4] == k]
            code = part_code(dec, k)
            onset, prev, first = (row.onset, row.prev, row.group_first) if code == row.part else row.others[code]
            assert (onset, prev, first) == (mine[-1][0], mine[-1][2], min(n[2] for n in mine if n[0] == onset))
    _, row = band_row(cons, tok, CODEC.encode(Piece([Note(0, 480, 60, 80)], 480)))
    assert (row.part, row.drum, row.allowed_parts) == (0, False, {CODEC.select_char(PIANO, 0)})


@pytest.mark.parametrize("name", ["bytes", "factored", "relative", "relative_bytes"])
def test_a_roll_switches_only_to_the_allowed_parts(band_toks, name):
    """From a band prompt (keys, bass, drums) walks never select a part outside the allowed set, and still end
    complete; with every part allowed, the same vocabulary does switch to others (strings, guitar...)."""
    tok, rng = band_toks[name], random.Random(3)
    cons = Constraints(tok)
    prompt_ids, base = band_row(cons, tok)
    keys_and_drums = frozenset(CODEC.part_keys([KEYS, BASS, DRUMS])[::2])
    assert cons.mask(NOTE, base.allowed_parts).sum() < cons.mask(NOTE).sum()
    outside = set()
    for allowed in (base.allowed_parts, keys_and_drums, None):
        for _ in range(12):
            row, ids = base.copy(), list(prompt_ids)
            row.allowed_parts = allowed
            while len(ids) < len(prompt_ids) + 40 or not cons.complete(row):
                ids.append(rng.choice(cons.row_mask(row).nonzero().flatten().tolist()))
                cons.advance(row, ids[-1])
            text = tok.decode(ids)
            notes = CODEC.decode_grid(text)[0]  # strict
            assert text.startswith(BAND_PROMPT) and row.notes == len({(n[0], n[2], n[4]) for n in notes})
            new = selects(text[len(BAND_PROMPT):])
            if allowed is None:
                outside |= new - base.allowed_parts
            else:
                assert new <= allowed, [CODEC.split_select(ch) for ch in new - allowed]
    assert outside  # the mask has something to refuse


def test_part_masks_allow_exactly_the_decodable_tokens_of_allowed_parts(band_toks):
    """After a band prompt, or from nothing (where a header may start: a DECL of an allowed sound only)."""
    tok, rng = band_toks["bytes"], random.Random(4)
    cons = Constraints(tok)
    states = set()
    for prompt in (BAND_PROMPT, ""):
        prompt_ids, base = band_row(cons, tok, prompt)
        allowed = base.allowed_parts
        sounds = {CODEC.split_select(ch)[0] for ch in allowed}
        for _ in range(30):
            row, ids = base.copy(), list(prompt_ids)
            for _ in range(rng.randint(0, 6)):
                ids.append(rng.choice(cons.row_mask(row).nonzero().flatten().tolist()))
                cons.advance(row, ids[-1])
            states.add(row.state)
            text, mask = tok.decode(ids), cons.mask(cons._state(row), allowed)
            for t, piece in enumerate(cons.pieces):
                declared = {Part(ord(ch) - BASE - CODEC.decl_lo) for ch in piece or "" if CODEC.char_class(ch) == DECL}
                ok = piece is not None and decodes(text + piece) and selects(piece) <= allowed and \
                    declared <= sounds and chr(BASE + CODEC.tempo_hi_lo) not in piece
                assert bool(mask[t]) == ok, (row.state, piece)
    assert {START, NOTE, SELECT} <= states


def _new_notes(text: str, prompt: str):
    """(pitched, drum) notes of ``text`` after ``prompt``'s: (start, end, pitch) per note."""
    old = {(n.start, n.pitch, n.part) for n in CODEC.decode(prompt).notes}
    piece = CODEC.decode(text)
    new = [n for n in piece.notes if (n.start, n.pitch, n.part) not in old]
    return [n for n in new if not piece.parts[n.part].is_drum], [n for n in new if piece.parts[n.part].is_drum]


@pytest.mark.parametrize("name", ["bytes", "factored", "relative", "relative_bytes"])
def test_key_and_pitch_range_hold_for_pitched_notes_and_spare_drums(band_toks, name):
    """C major in [60, 72] holds for every new note of the keys and bass; drum notes (kick 36, snare 38, hats 42)
    are sounds, outside that range, and still played."""
    tok = band_toks[name]
    cons = Constraints(tok, pitch_range=(60, 72), key="C major")
    c_major = parse_key("C major")
    pitched, drums = [], []
    for seed in range(4):
        for text in roll_rows(cons, tok, seed, 24, BAND_PROMPT, allowed=cons.allowed_parts(BAND_PROMPT)):
            p, d = _new_notes(text, BAND_PROMPT)
            pitched += p
            drums += d
    assert pitched and all(60 <= n.pitch <= 72 and n.pitch % 12 in c_major for n in pitched)
    assert any(n.pitch < 60 for n in drums), sorted({n.pitch for n in drums})
    if name in ("bytes", "factored"):  # absolute: the very same note char, masked for the keys, not the drums
        kick = next(t for t, p in enumerate(cons.pieces) if p and len(p) == 1 and CODEC.is_note(p)
                    and CODEC.split_note(p)[3] == 36)
        _, row = band_row(cons, tok)
        for k, ok in ((2, True), (0, False)):  # in the drums, in the keys
            row.part = part_code([KEYS, BASS, DRUMS], k)
            assert bool(cons.row_mask(row)[kick]) == ok


def _relative_brute_force(cons: Constraints, tok, ids: list[int], row: RowState) -> torch.Tensor:
    """What row_mask should allow, by decoding every candidate: the pitched notes it adds in range and key, and
    (where some token can) each on an onset of its part rising above the part's note before it."""
    base = cons.mask(cons._state(row), row.allowed_parts)
    before = len(CODEC.decode_grid(CODEC.repair(tok.decode(ids, errors="ignore")))[0])
    in_range, rising = torch.zeros_like(base), torch.zeros_like(base)
    for t in base.nonzero().flatten().tolist():
        notes, _, parts = CODEC.decode_parts(CODEC.repair(tok.decode([*ids, t], errors="ignore")))
        last: dict[int, tuple[int, int]] = {}
        in_range[t] = rising[t] = True
        for i, (pos, _, pitch, _, part) in enumerate(notes):
            if parts[part].is_drum:
                continue
            if i >= before:
                in_range[t] &= pitch in cons.allowed_pitches
                rising[t] &= last.get(part, (-1, 0))[0] != pos or pitch > last[part][1]
            last[part] = (pos, pitch)
    m = base & in_range
    return m & rising if (m & rising).any() else m


@pytest.mark.parametrize("name", ["relative", "relative_bytes"])
def test_relative_band_masks_are_exact(band_toks, name):
    """A relative token that switches parts counts each part's intervals from that part's own notes, drum notes
    being absolute: the row's mask is exactly what decoding every candidate says."""
    tok, rng = band_toks[name], random.Random(5)
    cons = Constraints(tok, pitch_range=(40, 72), key="D dorian")
    prompt_ids, base = band_row(cons, tok)
    checked = 0
    for walk in range(6):
        row, ids = base.copy(), list(prompt_ids)
        row.allowed_parts = None if walk % 2 else row.allowed_parts
        for step in range(16):
            m = cons.row_mask(row)
            if step % 4 == 3:
                assert torch.equal(m, _relative_brute_force(cons, tok, ids, row)), (walk, step, row.part)
                checked += 1
            ids.append(rng.choice(m.nonzero().flatten().tolist()))
            cons.advance(row, ids[-1])
    assert checked == 24


@pytest.mark.parametrize("name", ["relative", "factored"])
def test_a_register_window_holds_pitched_notes_only(band_toks, name):
    tok = band_toks[name]
    cons = Constraints(tok)
    pitched, drums = [], []
    for seed in range(3):
        for text in roll_rows(cons, tok, seed, 24, BAND_PROMPT, register=(45, 70),
                              allowed=cons.allowed_parts(BAND_PROMPT)):
            p, d = _new_notes(text, BAND_PROMPT)
            pitched += p
            drums += d
    assert pitched and all(45 <= n.pitch <= 70 for n in pitched), sorted({n.pitch for n in pitched})
    assert any(n.pitch < 45 for n in drums)


@pytest.mark.parametrize("name", ["factored", "relative"])
def test_polyphony_counts_pitched_notes_only(band_toks, name):
    """max_polyphony=2: never more than two pitched notes sound at once, while drum hits sound over them. (Factored
    tokenizers: a note of any step can be spelled, so a row that must place a note always has one that fits.)"""
    tok = band_toks[name]
    cons = Constraints(tok, max_polyphony=2)
    over = 0
    for seed in range(3):
        for text in roll_rows(cons, tok, seed, 24, BAND_PROMPT, allowed=cons.allowed_parts(BAND_PROMPT)):
            pitched, drums = _new_notes(text, BAND_PROMPT)
            for n in pitched:
                assert sum(1 for m in pitched if m.start <= n.start < m.end) <= 2
            over += sum(1 for d in drums if sum(1 for m in pitched if m.start <= d.start < m.end) >= 2)
    assert over  # a drum hit on top of two sounding pitched notes
    # advanced by hand: one long keys note; the drums may hit on it, a second keys note may not (limit 1)
    one = Constraints(tok, max_polyphony=1)
    prompt = CODEC.encode(Piece([Note(0, 1920, 60, 80, 0), Note(0, 60, 36, 100, 1)], 480, parts=[KEYS, DRUMS]))
    _, row = band_row(one, tok, prompt)
    assert row.ends == [CODEC.grid * 4] and row.drum
    drum_hit = tok.encode(CODEC.note_char(CODEC.steps.index(3), 0, 2, 42))
    keys = tok.encode(CODEC.part_keys([KEYS])[0] + CODEC.note_char(CODEC.steps.index(3), 0, 2, 64))
    probe = row.copy()
    assert all(one.advance(probe, t, check_polyphony=True) for t in drum_hit)
    probe = row.copy()
    assert not all(one.advance(probe, t, check_polyphony=True) for t in keys)


@pytest.mark.parametrize("name", ["relative", "relative_bytes"])
def test_relative_band_texts_round_trip(band_toks, name):
    """Relative tokens of a band (drums absolute, each part's intervals its own) decode back exactly, held-out
    pieces and other part orders too, and sampled walks decode to what the rows counted."""
    tok = band_toks[name]
    rng = random.Random(9)
    for parts in ([KEYS, BASS, DRUMS], [DRUMS, BASS], [BASS, KEYS, OTHERS[1], DRUMS]):
        text = CODEC.encode(band_piece(rng, parts, bars=2))
        assert tok.decode(tok.encode(text)) == text
        assert CODEC.drum_flags(text) == CODEC.drum_flags(to_relative(CODEC, text))
    cons = Constraints(tok)
    for text in roll_rows(cons, tok, 0, 24, BAND_PROMPT):
        assert tok.decode(tok.encode(text)) == text


def test_a_codec_without_instruments_keeps_its_constraints(tmp_path):
    """Old tokenizers (their codec recorded no instruments): no part chars, no parts to allow, same walks."""
    old = MidiChar(instruments=False)
    rng = random.Random(6)
    corpus = tmp_path / "train.txt"
    corpus.write_text("".join(old.encode(random_piece(rng)) + "\n" for _ in range(20)), encoding="utf-8")
    tok = MidiTokenizer.train(corpus, 900, tmp_path / "tok", old, fallback="factored", char_budget=1.0,
                              pitch="relative")
    cons = Constraints(tok, pitch_range=(50, 70), key="G major", max_polyphony=3)
    assert cons.allowed_parts(BAND_PROMPT) is None and not cons._part_tokens
    prompt = old.encode(Piece([Note(i * 480, i * 480 + 480, p, 80) for i, p in enumerate((55, 62, 67))], 480))
    for text in roll_rows(cons, tok, 0, 16, prompt):
        piece = old.decode(text)
        assert piece.parts == [PIANO] and len(piece.notes) >= 19
        assert all(50 <= n.pitch <= 70 and n.pitch % 12 in parse_key("G major") for n in piece.notes)

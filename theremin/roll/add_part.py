"""``sampling.add_part``: roll one new part over the prompt's bars (a bass line for my chords, drums for my riff).

midichar orders a piece's notes by time across its parts, so a new part cannot simply follow the prompt: its
notes sit between the prompt's. The roll walks the prompt's span beat by beat. At each beat the model reads the
prompt's notes up to and including that beat's onset plus the new part's notes so far (the canonical text of
both, cut to the context as a prompt is), and rolls on with only the new part allowed (theremin.roll.constraints'
instrument mask) until its time passes the beat; the new part's notes inside that beat are kept. So every new
note is chosen knowing what the other parts played before it and on its own onset. The prompt's notes are never
changed. Naming a prompt track (``add_part=Bass``) re-rolls that track: its notes leave the prompt and the new
part takes its sound and name.
"""

from __future__ import annotations

import dataclasses

from theremin.music.midi import Note, Part, Piece
from theremin.roll.parts import PartSpecError, describe, new_part, select_parts
from theremin.roll.results import Goal, RollResult, Variation, parse_bars

MAX_TOKENS_PER_BEAT = 64  # a beat of one part: a few notes, their switches and rests


def split_new_part(piece: Piece, spec: str) -> tuple[Piece, Part]:
    """(the prompt without the part to re-roll, the part to roll): a prompt track named by ``spec`` is re-rolled
    (its notes go), anything else is a new part (drums, a family, a program)."""
    named = sorted(i for i, p in enumerate(piece.parts) if p.name and spec.strip().lower() == p.name.strip().lower())
    if not named:
        try:
            return piece, new_part(spec)
        except PartSpecError as e:
            raise PartSpecError(f"{e}; or one of the prompt's tracks to re-roll it: {describe(piece.parts)}") from None
    return drop_parts(piece, {named[0]}), piece.parts[named[0]]


def drop_parts(piece: Piece, drop: set[int]) -> Piece:
    """The piece without the parts ``drop`` (indices), the others renumbered in order."""
    keep = [i for i in range(len(piece.parts)) if i not in drop]
    renumber = {old: new for new, old in enumerate(keep)}
    notes = [Note(n.start, n.end, n.pitch, n.velocity, renumber[n.part]) for n in piece.notes if n.part in renumber]
    parts = [piece.parts[i] for i in keep]
    return Piece(notes, piece.ticks_per_beat, list(piece.tempos), list(piece.time_signatures), parts)


def mute_parts(piece: Piece, specs) -> Piece:
    """The prompt without the parts ``specs`` names (``sampling.mute``)."""
    return drop_parts(piece, select_parts(specs, piece.parts))


def roll_new_part(roller, piece: Piece, s, cons) -> RollResult:
    """``s.n`` variations of the prompt ``piece`` with the part ``s.add_part`` rolled over its bars (see the
    module docstring). The span: the prompt's bars ``s.prompt_bars`` (moved to start at bar 1) or its first
    ``s.keep_bars`` bars, else up to the end of the bar that holds its last onset; ``s.length`` does not apply."""
    codec = roller.codec
    rest, part = split_new_part(piece, s.add_part)  # PartSpecError names what the prompt has
    ts = piece.time_signatures[0][1:] if piece.time_signatures else (4, 4)
    bar = roller.bar_steps(ts)
    all_notes, _ = codec.quantize(piece)
    first, end = 0, (round((all_notes[-1][0] // bar + 1) * bar) if all_notes else 0)
    bars = (1, round(end / bar))
    if s.prompt_bars:
        bars = parse_bars(s.prompt_bars)
        first, end = round((bars[0] - 1) * bar), round(bars[1] * bar)
    elif s.keep_bars:
        end, bars = round(s.keep_bars * bar), (1, s.keep_bars)
    given, tempos = codec.quantize(rest)
    given = [(p - first, *n[1:]) for n in given if first <= (p := n[0]) < end]
    tempos = [(0, us) for t, us in tempos if t <= first][-1:] + [(t - first, us) for t, us in tempos if t > first]
    end -= first
    parts = [*rest.parts, part] if rest.notes else [part]
    if not rest.notes:
        given = []
    keys = codec.part_keys(parts)  # refuses a 13th part of one sound before any rolling
    if roller.tok.sp.piece_to_id(keys[-1]) == roller.tok.unk_id:  # spelled in bytes: never sampled
        raise PartSpecError(f"sampling.add_part={s.add_part!r}: this model's tokenizer has no token for a switch to "
                            f"{describe([part])}: its training corpus never had that part beside others, so the "
                            "model cannot play it (train on pieces where it plays with the others)")
    mine = len(parts) - 1
    k = codec.ticks_per_beat // codec.grid
    variations = []
    for b in range(s.n):
        new = _roll_one(roller, cons, s, b, given, tempos, parts, mine, frozenset({keys[mine]}), end, bar)
        text = roller._grid_text(sorted(given + new), tempos, parts)
        out = codec.decode(text)
        out.time_signatures = [(0, *ts)]
        variations.append(Variation(b, text, out, end * k, len(new),
                                    prompt_notes=frozenset((n[0] * k, n[2]) for n in given), clip_from=0))
    return RollResult(variations, len(given), False, 0.0, bars)


def _roll_one(roller, cons, s, b: int, given, tempos, parts, mine: int, allowed, end: int, bar: float) -> list:
    """The new part's notes (grid 5-tuples) of variation ``b``, beat by beat."""
    codec, tok, grid = roller.codec, roller.tok, roller.codec.grid
    new: list[tuple] = []
    # the context before each beat: the prompt's share of it, less the beat's own tokens (sliding would re-read)
    block = roller.model.block_size
    room = max(block // 4, min(int(block * s.prompt_share), block - MAX_TOKENS_PER_BEAT - 1))
    for t in range(0, end, grid):
        ctx = sorted([n for n in given if n[0] <= t] + new)
        sounds = [Part(p.program, p.is_drum, "") for p in parts]  # the model reads sounds (see Roller.prompt)
        notes, ctx_tempos, shift, _ = roller._keep_recent(ctx, [x for x in tempos if x[0] <= t], bar, sounds, 0, room)
        ids = [tok.bos_id, *tok.encode(roller._grid_text(notes, ctx_tempos, sounds))]
        row = roller._prompt_state(cons, ids)
        row.allowed_parts = allowed
        lo, hi = t - shift, min(t + grid, end) - shift
        goal = Goal(None, hi, MAX_TOKENS_PER_BEAT, row.notes)
        beat = dataclasses.replace(s, seed=(s.seed + 7919 * b + t) % (2**63 - 1))
        out = roller._sample(ids, [row], cons, beat, goal)[0, len(ids):].tolist()
        if tok.eos_id in out:
            out = out[: out.index(tok.eos_id)]
        text = tok.decode(ids[1:] + out, errors="ignore")
        got, _ = codec.decode_grid(codec.repair(text))
        new += [(p + shift, d, pi, v, pa) for p, d, pi, v, pa in got if pa == mine and lo <= p < hi]
        new = sorted(set(new))
    return new

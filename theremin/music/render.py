"""Turning a :class:`~theremin.music.midi.Piece` into something a musician can hear (WAV) and see (piano-roll PNG).

Audio is rendered offline with FluidSynth (pyfluidsynth, no audio driver) and the General MIDI soundfont that
ships inside the ``pretty_midi`` wheel; the WAV is written with the stdlib :mod:`wave` module. Each part plays
its own General MIDI program on its own channel (drum parts on channel 10 with the drum bank:
:func:`channel_plan`). The piano roll is drawn with matplotlib's Agg canvas, without pyplot, so it never needs
a display nor touches global state; with several instruments each part has its colour (:func:`part_label`
names it in the legend) and the prompt's notes are drawn light and hatched.
Both heavy imports happen inside the functions: importing this module stays cheap.

Every reason a render cannot be done is a :class:`RenderError` naming the input and the fix. Files are
written atomically (:func:`theremin.fsio.atomic_write`): a failed render leaves no partial file behind.
A WAV can be bounded: :func:`render_wav` refuses a piece whose WAV would pass ``max_seconds`` or ``max_bytes``
before rendering anything (:class:`RenderTooLarge`; :func:`wav_size` says what a piece would take), and stops
at a ``deadline`` or when ``cancel`` is set (:class:`RenderTimeout`), removing the partial file.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from theremin.errors import ThereminError
from theremin.fsio import atomic_write
from theremin.music.gm import quiet_import
from theremin.music.midi import PIANO, Note, Part, Piece, default_name

PROMPT_COLOR = "#4c72b0"  # blue: the notes the model was given
GENERATED_COLOR = "#dd8452"  # orange: the notes the model wrote
PROMPT_END_COLOR = "#c44e52"
PROMPT_EDGE_COLOR = "#666666"  # several instruments: a prompt note is its part's colour, light, grey-edged, hatched
PROMPT_HATCH = "////"

DRUM_CHANNEL = 9  # General MIDI's channel 10, counted from 0
DRUM_BANK = 128  # where a General MIDI soundfont keeps its drum kits
PITCHED_CHANNELS = tuple(c for c in range(16) if c != DRUM_CHANNEL)

MIN_NOTE_SECONDS = 0.05  # zero-length notes (see theremin.music.midi) still sound, briefly
WAV_CHANNELS, WAV_SAMPLE_BYTES = 2, 2  # 16-bit stereo
WAV_HEADER_BYTES = 44
_CHUNK_FRAMES = 1 << 16  # frames pulled from the synth per call: few calls, bounded buffers
_NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_BLACK_KEYS = frozenset({1, 3, 6, 8, 10})

_MISSING_LIBRARY = (
    "rendering audio needs the FluidSynth library (libfluidsynth); "
    "run `make setup` or `apt-get install libfluidsynth3`"
)


class RenderError(ThereminError):
    """A WAV or PNG theremin cannot render; the message names the input and the fix."""


class RenderTooLarge(RenderError):
    """A WAV longer or larger than its caps allow: refused before anything is rendered."""


class RenderTimeout(RenderError):
    """A render stopped at its deadline (or cancelled); the partial file is removed."""


def default_soundfont() -> Path:
    """The General MIDI soundfont shipped inside the ``pretty_midi`` wheel (TimGM6mb.sf2)."""
    # find_spec locates the package without importing it (pretty_midi pulls in numpy, mido, ...)
    spec = importlib.util.find_spec("pretty_midi")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "TimGM6mb.sf2"
        if path.is_file():
            return path
    raise RenderError(
        "the default soundfont pretty_midi/TimGM6mb.sf2 was not found; "
        "install pretty_midi (`pip install pretty_midi`) or pass a soundfont path"
    )


def _import_fluidsynth():
    try:  # lazy: an optional native library, loaded only when a WAV is rendered
        fluidsynth = quiet_import("fluidsynth")  # quiet: it prints where it found the library when CI is set
    except (ImportError, OSError) as e:
        # pyfluidsynth raises ImportError when it cannot find the library, OSError when ctypes cannot load it
        raise RenderError(_MISSING_LIBRARY) from e
    return fluidsynth


def note_name(pitch: int) -> str:
    """MIDI pitch as a note name, middle C (60) = C4."""
    return f"{_NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


Route = tuple[int, int, int]  # (channel, bank, preset) a part plays on
Event = tuple[int, int, int, int, int, int, int]  # (frame, on, channel, pitch, velocity, bank, preset)


def _note_events(piece: Piece, sample_rate: int, route: list[Route | None] | None = None) -> tuple[list[Event], int]:
    """Note-on/off events as (frame, on, channel, pitch, velocity, bank, preset), sorted; and the frame the
    last note ends. ``route[k]``: where part k plays (:func:`channel_plan`); None: every note on channel 0."""
    cache: dict[int, int] = {}
    seconds = piece.clock()

    def frame(tick: int) -> int:
        if tick not in cache:
            cache[tick] = round(seconds(tick) * sample_rate)
        return cache[tick]

    min_frames = max(1, round(MIN_NOTE_SECONDS * sample_rate))
    events = []
    for n in piece.notes:
        start = frame(n.start)
        end = max(frame(n.end), start + min_frames)
        chan, bank, preset = route[n.part] if route is not None else (0, 0, 0)
        events.append((start, 1, chan, n.pitch, max(1, min(127, n.velocity)), bank, preset))
        events.append((end, 0, chan, n.pitch, 0, bank, preset))
    # at one frame, offs (0) sort before ons (1): a repeated note is released, then struck again
    events.sort()
    return events, max(e[0] for e in events)


def wav_size(piece: Piece, sample_rate: int = 44100, tail_seconds: float = 1.0) -> tuple[float, int]:
    """(seconds, bytes) of the WAV :func:`render_wav` writes for this piece, computed from the notes and the
    tempo map alone (nothing is rendered): to refuse a piece before its render, or budget the disk for it."""
    frames = _note_events(piece, sample_rate)[1] + round(tail_seconds * sample_rate) if piece.notes else 0
    return frames / sample_rate, WAV_HEADER_BYTES + frames * WAV_CHANNELS * WAV_SAMPLE_BYTES


def check_wav_size(piece: Piece, wav_path: str | os.PathLike, sample_rate: int = 44100, tail_seconds: float = 1.0,
                   max_seconds: float | None = None, max_bytes: int | None = None) -> tuple[float, int]:
    """:func:`wav_size`, or :class:`RenderTooLarge` naming the file and the cap when it passes one."""
    seconds, nbytes = wav_size(piece, sample_rate, tail_seconds)
    what = f"cannot render {Path(wav_path).name}: the piece lasts {seconds:,.0f} s ({nbytes:,} bytes of WAV)"
    if max_seconds is not None and seconds > max_seconds:
        raise RenderTooLarge(f"{what}, over the limit of {max_seconds:g} s of audio; send a shorter or faster piece")
    if max_bytes is not None and nbytes > max_bytes:
        raise RenderTooLarge(f"{what}, over the limit of {max_bytes} bytes; send a shorter or faster piece")
    return seconds, nbytes


def channel_plan(parts: list[Part], program: int | None = None,
                 used: Iterable[int] | None = None) -> list[Route | None]:
    """Where each part plays: (channel, bank, preset) per part, None for a part left out of ``used`` (the parts
    that have notes; None: all).

    Drum parts play on channel 10 (``DRUM_CHANNEL``, 9 from 0) with the drum bank (``DRUM_BANK``), the part's
    program choosing the kit. Pitched parts play ``program`` (None: their own) in bank 0, each on its own channel
    of ``PITCHED_CHANNELS``: with more than 15 of them, the parts of one program share a channel, and past 15
    programs the channels are reused round-robin (the renderer then selects each note's program as it strikes
    it: a program change does not touch notes already sounding). A pitched part never lands on channel 10.
    """
    parts = parts or [PIANO]
    keep = set(range(len(parts)) if used is None else used)
    plan: list[Route | None] = [None] * len(parts)
    pitched = []
    for k, part in enumerate(parts):
        if k not in keep:
            continue
        if part.is_drum:
            plan[k] = (DRUM_CHANNEL, DRUM_BANK, part.program)
        else:
            pitched.append(k)
    wanted = {k: parts[k].program if program is None else program for k in pitched}
    if len(pitched) <= len(PITCHED_CHANNELS):
        slot = {k: i for i, k in enumerate(pitched)}
    else:
        programs = list(dict.fromkeys(wanted[k] for k in pitched))  # in order of first use
        slot = {k: programs.index(wanted[k]) % len(PITCHED_CHANNELS) for k in pitched}
    for k in pitched:
        plan[k] = (PITCHED_CHANNELS[slot[k]], 0, wanted[k])
    return plan


def _part_list(piece: Piece, wav_path: Path) -> list[Part]:
    """The piece's parts ([piano] when it lists none); :class:`RenderError` for a note naming no part."""
    parts = piece.parts or [PIANO]
    bad = next((n for n in piece.notes if not 0 <= n.part < len(parts)), None)
    if bad is not None:
        raise RenderError(f"cannot render {wav_path}: the note at tick {bad.start} names part {bad.part}, "
                          f"the piece has {len(parts)}; pass a piece whose notes name its parts")
    return parts


def _select_presets(synth, sfid: int, sf_path: Path, plan: list[Route | None],
                    program: int | None) -> list[Route | None]:
    """The plan with every preset checked in the soundfont (FluidSynth's program_select fails, < 0, on a preset
    it lacks). A missing drum kit falls back to the standard kit (preset 0 of the drum bank); a part's missing
    program to preset 0 (piano); an explicit ``program`` the soundfont lacks, or no fallback at all, is an error."""
    found: dict[tuple[int, int], tuple[int, int] | None] = {}  # (bank, preset) wanted -> the one played
    out: list[Route | None] = []
    for entry in plan:
        if entry is None:
            out.append(None)
            continue
        chan, bank, preset = entry
        if (bank, preset) not in found:
            found[bank, preset] = (bank, preset) if synth.program_select(chan, sfid, bank, preset) >= 0 else None
        if found[bank, preset] is None:
            if bank != DRUM_BANK and program is not None:
                raise RenderError(f"soundfont {sf_path} has no program {program} in bank 0; pick another program")
            if preset == 0 or synth.program_select(chan, sfid, bank, 0) < 0:
                what = "drum kit (bank 128)" if bank == DRUM_BANK else "program 0 in bank 0"
                raise RenderError(f"soundfont {sf_path} has no {what}; pass a General MIDI soundfont")
            found[bank, preset] = (bank, 0)
        out.append((chan, *found[bank, preset]))
    return out


def render_wav(
    piece: Piece,
    wav_path: str | os.PathLike,
    soundfont: str | os.PathLike | None = None,
    sample_rate: int = 44100,
    program: int | None = None,
    tail_seconds: float = 1.0,
    gain: float = 0.8,
    *,
    max_seconds: float | None = None,
    max_bytes: int | None = None,
    deadline: float | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Render a piece to a 16-bit stereo WAV with FluidSynth; the tempo map sets when each note sounds.

    The WAV lasts until the last note ends plus ``tail_seconds`` (release and reverb). Each part sounds its own
    General MIDI program on its own channel, drum parts on channel 10 with the drum bank (:func:`channel_plan`;
    a kit or program the soundfont lacks falls back to its preset 0). ``program`` (0..127; None: each part's
    own) plays every pitched part with that program instead (0 = acoustic grand piano); drums stay drums.
    ``gain`` is FluidSynth's master gain: its own default (0.2) is faint with this soundfont, while at 0.8 a
    ten-note chord at full velocity peaks near -6 dBFS.

    Bounds (None: none): a WAV over ``max_seconds`` of audio or ``max_bytes`` is refused before rendering
    (:class:`RenderTooLarge`); past ``deadline`` (a :func:`time.monotonic` time) or once ``cancel`` is set, the
    render stops within one chunk (~1.5 s of audio) and leaves no file (:class:`RenderTimeout`).
    """
    wav_path = Path(wav_path)
    if not piece.notes:
        raise RenderError(f"cannot render {wav_path}: the piece has no notes; pass a piece with notes")
    if program is not None and not 0 <= program <= 127:
        raise RenderError(f"cannot render {wav_path}: program={program} is outside General MIDI's 0..127")
    if tail_seconds < 0:
        raise RenderError(f"cannot render {wav_path}: tail_seconds={tail_seconds} must be >= 0")
    parts = _part_list(piece, wav_path)
    check_wav_size(piece, wav_path, sample_rate, tail_seconds, max_seconds, max_bytes)
    sf_path = default_soundfont() if soundfont is None else Path(soundfont).expanduser()
    if not sf_path.is_file():
        raise RenderError(f"soundfont {sf_path} does not exist; pass an existing .sf2 file or leave it unset")
    fluidsynth = _import_fluidsynth()

    def stop() -> None:
        if cancel is not None and cancel.is_set():
            raise RenderTimeout(f"cannot render {wav_path.name}: stopped (the server is shutting down)")
        if deadline is not None and time.monotonic() > deadline:
            raise RenderTimeout(f"cannot render {wav_path.name}: past its deadline; try again")

    synth = fluidsynth.Synth(gain=float(gain), samplerate=float(sample_rate))
    try:
        # FluidSynth ignores an out-of-range rate and keeps 44100: the WAV header would then lie
        actual_rate = synth.get_setting("synth.sample-rate")
        if actual_rate is None or round(actual_rate) != sample_rate:
            raise RenderError(
                f"cannot render {wav_path}: FluidSynth does not support sample_rate={sample_rate}; "
                "use a rate such as 22050, 44100 or 48000"
            )
        sfid = synth.sfload(str(sf_path))
        if sfid < 0:
            raise RenderError(f"soundfont {sf_path} could not be loaded; pass a valid .sf2 file")
        plan = channel_plan(parts, program, {n.part for n in piece.notes})
        events, last_frame = _note_events(piece, sample_rate, _select_presets(synth, sfid, sf_path, plan, program))
        total_frames = last_frame + round(tail_seconds * sample_rate)

        def write(tmp: Path) -> None:
            with wave.open(str(tmp), "wb") as out:
                out.setnchannels(WAV_CHANNELS)
                out.setsampwidth(WAV_SAMPLE_BYTES)
                out.setframerate(sample_rate)
                _render_events(synth, events, total_frames, out, stop,
                               lambda chan, bank, preset: synth.program_select(chan, sfid, bank, preset))

        atomic_write(wav_path, write)
    finally:
        synth.delete()
    return wav_path


def _render_events(synth, events: list[Event], total_frames: int, out: wave.Wave_write, stop=lambda: None,
                   select: Callable[[int, int, int], object] | None = None) -> None:
    """Play the events, pulling the samples between them in chunks and streaming them to the WAV; ``stop()``
    runs before each chunk (it raises to end the render). Before a note starts, ``select(channel, bank,
    preset)`` gives its channel the note's preset unless the channel already has it."""
    # overlapping notes of one pitch on one channel: release the key only when the last one ends
    sounding: Counter[tuple[int, int]] = Counter()
    playing: dict[int, tuple[int, int]] = {}  # each channel's (bank, preset) as selected
    pos = 0
    stop()

    def pull(until: int) -> None:
        nonlocal pos
        while pos < until:
            stop()
            n = min(_CHUNK_FRAMES, until - pos)
            # interleaved stereo int16 in native order; WAV wants little-endian
            out.writeframesraw(synth.get_samples(n).astype("<i2", copy=False).tobytes())
            pos += n

    for frame, on, chan, pitch, velocity, bank, preset in events:
        pull(frame)
        if on:
            if select is not None and playing.get(chan) != (bank, preset):
                select(chan, bank, preset)
                playing[chan] = (bank, preset)
            sounding[chan, pitch] += 1
            synth.noteon(chan, pitch, velocity)
        else:
            sounding[chan, pitch] -= 1
            if sounding[chan, pitch] == 0:
                synth.noteoff(chan, pitch)
    pull(total_frames)


def _bar_lines(piece: Piece, end_beat: float) -> list[float]:
    """Bar starts in beats, following the time signatures (4/4 until the first one)."""
    tpb = piece.ticks_per_beat
    sigs = sorted(piece.time_signatures)
    segments = [(0, 4, 4)] if not sigs or sigs[0][0] > 0 else []
    segments += sigs
    bars: list[float] = []
    for i, (tick, num, den) in enumerate(segments):
        start = tick / tpb
        stop = segments[i + 1][0] / tpb if i + 1 < len(segments) else end_beat
        length = num * 4 / den if num > 0 and den > 0 else 4.0
        b = start
        while b < stop and len(bars) < 10_000:
            bars.append(b)
            b += length
    return bars


@dataclass
class RollLayout:
    """What a piano roll draws: the notes in each colour and where the dashed "prompt end" line goes."""

    prompt: list[Note]
    generated: list[Note]
    prompt_end_beat: float | None  # None: no line (no prompt)


PromptKey = tuple[int, int] | tuple[int, int, int]  # (start tick, pitch) or (start tick, pitch, part)


def roll_layout(
    piece: Piece,
    prompt_end_tick: int | None = None,
    prompt_notes: Iterable[PromptKey] | None = None,
) -> RollLayout:
    """Split a piece into prompt and generated notes.

    ``prompt_notes``: (start tick, pitch) of the notes that came from the prompt, in any part, or (start tick,
    pitch, part) for that part alone; a model may add notes on the prompt's last onset, so where a note starts
    cannot tell. Without it, notes starting before ``prompt_end_tick`` count as the prompt. The line sits at
    ``prompt_end_tick`` (the end of the kept bars); with it None or 0 there is no line and, without
    ``prompt_notes``, every note counts as generated.
    """
    split = prompt_end_tick or 0
    if prompt_notes is not None:
        keys = set(map(tuple, prompt_notes))
        mine = [(n.start, n.pitch) in keys or (n.start, n.pitch, n.part) in keys for n in piece.notes]
    else:
        mine = [n.start < split for n in piece.notes]
    return RollLayout([n for n, m in zip(piece.notes, mine) if m], [n for n, m in zip(piece.notes, mine) if not m],
                      split / piece.ticks_per_beat if split > 0 else None)


def part_label(part: Part) -> str:
    """How a piano roll's legend names a part: its name (General MIDI's for its program when it has none) and
    its General MIDI family, e.g. "Electric Bass (finger) (Bass)"; a drum part is "Drums" ("<name> (Drums)")."""
    if part.is_drum:
        return f"{part.name} (Drums)" if part.name and part.name != "Drums" else "Drums"
    if not 0 <= part.program <= 127:
        return part.name or f"program {part.program}"
    from theremin.music.gm import family_name  # lazy: pretty_midi is heavy (numpy, mido), only a legend needs it

    return f"{part.name or default_name(part.program, False)} ({family_name(part.program)})"


def _part_at(piece: Piece, k: int) -> Part:
    """Part k of a piece (the piano when it lists none; an unnamed piano named "part k" if k is out of range)."""
    parts = piece.parts or [PIANO]
    return parts[k] if 0 <= k < len(parts) else Part(name=f"part {k}")


def piano_roll_png(
    piece: Piece,
    png_path: str | os.PathLike,
    prompt_end_tick: int | None = None,
    title: str | None = None,
    prompt_notes: Iterable[PromptKey] | None = None,
) -> Path:
    """Draw :func:`draw_piano_roll` to a PNG (written atomically)."""
    png_path = Path(png_path)
    fig = draw_piano_roll(piece, prompt_end_tick, title, prompt_notes)
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, format="png"))
    return png_path


def draw_piano_roll(
    piece: Piece,
    prompt_end_tick: int | None = None,
    title: str | None = None,
    prompt_notes: Iterable[PromptKey] | None = None,
):
    """A matplotlib Figure (on its own Agg canvas) of the piano roll of :func:`roll_layout`: prompt and generated
    notes apart, a dashed line at the prompt's end.

    x is time in beats (quarter notes) with bar lines, and seconds (tempo map applied) along the top; y is
    MIDI pitch (on a drum part: its drum sound, drawn as a diamond at the hit); opacity follows velocity. With
    one instrument, prompt and generated notes have a colour each (``PROMPT_COLOR``, ``GENERATED_COLOR``); with
    several, each part has its colour (the legend names it, :func:`part_label`), generated notes are solid and
    the prompt's are light, hatched and grey-edged.
    """
    layout = roll_layout(piece, prompt_end_tick, prompt_notes)
    fig, ax = _figure()
    extent = _extent(piece, layout)
    ax.set_xlim(0, extent.end_beat * 1.02)
    ax.set_ylim(extent.lo - 0.5, extent.hi + 0.5)
    _draw_keyboard(ax, extent)
    _draw_bar_lines(ax, piece, extent)
    colours = _part_colours(layout)
    _draw_notes(ax, layout, piece, colours)
    _draw_prompt_end_and_legend(ax, layout, piece, colours)
    _label_pitches(ax, extent)
    ax.set_xlabel("time (beats = quarter notes; grey lines = bars)")
    ax.set_ylabel("pitch")
    _seconds_axis(ax, piece, layout.prompt + layout.generated)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _part_colours(layout: RollLayout) -> dict[int, tuple[float, float, float, float]] | None:
    """A colour for each part with notes, from a qualitative colormap (tab10, tab20 past 10 parts, then
    repeating); None when one part (or none) has notes: the roll is coloured by prompt and generated alone."""
    from matplotlib import colormaps  # lazy: heavy (see _figure)

    used = sorted({n.part for n in layout.prompt + layout.generated})
    if len(used) <= 1:
        return None
    cmap = colormaps["tab10" if len(used) <= 10 else "tab20"]
    return {k: cmap(i % cmap.N) for i, k in enumerate(used)}


@dataclass
class _Extent:
    """What a piano roll spans: beats 0..end_beat, pitches lo..hi."""

    end_beat: float
    lo: int
    hi: int


def _extent(piece: Piece, layout: RollLayout) -> _Extent:
    """To the last note's end (or the prompt-end line, at least one beat); two semitones around the notes."""
    notes = layout.prompt + layout.generated
    end_beat = max([n.end / piece.ticks_per_beat for n in notes] + [layout.prompt_end_beat or 0.0, 1.0])
    pitches = [n.pitch for n in notes] or [60]
    return _Extent(end_beat, max(0, min(pitches) - 2), min(127, max(pitches) + 2))


def _figure():
    """A 12x5 inch figure on its own Agg canvas (no pyplot: no display, no global state) and its one axes."""
    # matplotlib stays a lazy import here and below: it is heavy, and only a piano roll needs it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _box(x0: float, x1: float, y: float, half: float) -> list[tuple[float, float]]:
    """The corners of a rectangle from x0 to x1, ``half`` above and below y."""
    return [(x0, y - half), (x1, y - half), (x1, y + half), (x0, y + half)]


def _draw_keyboard(ax, extent: _Extent) -> None:
    """Black-key rows lightly shaded, as on a keyboard, so pitches can be read off without a tick on each."""
    from matplotlib.collections import PolyCollection  # lazy: heavy (see _figure)

    rows = [p for p in range(extent.lo, extent.hi + 1) if p % 12 in _BLACK_KEYS]
    right = extent.end_beat * 1.02
    ax.add_collection(
        PolyCollection([_box(0, right, p, 0.5) for p in rows], facecolors="#f0f0f0", edgecolors="none", zorder=0)
    )


def _draw_bar_lines(ax, piece: Piece, extent: _Extent) -> None:
    """A thin grey line at the start of each bar."""
    ax.vlines(_bar_lines(piece, extent.end_beat), extent.lo - 0.5, extent.hi + 0.5, colors="#bbbbbb",
              linewidths=0.6, zorder=1)


def _note_style(notes: list[Note], prompt: bool, colours: dict | None):
    """Face and edge colours (RGBA rows) and the hatch of a layer of notes: fills as opaque as the notes are
    loud. One instrument: the layer's colour. Several: the part's colour, the prompt's light and grey-edged."""
    import numpy as np  # lazy: comes with matplotlib (see _figure)
    from matplotlib.colors import to_rgba

    loud = np.array([n.velocity for n in notes], dtype=float) / 127  # velocity 127 = opaque
    if colours is None:
        edges = np.tile(to_rgba(PROMPT_COLOR if prompt else GENERATED_COLOR), (len(notes), 1))
    else:
        edges = np.array([colours[n.part] for n in notes], dtype=float).reshape(-1, 4)
    faces = edges.copy()
    faces[:, 3] = 0.3 + 0.7 * loud
    if colours is None or not prompt:
        return faces, edges, None
    faces[:, 3] = 0.15 + 0.35 * loud
    return faces, np.tile(to_rgba(PROMPT_EDGE_COLOR), (len(notes), 1)), PROMPT_HATCH


def _draw_notes(ax, layout: RollLayout, piece: Piece, colours: dict | None) -> None:
    """Each pitched note a box, each drum hit a diamond, coloured by :func:`_note_style`; "(no notes)" when
    there are none."""
    from matplotlib.collections import PolyCollection  # lazy: heavy (see _figure)

    if not layout.prompt + layout.generated:
        ax.text(0.5, 0.5, "(no notes)", transform=ax.transAxes, ha="center", va="center", color="#888888")
        return
    tpb = piece.ticks_per_beat
    min_width = 1 / 16  # zero-length notes stay visible
    for prompt, layer in ((True, layout.prompt), (False, layout.generated)):
        if not layer:
            continue
        faces, edges, hatch = _note_style(layer, prompt, colours)
        drum = [_part_at(piece, n.part).is_drum for n in layer]
        keys = [i for i, d in enumerate(drum) if not d]
        hits = [i for i, d in enumerate(drum) if d]
        if keys:
            verts = [_box(layer[i].start / tpb, max(layer[i].end / tpb, layer[i].start / tpb + min_width),
                          layer[i].pitch, 0.4) for i in keys]
            ax.add_collection(PolyCollection(verts, facecolors=faces[keys], edgecolors=edges[keys], linewidths=0.5,
                                             hatch=hatch, zorder=2))
        if hits:
            ax.scatter([layer[i].start / tpb for i in hits], [layer[i].pitch for i in hits], s=18, marker="D",
                       facecolors=faces[hits], edgecolors=edges[hits], linewidths=0.6, zorder=2.5)


def roll_legend_labels(piece: Piece, layout: RollLayout) -> dict[int, str]:
    """The legend's name of each part with notes (:func:`part_label`; a name two parts share gets "#part")."""
    used = sorted({n.part for n in layout.prompt + layout.generated})
    labels = {k: part_label(_part_at(piece, k)) for k in used}
    shared = Counter(labels.values())
    return {k: f"{label} #{k + 1}" if shared[label] > 1 else label for k, label in labels.items()}


def _draw_prompt_end_and_legend(ax, layout: RollLayout, piece: Piece, colours: dict | None) -> None:
    """The dashed prompt-end line, and a legend naming only what is drawn (a prompt-only roll shows no
    "generated" swatch): with several instruments, each part in its colour, then how prompt and generated
    notes are drawn; with one, the two colours (titled with its instrument unless it is the plain piano)."""
    from matplotlib.lines import Line2D  # lazy: heavy (see _figure)
    from matplotlib.patches import Patch

    handles, title = [], None
    if colours is None:
        if layout.prompt:
            handles.append(Patch(color=PROMPT_COLOR, label="prompt"))
        if layout.generated:
            handles.append(Patch(color=GENERATED_COLOR, label="generated"))
        only = {n.part for n in layout.prompt + layout.generated}
        if only and _part_at(piece, min(only)) != PIANO:
            title = part_label(_part_at(piece, min(only)))
    else:
        for k, label in roll_legend_labels(piece, layout).items():
            c = colours[k]
            handles.append(Line2D([], [], marker="D", linestyle="none", color=c, label=label)
                           if _part_at(piece, k).is_drum else Patch(facecolor=c, edgecolor=c, label=label))
        grey = (0.5, 0.5, 0.5)
        if layout.prompt:
            handles.append(Patch(facecolor=(*grey, 0.35), edgecolor=PROMPT_EDGE_COLOR, hatch=PROMPT_HATCH,
                                 label="prompt (light, hatched)"))
        if layout.generated:
            handles.append(Patch(facecolor=grey, edgecolor=grey, label="generated (solid)"))
    if layout.prompt_end_beat is not None:
        ax.axvline(layout.prompt_end_beat, color=PROMPT_END_COLOR, linewidth=1.5, linestyle="--", zorder=3)
        handles.append(Line2D([], [], color=PROMPT_END_COLOR, linestyle="--", label="prompt end"))
    if handles:
        # outside the axes: inside, it would hide the highest notes near the end
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1), fontsize=8, frameon=False,
                  title=title, title_fontsize=8, alignment="left")


def _label_pitches(ax, extent: _Extent) -> None:
    """Pitch names on as many rows as fit: every white key, C/E/G, or only the C's."""
    span = extent.hi - extent.lo
    classes = {0, 2, 4, 5, 7, 9, 11} if span <= 14 else {0, 4, 7} if span <= 30 else {0}
    ticks = [p for p in range(extent.lo, extent.hi + 1) if p % 12 in classes]
    ax.set_yticks(ticks, [note_name(p) for p in ticks])


def _seconds_axis(ax, piece: Piece, notes: list[Note]) -> None:
    """Seconds along the top, through the tempo map (piecewise linear in beats)."""
    import numpy as np  # lazy: comes with matplotlib (see _figure)

    tpb = piece.ticks_per_beat
    far = max(n.end for n in notes) * 4 + 1000 * tpb if notes else 1000 * tpb
    bp_ticks = sorted({0, far, *(t for t, _ in piece.tempos if 0 < t < far)})
    bp_beats = np.array(bp_ticks, dtype=float) / tpb
    bp_secs = np.array(list(map(piece.clock(), bp_ticks)))
    top = ax.secondary_xaxis(
        "top",
        functions=(lambda b: np.interp(b, bp_beats, bp_secs), lambda s: np.interp(s, bp_secs, bp_beats)),
    )
    top.set_xlabel("seconds", fontsize=8)
    top.tick_params(labelsize=8)

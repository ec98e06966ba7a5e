"""Public MIDI datasets as base-corpus sources, fetched the way torchvision and Hugging Face datasets fetch them.

A dataset is a catalogue entry (``theremin/conf/datasets/<name>.yaml``, composed into ``data.catalog`` by
conf/data/base.yaml): the upstream archive's URL and pinned sha256, its licence (and whether commercial use is
allowed), and its layout (the archive's top folder, the glob that holds the music, the converter: ``midi`` as is,
``musicxml`` through music21, ``note_table`` CSV rows through :mod:`theremin.music.tables`).

:func:`fetch` ``(name, root, mirror=None, download=True) -> Path`` gives the unpacked folder ``<root>/<name>/``
(``root``: ``<data_dir>/datasets``):

- from a mirror when ``mirror=`` or ``$THEREMIN_DATASETS`` names one (a folder, or an http(s) URL, laid out like
  ``../shared/datasets``: ``<name>.tar.gz`` + ``SHA256SUMS``): the archive must match both the mirror's
  SHA256SUMS and the catalogue's sha256;
- else downloaded from the catalogue's URL (``download=True``): progress bar, an interrupted download resumes
  (HTTP Range into ``<root>/.downloads/<archive>.part``), and what arrived must match the pinned sha256 (an
  entry without one is never downloaded);
- unpacked once: every member is checked before anything is written (see :func:`check_members`), then extracted
  into a temp folder (with tarfile's ``data`` filter), which is renamed into place holding a marker with the
  archive's sha256. A second call only reads the marker; an interrupted unpack never looks done. A bad archive is
  refused with its name and nothing of it is unpacked.

:func:`build_source` turns a fetched dataset into one base source: its music files (``include``/``exclude``
patterns, the first ``limit``), converted to MIDI once (cached in ``<root>/<name>/.converted/``), counted as
theremin's reader counts notes, kept under a cap on notes (the source's weight; theremin.data.base balances the
sources) and linked into ``<input_dir>/<source>/``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import json
import logging
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from filelock import FileLock
from omegaconf import OmegaConf
from tqdm import tqdm

from theremin.config import conf_dir, data_dir, known_settings, plain
from theremin.errors import ThereminError
from theremin.fsio import atomic_write, file_sha256
from theremin.music.midi import MAX_NOTES, MidiError, read_midi
from theremin.procs import die_with_parent

log = logging.getLogger("theremin.data.datasets")

ENV = "THEREMIN_DATASETS"  # a mirror: a folder or an http(s) URL holding <name>.tar.gz + SHA256SUMS
SUMS = "SHA256SUMS"
MARKER = ".theremin-dataset.json"  # in an unpacked folder: the archive's sha256 (written last: done)
CONVERTED = ".converted"  # in an unpacked folder: the music as MIDI, one folder per converter
CONVERTERS = ("midi", "musicxml", "note_table")
CHUNK = 1 << 16


class DatasetError(ThereminError):
    """A dataset that cannot be fetched, unpacked or used; the message names the dataset or archive and why."""


# ---- the catalogue -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Licence:
    name: str
    commercial: bool  # may a model trained on it be used commercially?
    file: str | None = None  # the licence file inside the dataset's folder


@dataclass(frozen=True)
class Layout:
    folder: str | None = None  # the archive's one top folder (default: the dataset's name)
    music: str = "**/*.mid"  # glob of the music files, relative to that folder
    converter: str = "midi"  # midi (as is) | musicxml (music21) | note_table (CSV pitch, onset_s, duration_s)
    exclude: tuple[str, ...] = ()  # patterns (relative paths) never used
    velocity: int = 80  # note_table: every note's velocity


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    url: str | None  # the upstream archive
    sha256: str | None  # the pinned archive; None: only a mirror's SHA256SUMS can vouch for it
    licence: Licence
    layout: Layout = field(default_factory=Layout)
    homepage: str = ""

    @property
    def archive(self) -> str:
        return f"{self.name}.tar.gz"

    @property
    def top(self) -> str:
        return self.layout.folder or self.name

    @classmethod
    def from_config(cls, name: str, cfg) -> DatasetSpec:
        where = f"data.catalog.{name}"
        d = known_settings(cls, {"name": name, **dict(plain(cfg) or {})}, where, "a dataset setting", DatasetError)
        lic = known_settings(Licence, d.get("licence"), f"{where}.licence", "a licence setting", DatasetError)
        lay = known_settings(Layout, d.get("layout"), f"{where}.layout", "a layout setting", DatasetError)
        if "name" not in lic or "commercial" not in lic:
            raise DatasetError(f"{where}.licence: give its name and whether commercial use is allowed "
                               "({name: MIT, commercial: true})")
        if lay.get("converter", "midi") not in CONVERTERS:
            raise DatasetError(f"{where}.layout.converter: {lay['converter']!r} is not one of {', '.join(CONVERTERS)}")
        sha = d.get("sha256")
        if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", str(sha)):
            raise DatasetError(f"{where}.sha256: {sha!r} is not a sha256 (64 lower-case hex digits)")
        lay["exclude"] = tuple(lay.get("exclude") or ())
        return cls(name=name, url=d.get("url"), sha256=sha, licence=Licence(**lic), layout=Layout(**lay),
                   homepage=d.get("homepage") or "")


def catalog_dir() -> Path:
    return conf_dir() / "datasets"


def load_catalog(catalog: dict | None = None) -> dict[str, DatasetSpec]:
    """The catalogue: ``catalog`` (data.catalog as composed, overrides applied) or conf/datasets/*.yaml."""
    if catalog is None:
        catalog = {p.stem: OmegaConf.load(p) for p in sorted(catalog_dir().glob("*.yaml"))}
    return {name: DatasetSpec.from_config(name, cfg) for name, cfg in dict(plain(catalog)).items()}


def get_spec(name: str, catalog: dict | None = None) -> DatasetSpec:
    specs = load_catalog(catalog)
    if name not in specs:
        raise DatasetError(f"dataset {name!r} is not in the catalogue (known: {', '.join(sorted(specs))}; "
                           f"entries: {catalog_dir()})")
    return specs[name]


def default_root() -> Path:
    return data_dir() / "datasets"


# ---- fetch ---------------------------------------------------------------------------------------------------


def fetched(folder: Path, sha256: str | None = None) -> dict | None:
    """The marker of an unpacked dataset folder (None: not unpacked, or from another archive than ``sha256``)."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if sha256 is None or marker.get("sha256") == sha256 else None


def fetch(name: str, root: str | os.PathLike | None = None, mirror: str | os.PathLike | None = None,
          download: bool = True, *, spec: DatasetSpec | None = None, catalog: dict | None = None,
          progress: bool = True) -> Path:
    """The unpacked folder ``<root>/<name>/`` of a catalogue dataset: unpacked already (its marker names the pinned
    archive), else fetched from the mirror (``mirror=``, else ``$THEREMIN_DATASETS``) or downloaded, checked and
    unpacked. ``mirror=""`` ignores ``$THEREMIN_DATASETS``."""
    spec = spec or get_spec(name, catalog)
    root = Path(root) if root is not None else default_root()
    dest = root / spec.name
    if fetched(dest, spec.sha256):
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{spec.name}.lock")):
        if fetched(dest, spec.sha256):  # another process unpacked it meanwhile
            return dest
        for stale in root.glob(f".{spec.name}.unpack-*"):  # what a killed unpack left
            shutil.rmtree(stale, ignore_errors=True)
        archive, sha, origin, temporary = obtain(spec, root, mirror, download, progress)
        try:
            unpack(archive, dest, spec.top, sha, origin)
        finally:
            if temporary:
                archive.unlink(missing_ok=True)
    return dest


def obtain(spec: DatasetSpec, root: Path, mirror, download: bool, progress: bool) -> tuple[Path, str, str, bool]:
    """A local, verified copy of the archive: (path, sha256, where it came from, whether to delete it after)."""
    mirror = os.environ.get(ENV, "") if mirror is None else str(mirror)
    downloads = root / ".downloads"
    if mirror:
        got = from_mirror(spec, mirror, downloads, progress)
        if got is not None:
            return got
        if not download:
            raise DatasetError(f"dataset {spec.name}: the mirror {mirror} has no {spec.archive} and download=False")
        log.warning("dataset %s: not in the mirror %s; downloading it from %s", spec.name, mirror, spec.url)
    elif not download:
        raise DatasetError(f"dataset {spec.name}: not fetched yet into {root / spec.name} and download=False; set "
                           f"{ENV} to a mirror folder (like ../shared/datasets) or allow the download")
    if not spec.url:
        raise DatasetError(f"dataset {spec.name}: the catalogue gives no url to download it from")
    if not spec.sha256:
        raise DatasetError(f"dataset {spec.name}: no sha256 pinned for {spec.url}, so it is not downloaded (an "
                           f"archive nobody checked is never unpacked); set data.catalog.{spec.name}.sha256 to the "
                           "checksum of the archive you checked, or use a mirror whose SHA256SUMS lists it")
    path = download_file(spec.url, downloads / spec.archive, spec.sha256, progress)
    return path, spec.sha256, spec.url, False


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def read_sums(text: str) -> dict[str, str]:
    """``sha256sum`` output (``<hex>  <name>`` or ``<hex> *<name>``) as {name: hex}."""
    sums = {}
    for line in text.splitlines():
        m = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.strip())
        if m:
            sums[m.group(2)] = m.group(1).lower()
    return sums


def from_mirror(spec: DatasetSpec, mirror: str, downloads: Path, progress: bool):
    """The archive from a mirror, checked against its SHA256SUMS and the catalogue; None when not mirrored."""
    url = _is_url(mirror)
    where = f"{mirror.rstrip('/')}/{spec.archive}" if url else str(Path(mirror) / spec.archive)
    try:
        sums_text = (_http_text(f"{mirror.rstrip('/')}/{SUMS}") if url
                     else (Path(mirror) / SUMS).read_text(encoding="utf-8"))
    except (OSError, urllib.error.URLError, DatasetError) as e:
        raise DatasetError(f"mirror {mirror}: no readable {SUMS} ({e})") from e
    listed = read_sums(sums_text).get(spec.archive)
    if listed is None:
        if not url and Path(where).exists():
            raise DatasetError(f"{where}: the mirror's {SUMS} lists no checksum for it: refused")
        return None
    if spec.sha256 and listed != spec.sha256:
        raise DatasetError(f"{where}: the mirror's {SUMS} gives {listed}, the catalogue pins {spec.sha256} (another "
                           "version of the dataset): refused, nothing unpacked")
    if not spec.sha256:
        log.warning("dataset %s: no sha256 in the catalogue; the mirror's %s pins it (%s)", spec.name, SUMS, listed)
    downloads.mkdir(parents=True, exist_ok=True)
    if url:
        return download_file(where, downloads / f"mirror-{spec.archive}", listed, progress), listed, where, True
    if not Path(where).is_file():
        raise DatasetError(f"{where}: listed in the mirror's {SUMS} but missing")
    copy = downloads / f"mirror-{spec.archive}"
    h = hashlib.sha256()
    try:
        with open(where, "rb") as src, open(copy, "wb") as dst:  # copied, then unpacked from the copy it checked
            while chunk := src.read(1 << 20):
                h.update(chunk)
                dst.write(chunk)
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    _check_sha(copy, h.hexdigest(), listed, where)
    return copy, listed, where, True


def _check_sha(path: Path, got: str, expected: str, label: str) -> None:
    if got != expected:
        path.unlink(missing_ok=True)
        raise DatasetError(f"{label}: checksum mismatch (sha256 {got}, expected {expected}): refused, "
                           "nothing unpacked, the file deleted")


def _http_text(url: str) -> str:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=_HEADERS), timeout=60) as r:
            return r.read(1 << 20).decode("utf-8")
    except urllib.error.HTTPError as e:
        raise DatasetError(f"{url}: HTTP {e.code} {e.reason}") from e


_HEADERS = {"User-Agent": "theremin-datasets"}


def download_file(url: str, dest: Path, sha256: str, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (verified against ``sha256``). Bytes arrive in ``<dest>.part``; a later call
    asks only for the rest (HTTP Range) and starts over when the server ignores it. A complete file whose
    checksum differs is deleted and refused; an interrupted one stays to be resumed."""
    if dest.is_file() and file_sha256(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {**_HEADERS, **({"Range": f"bytes={have}-"} if have else {})}
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as e:
        if not (e.code == 416 and have):  # 416: nothing after `have`; the part may be whole
            raise DatasetError(f"{url}: HTTP {e.code} {e.reason}") from e
        resp = None
    except (urllib.error.URLError, OSError) as e:
        raise DatasetError(f"{url}: download failed ({getattr(e, 'reason', e)})") from e
    if resp is not None:
        with resp:
            _receive(resp, part, have, url, progress)
    _check_sha(part, file_sha256(part), sha256, url)
    os.replace(part, dest)
    return dest


def _receive(resp, part: Path, have: int, url: str, progress: bool) -> None:
    resumed = have and resp.status == 206 and (resp.headers.get("Content-Range") or "").startswith(f"bytes {have}-")
    have = have if resumed else 0  # a 200 to a Range request: the whole file again
    length = resp.headers.get("Content-Length")
    total = have + int(length) if length and length.isdigit() else None
    got = have
    bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=f"download {part.name[:-5]}",
               disable=not progress)
    with open(part, "ab" if resumed else "wb") as f, bar:
        try:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        except (http.client.HTTPException, OSError) as e:
            raise DatasetError(f"{url}: download interrupted after {got:,} bytes ({type(e).__name__}); "
                               f"run again to resume from {part}") from e
    if total is not None and got < total:
        raise DatasetError(f"{url}: download interrupted after {got:,} of {total:,} bytes; run again to resume "
                           f"from {part}")


# ---- unpack --------------------------------------------------------------------------------------------------


def _resolve(path: str, links: dict[str, str]) -> list[str] | None:
    """The parts of an archive path with the archive's own symbolic links followed (None: it climbs out of the
    archive, or loops). ``links``: link path -> target, relative to the archive's root."""
    parts: list[str] = []
    todo = path.split("/")
    hops = 0
    while todo:
        c = todo.pop(0)
        if c in ("", "."):
            continue
        if c == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(c)
        target = links.get("/".join(parts))
        if target is not None and todo:  # a link inside the path: continue from where it points
            hops += 1
            if hops > 64 or target.startswith("/"):
                return None
            parts = []  # targets are paths from the archive's root
            todo = target.split("/") + todo
    return parts


def check_members(members: list[tarfile.TarInfo], top: str, label: str) -> None:
    """Refuse (:class:`DatasetError`, naming ``label`` and the member) an archive that could write anywhere but one
    fresh folder ``top/``: an absolute name or one with ``..``, a member outside ``top/``, a device, FIFO or other
    special file, a symbolic link that points out of ``top/`` (followed through the archive's other links, as
    extraction would), a hard link to anything but a regular file of ``top/`` stored before it."""

    def refuse(m: tarfile.TarInfo, why: str):
        raise DatasetError(f"{label}: member {m.name!r} {why}: refused, nothing unpacked")

    links, regular = {}, set()
    for m in members:
        name = m.name
        if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
            refuse(m, "has an absolute path")
        if ".." in re.split(r"[/\\]", name):
            refuse(m, "has '..' in its path")
        norm = posixpath.normpath(name)
        if norm.split("/")[0] != top:
            refuse(m, f"is outside the archive's folder {top}/")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            refuse(m, "is a device, FIFO or other special file")
        if m.issym():
            if m.linkname.startswith("/"):
                refuse(m, f"is a symbolic link to an absolute path ({m.linkname})")
            links[norm] = posixpath.join(posixpath.dirname(norm), m.linkname)
        elif m.islnk():
            if posixpath.normpath(m.linkname) not in regular:
                refuse(m, f"is a hard link to {m.linkname!r}, not to a regular file of the archive stored before it")
        elif m.isreg():
            regular.add(norm)
    for m in members:  # with every link known: nothing may lead out of top/
        norm = posixpath.normpath(m.name)
        for path in [norm] + ([links[norm]] if norm in links else []):
            parts = _resolve(path, links)
            if parts is None or not parts or parts[0] != top:
                refuse(m, "points out of the archive's folder" if path != norm else "lies outside the folder "
                       "once the archive's links are followed")


_FILTER_ERRORS = (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()


def unpack(archive: Path, dest: Path, top: str, sha256: str, origin: str = "") -> Path:
    """Unpack ``archive`` (whose one folder is ``top/``) to ``dest``, or refuse it with nothing unpacked; refusals
    name ``origin`` (where the archive came from), else the archive's file name."""
    label = origin or archive.name
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpack-", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tf:
                members = tf.getmembers()  # reads every header: a truncated or corrupt stream fails here
                check_members(members, top, label)
                while tf.fileobj.read(1 << 20):  # to the end: gzip checks its CRC and length there
                    pass
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, members=members, filter="data")
                else:  # Python without extraction filters: check_members above is the whole check
                    tf.extractall(tmp, members=members)
        except _FILTER_ERRORS as e:
            raise DatasetError(f"{label}: tarfile's data filter refuses a member ({e}): refused, nothing "
                               "unpacked") from e
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise DatasetError(f"{label}: not a readable tar archive, truncated or corrupt ({type(e).__name__}: "
                               f"{e}): refused, nothing unpacked") from e
        folder = tmp / top
        if not folder.is_dir():
            raise DatasetError(f"{label}: holds no folder {top}/: refused, nothing unpacked")
        _check_extracted(folder, label)
        marker = {"name": dest.name, "sha256": sha256, "from": origin or str(archive)}
        (folder / MARKER).write_text(json.dumps(marker, indent=1))
        if dest.exists() or dest.is_symlink():  # another archive's folder: swapped out, removed with tmp
            if fetched(dest) is None:
                raise DatasetError(f"{dest}: exists and was not unpacked by theremin (no {MARKER}); move it away")
            os.replace(dest, tmp / ".replaced")
        os.replace(folder, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _check_extracted(folder: Path, label: str) -> None:
    real = folder.resolve()
    for dirpath, dirs, files in os.walk(folder):
        for n in dirs + files:
            p = Path(dirpath, n)
            if p.is_symlink() and not Path(os.path.realpath(p)).is_relative_to(real):
                raise DatasetError(f"{label}: {p.relative_to(folder)} points out of the folder: refused, "
                                   "nothing unpacked")


# ---- a dataset as a base source ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """What of a dataset a source uses: the files (relative paths), before the cap on notes."""

    include: tuple[str, ...] | None = None  # patterns on paths relative to the dataset's folder
    exclude: tuple[str, ...] = ()
    limit: int | None = None  # the first N files (sorted by path)


def music_files(folder: Path, spec: DatasetSpec, sel: Selection) -> list[str]:
    """The dataset's music files (paths relative to ``folder``), sorted, selected by ``sel``."""
    rels = sorted(p.relative_to(folder).as_posix() for p in folder.glob(spec.layout.music)
                  if p.is_file() and not p.relative_to(folder).as_posix().startswith(CONVERTED))
    excluded = (*spec.layout.exclude, *sel.exclude)
    rels = [r for r in rels if not any(fnmatch.fnmatch(r, pat) for pat in excluded)]
    if sel.include is not None:
        rels = [r for r in rels if any(fnmatch.fnmatch(r, pat) for pat in sel.include)]
    return rels[: sel.limit] if sel.limit is not None else rels


STRAIGHT = "played straight through: music21 cannot expand its repeats"


def _without_repeats(score) -> None:
    """Repeat barlines, endings and repeat expressions removed: the score as read, once through."""
    from music21 import bar, repeat, spanner, stream

    for m in score.recurse().getElementsByClass(stream.Measure):
        if isinstance(m.leftBarline, bar.Repeat):
            m.leftBarline = None
        if isinstance(m.rightBarline, bar.Repeat):
            m.rightBarline = None
    for sp in list(score.recurse().getElementsByClass(spanner.RepeatBracket)):
        for site in list(sp.sites.get()):
            if site is not None and sp in site:
                site.remove(sp)
    for e in list(score.recurse().getElementsByClass(repeat.RepeatExpression)):
        e.activeSite.remove(e)


def _convert_score(job: tuple[str, str]) -> tuple[str | None, str | None]:
    """One MusicXML (any score music21 reads) to MIDI with theremin's music21 path: (the reason it failed, a note
    on how it was converted). A score whose repeats music21 cannot expand (16 % of OpenEWLD's lead sheets) is
    written once through, and says so."""
    src, dst = job
    try:
        from music21 import converter

        from theremin.music.scores import write_score_midi

        score = converter.parse(src, storePickle=False)
        try:
            write_score_midi(score, dst)
            return None, None
        except Exception:  # badly formed repeats (ExpanderException) and what they break further on
            score = converter.parse(src, storePickle=False)
            _without_repeats(score)
            write_score_midi(score, dst)
            return None, STRAIGHT
    except Exception as e:  # music21 raises many kinds on odd scores: reported per file, the rest goes on
        return f"{type(e).__name__}: {e}"[:300], None


def _convert_table(job: tuple[str, str, int]) -> tuple[str | None, None]:
    from theremin.music.tables import NoteTableError, write_note_table_midi

    try:
        write_note_table_midi(job[0], job[1], job[2])
        return None, None
    except (NoteTableError, MidiError, OSError, UnicodeDecodeError) as e:
        return str(e)[:300], None


def midi_view(folder: Path, spec: DatasetSpec, rels: list[str], workers: int | None = None,
              progress: bool = True) -> dict[str, Path | str]:
    """Each file as MIDI: the file itself (midi), else its conversion, made once under
    ``<folder>/.converted/<converter>/`` (a failure is kept beside it as ``<file>.failed`` with its reason, a
    note on how it was converted as ``<file>.note``). Returns rel -> MIDI path, or rel -> the reason it could not
    be converted."""
    conv = spec.layout.converter
    if conv == "midi":
        return {r: folder / r for r in rels}
    out = folder / CONVERTED / conv
    settings = {"converter": conv, "velocity": spec.layout.velocity if conv == "note_table" else None}
    stamp = out / "settings.json"
    if out.exists() and (not stamp.is_file() or json.loads(stamp.read_text()) != settings):
        shutil.rmtree(out)  # made with other settings
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(settings))
    dst = {r: out / (r.rsplit(".", 1)[0] + ".mid") for r in rels}
    failed = {r: d.with_name(d.name + ".failed") for r, d in dst.items()}
    todo = [r for r in rels if not dst[r].exists() and not failed[r].exists()]
    for r in todo:
        dst[r].parent.mkdir(parents=True, exist_ok=True)
    if conv == "note_table":
        fn, jobs = _convert_table, [(str(folder / r), str(dst[r]), spec.layout.velocity) for r in todo]
    else:
        fn, jobs = _convert_score, [(str(folder / r), str(dst[r])) for r in todo]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = dict(total=len(jobs), unit="file", desc=f"convert {spec.name}", disable=not progress)
    if workers == 1 or conv == "note_table":
        results = [fn(j) for j in tqdm(jobs, **bar)]
    else:
        with ProcessPoolExecutor(workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            results = list(tqdm(pool.map(fn, jobs, chunksize=4), **bar))
    for r, (reason, note) in zip(todo, results):
        if reason is not None:
            atomic_write(failed[r], lambda tmp, t=reason: tmp.write_text(t))
        elif note is not None:
            atomic_write(_note(dst[r]), lambda tmp, t=note: tmp.write_text(t))
    return {r: (failed[r].read_text() if failed[r].exists() else dst[r]) for r in rels}


def _note(midi: Path) -> Path:
    return midi.with_name(midi.name + ".note")


def conversion_notes(view: dict[str, Path | str], rels: list[str]) -> dict[str, int]:
    """How many of ``rels`` were converted with a note (e.g. played straight through), per note."""
    notes = Counter(_note(view[r]).read_text() for r in rels
                    if isinstance(view[r], Path) and _note(view[r]).is_file())
    return dict(notes)


def count_notes(paths: dict[str, Path | str], cache: Path, max_notes: int = MAX_NOTES,
                min_notes: int = 1) -> dict[str, int | str]:
    """Notes of each MIDI file as theremin's reader keeps them (pitched, merged), or the reason it refuses the
    file (a str value in ``paths`` is a conversion's failure, kept). Cached per file (size, mtime) in ``cache``."""
    key = {"max_notes": max_notes, "min_notes": min_notes}
    try:
        old = json.loads(cache.read_text())
        known = old["files"] if old.get("key") == key else {}
    except (OSError, ValueError, KeyError):
        known = {}
    counts, files = {}, {}
    for rel, p in paths.items():
        if isinstance(p, str):
            counts[rel] = p
            continue
        try:
            st = os.stat(p)
        except OSError as e:
            counts[rel] = f"unreadable: {e.strerror or e}"
            continue
        stamp = [str(p), st.st_size, st.st_mtime_ns]
        hit = known.get(rel)
        if hit is not None and hit[:3] == stamp:
            counts[rel] = hit[3]
        else:
            try:
                counts[rel] = len(read_midi(p, min_notes, max_notes=max_notes).notes)
            except MidiError as e:
                counts[rel] = e.reason
        files[rel] = [*stamp, counts[rel]]
    text = json.dumps({"key": key, "files": files})
    atomic_write(cache, lambda tmp: tmp.write_text(text))
    return counts


def under_cap(counts: dict[str, int], cap: int | None, salt: str) -> list[str]:
    """The files kept under a cap on notes: taken in a fixed pseudo-random order (sha256 of ``salt`` and the path,
    so a cap samples every drummer, composer and year, not the first letters of the alphabet), each whole file
    that still fits; every file when ``cap`` is None. Sorted by path."""
    if cap is None:
        return sorted(counts)
    order = sorted(counts, key=lambda r: hashlib.sha256(f"{salt}/{r}".encode()).hexdigest())
    kept, total = [], 0
    for r in order:
        if total + counts[r] <= cap:
            kept.append(r)
            total += counts[r]
    return sorted(kept)


def link_files(chosen: dict[str, Path], out: Path) -> None:
    """``out`` rebuilt as links to the chosen MIDI files (rel -> target): no stale link survives a new selection."""
    if out.exists() or out.is_symlink():
        shutil.rmtree(out) if out.is_dir() and not out.is_symlink() else out.unlink()
    out.mkdir(parents=True)
    for rel, target in chosen.items():
        link = out / (rel if rel.lower().endswith((".mid", ".midi")) else rel.rsplit(".", 1)[0] + ".mid")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(target).resolve())


def build_source(out: Path, spec: DatasetSpec, sel: Selection, cap: int | None, *, root: Path | None = None,
                 mirror=None, download: bool = True, counts_cache: Path, workers: int | None = None,
                 max_notes: int = MAX_NOTES, min_notes: int = 1, progress: bool = True) -> dict:
    """One base source from a dataset: fetched, converted, counted, capped at ``cap`` notes and linked into
    ``out``. Returns its figures (files and notes used and available, files skipped and why, licence)."""
    folder = fetch(spec.name, root, mirror, download, spec=spec, progress=progress)
    rels = music_files(folder, spec, sel)
    if not rels:
        raise DatasetError(f"dataset {spec.name}: no music files match {spec.layout.music} in {folder} "
                           f"(include={list(sel.include) if sel.include is not None else None}, "
                           f"exclude={list(sel.exclude)})")
    view = midi_view(folder, spec, rels, workers, progress)
    counts = count_notes(view, counts_cache, max_notes, min_notes)
    usable = {r: n for r, n in counts.items() if isinstance(n, int)}
    reasons = Counter(n for n in counts.values() if isinstance(n, str))
    kept = under_cap(usable, cap, spec.name)
    link_files({r: view[r] for r in kept}, out)
    return {"kind": "dataset", "dataset": spec.name, "files": len(kept), "notes": sum(usable[r] for r in kept),
            "available_files": len(usable), "available_notes": sum(usable.values()), "cap_notes": cap,
            "skipped": sum(reasons.values()), "skipped_reasons": dict(reasons.most_common(5)),
            "converted_with_notes": conversion_notes(view, kept),
            "licence": asdict(spec.licence), "sha256": (fetched(folder) or {}).get("sha256")}

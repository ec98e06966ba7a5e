"""The README and docs/ stay true: the config reference is what conf/ gives now, the README stays short, every
relative link resolves, the commands and imports the README shows exist, and docs/layout.md's tables agree with the
code (the rename table with theremin/_moved.py, the public API with theremin.__all__)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

import theremin
from theremin import _moved

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"``.+?``|`[^`\n]+`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


@pytest.fixture(scope="module")
def gen():
    """scripts/gen_config_docs.py as a module (scripts/ is no package)."""
    path = ROOT / "scripts" / "gen_config_docs.py"
    spec = importlib.util.spec_from_file_location("gen_config_docs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(gen) -> str:
    return gen.generate()


def _prose(text: str) -> str:
    """Markdown without its fenced code blocks and code spans (where a '[x](y)' or '# x' is not markdown)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file (lower case, punctuation dropped, spaces to '-', repeats -1...)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_config_reference_is_current(gen, generated):
    assert gen.OUT == ROOT / "docs" / "config.md"
    current = gen.OUT.read_text(encoding="utf-8")
    assert current == generated, "docs/config.md is stale: run `python scripts/gen_config_docs.py` (make docs)"


def test_config_reference_check_mode_fails_when_stale(gen, generated, tmp_path, monkeypatch, capsys):
    stale = tmp_path / "config.md"
    assert "| `seed` | `1337` |" in generated
    stale.write_text(generated.replace("| `seed` | `1337` |", "| `seed` | `42` |"), encoding="utf-8")
    monkeypatch.setattr(gen, "OUT", stale)
    assert gen.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    monkeypatch.undo()  # the real docs/config.md again: current
    assert gen.main(["--check"]) == 0


def test_config_reference_covers_every_config_file():
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    conf = ROOT / "theremin" / "conf"
    for path in sorted(conf.rglob("*.yaml")):
        rel = path.relative_to(ROOT).as_posix()
        assert f"(../{rel})" in text, f"{rel} is not in docs/config.md"


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8"))
    assert n <= 12_000, f"README.md has {n:,} characters: move detail to docs/"


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc):
    broken = []
    for target in LINK.findall(_prose(doc.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{doc.name}: {broken}"


def test_readme_picture_is_small():
    png = ROOT / "docs" / "img" / "roll.png"
    assert "docs/img/roll.png" in README.read_text(encoding="utf-8")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size < 150_000


def _console_scripts() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the table's keys, read by hand
        section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
        return set(re.findall(r"^([\w.-]+)\s*=", section, re.M))
    return set(tomllib.loads(text)["project"]["scripts"])


def test_readme_console_scripts_exist():
    named = set(re.findall(r"\btheremin-[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*", README.read_text(encoding="utf-8")))
    assert named, "the README names no console script"
    assert named <= _console_scripts(), sorted(named - _console_scripts())


def test_readme_python_blocks_import():
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)
    ours = [b for b in blocks if b.startswith("from theremin")]
    assert ours, "the README shows no Python that imports theremin"
    for block in ours:
        imports = "\n".join(line for line in block.splitlines() if line.startswith(("from ", "import ")))
        exec(compile(imports, "README.md", "exec"), {})


def _table(text: str, heading: str) -> list[list[str]]:
    """The body rows (cells) of the first table after a heading."""
    lines = text.split(f"\n{heading}\n", 1)[1].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first + 2:]:  # past the header and the --- row
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_layout_rename_table_is_moved():
    rows = _table((ROOT / "docs" / "layout.md").read_text(encoding="utf-8"), "## Renamed modules")
    table = {}
    for old, new in rows:
        homes = tuple(h.removeprefix("theremin.") for h in re.findall(r"`(theremin[\w.]*)`", new))
        name = re.match(r"`theremin\.([\w.]+)`", old)[1]
        table[name] = homes[:1] if "(the module)" in old else homes
    want = dict(_moved.MOVED) | {old: homes for old, homes in _moved.PACKAGES.items()}
    assert table == want


def test_layout_public_api_is_all():
    rows = _table((ROOT / "docs" / "layout.md").read_text(encoding="utf-8"), "## The public API")
    table = {name.strip("`"): home.strip("`").removeprefix("theremin.") for name, home in rows}
    assert sorted(table) == theremin.__all__
    assert table == theremin._API

"""Write docs/config.md, the config reference, from the YAML files under conf/ (so it cannot go stale).

    python scripts/gen_config_docs.py            # rewrite docs/config.md
    python scripts/gen_config_docs.py --check    # exit 1 when docs/config.md differs from what conf/ gives now
    make docs                                    # the same as the first

For each top-level config (conf/*.yaml: one per app) and each option of each config group (conf/<group>/*.yaml):
the file's leading comment lines, its defaults list and a table of its keys (dotted paths) with their default
values as written and the comment beside or above each key. Files are read as YAML (OmegaConf.load, interpolations
left as written); nothing is composed or instantiated. Configs, groups and options are sorted by name, keys keep
the file's order; the output depends on conf/ alone.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from theremin.config import conf_dir

OUT = Path(__file__).resolve().parents[1] / "docs" / "config.md"
COMMAND = "python scripts/gen_config_docs.py"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[^\s#:\-\"'][^:#]*?|\"[^\"]*\"|'[^']*'):(?:[ \t]+(?P<rest>.*))?$")
ITEM_LINE = re.compile(r"^(?P<indent> *)- (?P<rest>.*)$")


def split_comment(text: str) -> tuple[str, str]:
    """``value  # comment`` -> (value, comment): a '#' after whitespace and outside quotes starts a comment."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip(), text[i + 1:].strip()
    return text.rstrip(), ""


def leading_comments(lines: list[str]) -> tuple[str | None, list[str]]:
    """The file's first comment lines (until the first line that is not one): its ``@package`` and the rest."""
    package, out = None, []
    for line in lines:
        if not line.startswith("#"):
            break
        text = line[1:].removeprefix(" ").rstrip()
        if text.startswith("@package "):
            package = text.removeprefix("@package ").strip()
        else:
            out.append(text)
    return package, out


def scan(lines: list[str], skip: int) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Walk the YAML lines after the leading comments: dotted key -> (value as written, comment), where the
    comment is the comment lines right above the key and the one beside it (an indented comment line under a
    commented key continues that comment); and the comments of the defaults list's items, in order."""
    keys: dict[str, tuple[str, str]] = {}
    items: list[str] = []
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    last: str | None = None  # the key whose side comment an indented comment line continues
    in_defaults = False
    for line in lines[skip:]:
        stripped = line.strip()
        if not stripped:
            above, last = [], None
            continue
        if stripped.startswith("#"):
            text = stripped[1:]
            if last is not None and text.startswith("  "):
                value, comment = keys[last]
                keys[last] = (value, f"{comment} {text.strip()}")
            else:
                above.append(text.strip())
                last = None
            continue
        item = ITEM_LINE.match(line)
        if item:
            if in_defaults:
                items.append(split_comment(item["rest"])[1])
            above, last = [], None
            continue
        m = KEY_LINE.match(line)
        if not m:
            above, last = [], None
            continue
        indent, key = len(m["indent"]), m["key"].strip("\"'")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        value, side = split_comment(m["rest"] or "")
        keys[path] = (value, "; ".join(filter(None, [" ".join(above), side])))
        in_defaults = path == "defaults"
        if not value:
            stack.append((indent, key))
        above, last = [], path if side else None
    return keys, items


def fmt(value) -> str:
    """A loaded value written as YAML flow style (lists and mappings on one line)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def rows(node: dict, written: dict[str, tuple[str, str]], prefix: str = ""):
    """(dotted key, default value or None for a mapping, comment) in the file's order; a mapping gets its own
    row only when it carries a comment, its keys always do."""
    for key, value in node.items():
        path = f"{prefix}{key}"
        raw, comment = written.get(path, ("", ""))
        if path == "defaults":
            continue
        if isinstance(value, dict) and value:
            if comment:
                yield path, None, comment
            yield from rows(value, written, f"{path}.")
        else:
            yield path, raw if raw and not isinstance(value, (list, dict)) else fmt(value), comment


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{cell(text)}{pad}{fence}"


def defaults_entry(entry) -> str:
    if isinstance(entry, dict):
        ((group, option),) = entry.items()
        return f"{group}: {fmt(option)}"
    return str(entry)


def describe(path: Path, heading: str, level: str) -> list[str]:
    """The markdown of one YAML file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    package, comments = leading_comments(lines)
    skip = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    written, item_comments = scan(lines, skip)
    loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    loaded = loaded if isinstance(loaded, dict) else {}
    rel = path.relative_to(conf_dir().parents[1]).as_posix()
    out = [f"{level} {heading}", "", f"[`{rel}`](../{rel})" + (f", package `{package}`" if package else ""), ""]
    if comments:
        out += ["```text", *comments, "```", ""]
    defaults = loaded.get("defaults") or []
    if defaults:
        out.append("Defaults list:")
        out.append("")
        for i, entry in enumerate(defaults):
            note = item_comments[i] if i < len(item_comments) and item_comments[i] else ""
            out.append(f"- {code(defaults_entry(entry))}" + (f": {note}" if note else ""))
        out.append("")
    table = list(rows(loaded, written))
    if table:
        out += ["| key | default | comment |", "| --- | --- | --- |"]
        out += [f"| {code(k)} | {'' if v is None else code(v)} | {cell(c)} |" for k, v, c in table]
        out.append("")
    elif not defaults:
        out += ["(no keys)", ""]
    return out


def generate() -> str:
    """docs/config.md as it should read now."""
    conf = conf_dir()
    apps = sorted(conf.glob("*.yaml"))
    groups = sorted(p for p in conf.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    out = ["# Config reference", "",
           f"<!-- generated by {COMMAND} from theremin/conf/: do not edit; `make docs` rewrites it -->", "",
           "Every option of every config, read from `theremin/conf/` (`conf/` in the checkout is a link to it). "
           "Any key is overridden on the command line (`theremin-train trainer.max_steps=3000`), any group picked "
           "by option name (`theremin-train model=mini`); `+key=value` adds a key. A default written `${...}` is "
           "an interpolation, `???` a value you must give. How the commands use them: [training](training.md), "
           "[data](data.md), [serving](serving.md).", "",
           "## Top-level configs (one per command)", ""]
    out += [f"- [`{p.name}`](#{p.stem}yaml)" for p in apps]
    out += ["", "## Config groups", ""]
    for g in groups:
        options = sorted(g.rglob("*.yaml"))
        names = ", ".join(f"`{o.relative_to(g).with_suffix('').as_posix()}`" for o in options)
        out.append(f"- [`{g.name}/`](#{g.name}): {names}")
    out.append("")
    for p in apps:
        out += describe(p, p.name, "###")
    for g in groups:
        out += [f"## {g.name}", ""]
        for o in sorted(g.rglob("*.yaml")):
            out += describe(o, f"{g.name}/{o.relative_to(g).with_suffix('').as_posix()}", "###")
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/config.md is out of date")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.is_file() else ""
        if current != text:
            diff = list(difflib.unified_diff(current.splitlines(), text.splitlines(), "docs/config.md",
                                             "generated", lineterm="", n=0))
            print(f"docs/config.md is out of date with conf/: run `{COMMAND}` (or `make docs`)", file=sys.stderr)
            print("\n".join(diff[:40]) + ("\n..." if len(diff) > 40 else ""), file=sys.stderr)
            return 1
        print("docs/config.md is up to date")
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(OUT.parents[1])} ({len(text):,} characters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

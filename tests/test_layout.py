"""The house: sub-packages in pipeline order, imports flowing one way, a public API that stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "theremin"
# lower layers never import higher ones; a module may import its own layer
LAYERS = [("errors", "fsio", "procs", "config", "_moved"), ("music",), ("codec",), ("data",), ("metrics",),
          ("model",), ("roll",), ("serve",), ("apps",)]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """Every theremin module a file imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "theremin":
                out |= {f"theremin.{a.name}" for a in node.names}
            elif node.module.startswith("theremin."):
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("theremin.")}
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return RANK.get(parts[1]) if len(parts) > 1 else None


def test_at_most_eight_modules_at_the_top_and_every_sub_package_is_in_a_layer():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert set(packages) <= set(RANK), packages
    for p in top:
        assert p == "__init__.py" or p.removesuffix(".py") in RANK, p


def test_imports_flow_one_way():
    """No module imports one of a higher layer (apps on top, errors/fsio/config at the bottom)."""
    upward = []
    for module, path in _modules().items():
        mine = _layer(module)
        for imported in _imports(path):
            theirs = _layer(imported)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} imports {imported}")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_circle_between_modules():
    mods = _modules()
    graph = {m: {i for i in _imports(p) if i in mods and i != m} for m, p in mods.items()}
    # the package __init__ files forward lazily to their own modules: not part of a load-time circle
    graph = {m: {i for i in deps if not (m.endswith(("theremin.data", "theremin.model")))} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                pytest.fail("import circle: " + " -> ".join([*stack[stack.index(n):], n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_public_api_imports_lightly():
    code = ("import sys, theremin; from theremin import MidiChar, MidiTokenizer, build_corpus; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "from theremin import GPT, GPTConfig, Roller, SamplingSettings; "
            "assert set(theremin.__all__) >= {'MidiChar', 'MidiTokenizer', 'GPT', 'GPTConfig', 'Roller', "
            "'SamplingSettings', 'build_corpus'}; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_old_module_names_still_import_with_a_deprecation_warning():
    import warnings

    import theremin

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sys.modules.pop("theremin.sample", None)
        from theremin.sample import Roller
    assert Roller is theremin.Roller
    assert any("theremin.roll.roller" in str(w.message) for w in caught)
    import hydra.utils

    # a run's saved config (.hydra/config.yaml of an older run) names the old _target_s
    from theremin.model.lit import LitGPT

    assert hydra.utils.get_class("theremin.lit.LitGPT") is LitGPT
    from theremin.model import GPT

    assert GPT is theremin.GPT
    import theremin.sample as old

    with pytest.raises(AttributeError, match=r"theremin\.sample' has no attribute 'no_such_name' \(it moved to"):
        old.no_such_name  # noqa: B018


def test_no_function_over_80_lines():
    long = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long


def test_scripts_import_the_package_without_editing_sys_path():
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    edits = [p.name for p in scripts.glob("*.py") if "sys.path" in p.read_text()]
    assert not edits, edits


def test_python_dash_m_with_an_old_app_name_runs_the_app(tmp_path):
    """k8s manifests and scripts of users ran `python -m theremin.train ...`: it still runs theremin-train."""
    r = subprocess.run([sys.executable, "-m", "theremin.train", "--cfg", "job", "model=nano"], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "theremin.model.lit.LitGPT" in r.stdout and "n_layer: 2" in r.stdout

"""The domain library's import graph: no cycle inside transforms/, imports inside functions counted too
(a cycle dodged by a function-level import is still a cycle in the design), and no Airflow in it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
IMPORT_CYCLES = PROJECT.parent / "shared" / "tools" / "import_cycles.py"


def test_transforms_has_no_import_cycle():
    run = subprocess.run([sys.executable, str(IMPORT_CYCLES), str(PROJECT), "transforms"], capture_output=True,
                         text=True, timeout=120)
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 import cycle(s)" in run.stdout, run.stdout


def test_transforms_imports_no_airflow():
    offenders = [p.relative_to(PROJECT).as_posix() for p in (PROJECT / "transforms").rglob("*.py")
                 if any(line.lstrip().startswith(("import airflow", "from airflow"))
                        for line in p.read_text(encoding="utf-8").splitlines())]
    assert not offenders, offenders


#: The layers of transforms/, bottom first: a module may import its own layer and those before it.
#: Modules directly in transforms/ (the chain, the CLI) are the top and may import any layer.
LAYERS = ["common", "catalogue", "formats", "config", "validation", "staging", "quality", "packaging", "intake",
          "archive", "access"]


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else len(LAYERS)


def _imports(path: Path):
    """(line, imported module) for every import of transforms in a file, inside functions too."""
    import ast

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        absolute = isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
        if absolute and node.module.startswith("transforms"):
            if node.module == "transforms":  # ``from transforms import x``: x is a subpackage or a root name
                for alias in node.names:
                    if alias.name in LAYERS or (PROJECT / "transforms" / f"{alias.name}.py").exists():
                        yield node.lineno, f"transforms.{alias.name}"
            else:
                yield node.lineno, node.module
        elif isinstance(node, ast.ImportFrom) and node.level:
            yield node.lineno, "<relative>"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("transforms."):
                    yield node.lineno, alias.name


def test_no_layer_imports_one_above_it():
    upward = []
    for path in sorted((PROJECT / "transforms").rglob("*.py")):
        rel = path.relative_to(PROJECT)
        module = ".".join(rel.with_suffix("").parts)
        for line, target in _imports(path):
            if target == "<relative>":
                upward.append(f"{rel}:{line}: relative import (write transforms.… so the layer is visible)")
            elif _layer(target) > _layer(module):
                upward.append(f"{rel}:{line}: {module} imports {target}")
    assert not upward, "\n".join(upward)


def test_every_layer_exists_and_says_what_it_may_import():
    for layer in LAYERS:
        init = PROJECT / "transforms" / layer / "__init__.py"
        assert init.exists(), layer
        assert "May import" in init.read_text(encoding="utf-8"), f"{layer}/__init__.py has no 'May import' paragraph"


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The check itself can fail: an import of access from common is reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from transforms.access.service import Archive\n", encoding="utf-8")
    found = [(line, t) for line, t in _imports(probe)]
    assert found == [(2, "transforms.access.service")]
    assert _layer("transforms.access.service") > _layer("transforms.common.probe")

"""The layering of design.md section 2: the data packages never import torch or the training side,
so a user who only converts data installs no torch, and ``train`` never needs ``ingest``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mtl_data"
DATA_PACKAGES = ("schema", "ingest", "shards", "stats", "synth", "readers")
NEUTRAL_MODULES = ("errors.py", "files.py", "procs.py")
FORBIDDEN_IN_DATA = ("torch", "mtl_data.train")


def imported_modules(path: Path, source: str | None = None) -> set[str]:
    """Every module a file (``source``, else its text) imports, at the top or inside functions,
    relative imports resolved."""
    package = ".".join(("mtl_data",) + path.relative_to(SRC).parent.parts)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def data_side_files() -> list[Path]:
    files = [p for pkg in DATA_PACKAGES for p in sorted((SRC / pkg).rglob("*.py"))]
    return files + [SRC / name for name in NEUTRAL_MODULES]


def offending(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("path", data_side_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_data_module_imports_torch_or_the_training_side(path):
    assert offending(imported_modules(path), FORBIDDEN_IN_DATA) == []


@pytest.mark.parametrize("path", sorted((SRC / "train").rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_the_training_side_does_not_import_ingest(path):
    assert offending(imported_modules(path), ("mtl_data.ingest",)) == []


def test_the_checker_sees_an_import_hidden_in_a_function():
    source = "def f():\n    import torch.nn\n    from ..train.data import loader\n"
    found = imported_modules(SRC / "schema" / "probe.py", source)
    assert offending(found, FORBIDDEN_IN_DATA) == ["mtl_data.train.data", "mtl_data.train.data.loader", "torch.nn"]


def test_importing_every_data_module_loads_no_torch():
    modules = [".".join(("mtl_data",) + p.relative_to(SRC).with_suffix("").parts) for p in data_side_files()]
    modules = [m.removesuffix(".__init__") for m in modules]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'mtl_data.train')))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""

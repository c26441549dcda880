"""Shared test helpers: the real fixtures, synthetic raw data, and an in-process CLI runner."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mtl_data.cli.main import main
from mtl_data.synth import SYNTHESIZERS

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("MTL_FIXTURES", REPO.parent / "shared" / "fixtures"))


def fixture_path(*parts: str) -> Path:
    """A path inside the real fixtures; the test FAILS (never skips) when it is missing."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"real fixture {path} is missing: set MTL_FIXTURES to the shared fixtures folder")
    return path


def read_manifest(out: Path, source: str) -> list[dict]:
    """The manifest rows of ``out/<source>``."""
    return pq.read_table(out / source / "manifest.parquet").to_pylist()


def read_rejects(out: Path, source: str) -> list[dict]:
    """The ``rejects.jsonl`` records of ``out/<source>``."""
    text = (out / source / "rejects.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_nothing_half_written(out: Path, source: str) -> None:
    """After a failed first run: no temporary visible outside ``.ingest/`` and no manifest."""
    visible_parts = [p for p in out.rglob("*.part") if ".ingest" not in p.relative_to(out).parts]
    assert visible_parts == []
    assert not (out / source / "manifest.parquet").exists()


@pytest.fixture
def kitti_real() -> Path:
    """The real KITTI object sample (2 training frames), read-only."""
    return fixture_path("kitti", "object")


@pytest.fixture
def kitti_copy(tmp_path: Path, kitti_real: Path) -> Path:
    """A writable copy of the real KITTI sample, to corrupt in bad-input tests."""
    dst = tmp_path / "kitti_raw"
    shutil.copytree(kitti_real, dst)
    for path in dst.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dst


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> callable:
    """``synth_root(name)``: a synthetic raw dataset in ``name``'s native layout (shared, read-only)."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"synth_{name}")
            SYNTHESIZERS[name](out, seed=0)
            cache[name] = out
        return cache[name]

    return get


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        """The lines of stderr that are not progress-bar output."""
        return [ln for ln in self.err.replace("\r", "\n").splitlines() if ln.strip() and "frame/s" not in ln
                and "it/s" not in ln and "frame]" not in ln and "?frame" not in ln]


    def one_error_line(self) -> str:
        """The single ``error: ...`` line of a failed command (non-zero exit, no traceback)."""
        assert self.code != 0, self.out
        assert "Traceback" not in self.err
        assert len(self.error_lines) == 1, self.err
        line = self.error_lines[0]
        assert line.startswith("error: "), line
        return line


@pytest.fixture
def cli(capsys):
    """Run ``mtl-data ARGS`` in-process; returns exit code, stdout and stderr."""

    def run(*args) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run

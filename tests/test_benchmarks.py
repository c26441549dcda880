"""A tiny-size run of every benchmark (``make bench`` runs them at full size), so none rots: each
must run to its end and print its figures against its floor and the command that made them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import FIXTURES, REPO

#: benchmark script -> the arguments of its tiny run.
TINY = {
    "ingest_kitti.py": ["--frames", "2", "--repeats", "1", "--workers-max", "1"],
    "ingest_a2d2.py": [
        "--frames",
        "2",
        "--repeats",
        "1",
        "--workers-max",
        "1",
        "--thesis-budget-s",
        "0.5",
        "--no-with-lidar",
    ],
    "ingest_gtsrb.py": ["--frames", "2", "--repeats", "1", "--workers-max", "1"],
    "ingest_tusimple.py": ["--frames", "2", "--repeats", "1", "--workers-max", "1"],
    "ingest_cityscapes.py": ["--frames", "2", "--repeats", "1", "--workers-max", "1"],
    "stats.py": ["--rows", "2000", "--repeats", "1"],
    "trainer.py": ["--steps", "4", "--warmup", "2", "--repeats", "1", "--size", "64x128", "--batch-size", "2"],
    "weighting.py": [
        "--steps",
        "1",
        "--repeats",
        "1",
        "--size",
        "32x64",
        "--batch-size",
        "2",
        "--strategies",
        "equal,gradnorm,pcgrad",
    ],
    "loader.py": [
        "--frames",
        "4",
        "--repeats",
        "1",
        "--batches",
        "1",
        "--warmup-batches",
        "1",
        "--batch-size",
        "2",
        "--workers-max",
        "1",
        "--size",
        "64x128",
    ],
}


#: benchmarks whose tiny run is in their own test file (tests/test_models.py runs bench/models.py).
TESTED_ELSEWHERE = {"models.py"}


def test_every_benchmark_has_a_tiny_run():
    scripts = {p.name for p in (REPO / "bench").glob("*.py") if p.name != "common.py"}
    assert scripts <= set(TINY) | TESTED_ELSEWHERE, "add the new benchmark's tiny run here"


@pytest.mark.parametrize("script", sorted(TINY))
def test_the_benchmark_runs_to_its_end_at_tiny_size(script):
    env = {**os.environ, "MTL_FIXTURES": str(FIXTURES)}
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *TINY[script]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "command:" in result.stdout and "floor" in result.stdout, result.stdout[-2000:]


def test_the_benchmarks_are_what_make_bench_runs():
    makefile = (REPO / "Makefile").read_text()
    for script in set(TINY) | TESTED_ELSEWHERE:
        assert f"bench/{script}" in makefile, script

"""A tiny-size run of every benchmark (``make bench`` runs them at full size), so none rots: each
must run to its end and print, as numbers, the ratios against its floor that BENCHMARKS.md
reports (computed on CPU time) and the command that made them.

Nothing here asserts on speed: a ratio only has to be a positive finite number.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest
from conftest import FIXTURES, REPO

#: benchmark script -> the arguments of its tiny run. GTSRB's, whose samples are tiny, also runs
#: the 2-worker pool path of the ingest benchmarks' scaling.
TINY = {
    "ingest_kitti.py": ["--frames", "2", "--repeats", "1", "--workers-max", "1", "--scale-frames", "2"],
    "ingest_a2d2.py": [
        *("--frames", "2", "--repeats", "1", "--workers-max", "1", "--scale-frames", "2"),
        *("--thesis-budget-s", "0.5", "--thesis-crop", "16", "--no-with-lidar"),
    ],
    "ingest_gtsrb.py": ["--frames", "40", "--repeats", "1", "--workers-max", "2", "--scale-frames", "80"],
    "ingest_tusimple.py": ["--frames", "2", "--repeats", "1", "--workers-max", "1", "--scale-frames", "2"],
    "ingest_cityscapes.py": ["--frames", "2", "--repeats", "1", "--workers-max", "1", "--scale-frames", "2"],
    # a local Ray instance of 1, then 2 CPUs, started by the script (~25 s, most of it Ray's start-ups)
    "ingest_ray.py": [
        *("--frames", "4", "--repeats", "1", "--workers-max", "2", "--a2d2-frames", "1", "--no-with-lidar"),
    ],
    "stats.py": ["--rows", "2000", "--repeats", "1"],
    "trainer.py": [
        *("--steps", "6", "--warmup", "2", "--repeats", "1", "--size", "32x64", "--batch-size", "2"),
        *("--loader-workers", "0"),
    ],
    "weighting.py": [
        *("--steps", "1", "--repeats", "1", "--size", "32x64", "--batch-size", "2"),
        *("--strategies", "equal,gradnorm,pcgrad"),
    ],
    "loader.py": [
        *("--frames", "2", "--repeats", "1", "--batches", "4", "--warmup-batches", "1", "--batch-size", "2"),
        *("--workers-max", "1", "--size", "64x128"),
    ],
    "models.py": ["--tiny", "--models", "resnet18-fpn"],
    "tag.py": ["--tiny"],
    "frames.py": ["--size", "32x64", "--repeats", "1", "--stream", "2", "--batch", "1"],
    "jpeg.py": ["--rounds", "1", "--block-ms", "1"],
    "datawait.py": [
        *("--frames", "2", "--steps", "3", "--log-every", "1", "--batch-size", "2", "--size", "64x128"),
        *("--model", "resnet18-fpn", "--workers", "1", "--device", "cpu"),
    ],
}
#: benchmarks that take the synthetic shards of the test session instead of making their own
#: (trainer.py makes its own: the session's have a larger val split, which its runs evaluate).
TAKES_SHARDS = {"weighting.py"}

_INGEST = [r"^  ingest / floor 1 +(\S+)  >= 0\.80", r"^  ingest / floor 2 +(\S+)  >= 0\.80", r"CPU efficiency"]
#: per benchmark, patterns its output must match; a capture group is a ratio (a positive finite number).
RATIOS = {
    "ingest_kitti.py": _INGEST,
    "ingest_a2d2.py": [*_INGEST, r"^  ingest / floor 3 +(\S+)$", r"^ours: _pack_rgb.* (\S+)$"],
    # and the CPU efficiency of the 2-worker ingest, the 10th column of the scaling table (a number:
    # at this size the pool's start-up CPU, subtracted, is larger than the work, so its sign is noise)
    "ingest_gtsrb.py": [r"^  ingest / floor +(\S+)  >= 0\.80", r"^2 +(?:\S+ +){8}-?\d+\.\d\d\b"],
    "ingest_tusimple.py": _INGEST,
    "ingest_cityscapes.py": _INGEST,
    # local / ray CPU per frame at 1 and 2 workers, the 1 -> 2 CPU ratios, the byte-for-byte check,
    # the measured A2D2 worker CPU and a row of the simulated cluster table
    "ingest_ray.py": [
        r"^  local / ray CPU per frame, workers=1 +(\S+)$",
        r"^  local / ray CPU per frame, workers=2 +(\S+)$",
        r"^  local pool 1 -> 2 workers: wall speed-up \(info\) \S+x, CPU ratio (\S+)$",
        r"^  ray gross  1 -> 2 workers: wall speed-up \(info\) \S+x, CPU ratio (\S+)$",
        r"^ray output identical to local: yes",
        r"^  A2D2 Ray worker CPU per frame +(\S+) ms",
        r"^512 +(\S+) +\S+ +\S+ +\S+ +\S+  (?:workers|driver|network)$",
    ],
    "stats.py": [r"floor / this = (\S+) \(CPU time\)", r"target <= 3 s CPU"],
    "trainer.py": [r"bare / loop = (\S+) of floor"],
    "weighting.py": [r"^  symmetric pcgrad +\S+ +(\S+)$", r"asymmetric / symmetric per sample = (\S+)"],
    "loader.py": [
        r"^  floor / loader CPU +(\S+)  >= 0\.80",
        r"^  plain / loader workers=0, CPU +(\S+)  >= 2",
        r"^  thesis / loader workers=0, CPU +(\S+)  >= 5",
        r"as the loader",
        r"^  floor / worker CPU alone +(\S+)  >= 0\.80",
        r"^  loader CPU full-size / resharded, workers=0 +(\S+)$",
    ],
    # model / floor; the parameters of the ResNet-18 encoder are torchvision's (11,176,512)
    "models.py": [r"^resnet18-fpn(?: +\S+){6} +(\S+)$", r"encoder 11\.177 / ", r"a multiply-add counts as 2 FLOPs"],
    # ours / paper parameters, model / floor of the CPU forward, the attention generators' size
    "tag.py": [
        r"tag-realtime / paper, parameters +(\S+)$",
        r"^  ours \(TAG\)(?: +\S+){3} +(\S+)$",
        r"TAG adds (\S+) M parameters",
    ],
    # two frames / one per training sample and streaming / single-frame inference per frame, per fusion
    "frames.py": [
        *(
            rf"^  train, two frames / one frame per sample \({f}\) (\S+)  \(FLOPs ratio (\S+)\)$"
            for f in ("sum", "conv1x1")
        ),
        *(rf"^  stream / single-frame inference per frame \({f}\) (\S+)  target <= 1\.15$" for f in ("sum", "conv1x1")),
    ],
    # opencv / simplejpeg per factor, and the pixels the same (tests/test_jpeg_decode.py checks them too)
    "jpeg.py": [
        *(rf"^  opencv / simplejpeg, factor {f} +(\S+)x$" for f in (1, 2, 4, 8)),
        r"simplejpeg output identical to opencv at every factor: yes",
    ],
    # the data-wait fractions are numbers (one may be 0.00%), the resharded / full-size ratios positive
    "datawait.py": [
        r"^  data-wait, full-size +\d+\.\d\d%  target < 5%",
        r"^  data-wait, resharded 512 +\d+\.\d\d%  target < 5%",
        r"^  resharded / full-size samples/s \(wall\) +(\S+)$",
        r"^  full-size / resharded worker CPU per sample \(CPU time\) +(\S+)$",
    ],
}


def bench_scripts() -> set[str]:
    return {p.name for p in (REPO / "bench").glob("*.py") if p.name != "common.py"}


def test_every_benchmark_has_a_tiny_run_and_its_ratios():
    assert bench_scripts() == set(TINY), "add the new benchmark's tiny run here (and drop a removed one)"
    assert set(RATIOS) == set(TINY)


@pytest.fixture
def tiny_command(request, tmp_path):
    """The tiny run's command line of ``request.param``, with the session's synthetic shards
    where the benchmark takes them."""
    script = request.param
    extra = []
    if script in TAKES_SHARDS:
        extra = ["--shards", str(request.getfixturevalue("synth_shards"))]
    return script, [sys.executable, str(REPO / "bench" / script), *TINY[script], *extra]


@pytest.mark.parametrize("tiny_command", sorted(TINY), indirect=True)
def test_the_benchmark_runs_to_its_end_at_tiny_size_and_prints_its_ratios(tiny_command):
    script, command = tiny_command
    env = {**os.environ, "MTL_FIXTURES": str(FIXTURES)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert "command: " in out and f"bench/{script}" in out, out[-2000:]
    assert "CPU" in out, "ratios are computed on CPU time, and the output says so"
    for pattern in RATIOS[script]:
        match = re.search(pattern, out, re.MULTILINE)
        assert match, f"{script}: no line matching {pattern!r} in:\n{out[-3000:]}"
        if match.groups():
            value = float(match.group(1).rstrip("x"))
            assert math.isfinite(value) and value > 0, match.group(0)


def test_the_benchmarks_are_what_make_bench_runs():
    makefile = (REPO / "Makefile").read_text()
    for script in TINY:
        assert f"bench/{script}" in makefile, script

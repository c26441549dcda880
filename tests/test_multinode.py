"""Multi-node training is torchrun's job: two ``torchrun --nnodes 2`` launchers meeting at one c10d
rendezvous on this machine stand in for two nodes (docs/training.md, "Multi-node training").

Each "node" is its own torchrun process with one CPU worker (gloo); the pair must train exactly
the run that one ``torchrun --standalone --nproc_per_node=2`` trains with the same options, and
resume exactly across both nodes. Every launch runs under a deadline: a rendezvous that never
completes (a node that did not start) kills both launchers and fails with their output.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from conftest import SMALL_RUN

from mtl_data.train import checkpoint as ckpt

MTL_TRAIN = str(Path(sys.executable).parent / "mtl-train")
# Cityscapes alone labels seg and det2d on every training sample, so metrics.csv's present/seg
# is the global batch: 4 per process x 2 processes.
OPTIONS = [
    "--tasks",
    "seg,det2d",
    "--steps",
    "3",
    "--log-every",
    "1",
    "--device",
    "cpu",
    "--set",
    "loader.mix.cityscapes=1",
    *SMALL_RUN,
]
DEADLINE_S = 240  # a launch takes about 10 s here; this only stops a hang
# One thread per process: two processes share two cores (torchrun sets it itself only when
# --nproc-per-node > 1, which a node here is not).
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*launcher: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher, MTL_TRAIN]


def launch(commands: list[list[str]], logs: list[Path]) -> list[str]:
    """Start every command at once (each in its own process group, output to its log) and wait
    for all; returns their outputs. Fails, after killing every group, when one exits non-zero or
    the deadline passes."""
    procs = []
    for command, log in zip(commands, logs, strict=True):
        with log.open("w") as out:
            procs.append(
                subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
            )
    deadline = time.monotonic() + DEADLINE_S
    try:
        codes = [p.wait(timeout=max(0.0, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for p in procs:  # torchrun's workers are in its group: none outlives the test
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    outputs = [log.read_text() for log in logs]
    shown = "\n".join(f"---- {log.name}\n{text[-3000:]}" for log, text in zip(logs, outputs, strict=True))
    if codes is None:
        pytest.fail(f"the launch did not finish in {DEADLINE_S} s (killed):\n{shown}")
    assert codes == [0] * len(procs), shown
    return outputs


def two_nodes(tmp_path: Path, name: str, node_args: list[list[str]]) -> list[str]:
    """Two torchrun launchers, one process each, rendezvousing as two nodes at 127.0.0.1."""
    rendezvous = [
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{free_port()}",
        "--rdzv-id",
        f"{name}-{uuid.uuid4().hex[:8]}",
    ]
    commands = [[*torchrun(*rendezvous), *args] for args in node_args]
    return launch(commands, [tmp_path / f"{name}.node{n}.log" for n in range(len(node_args))])


def parameters(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load(run / "checkpoints" / "last.pt")["model"]


def assert_same_parameters(a: Path, b: Path) -> None:
    pa, pb = parameters(a), parameters(b)
    assert pa.keys() == pb.keys()
    for name in pa:
        assert torch.equal(pa[name], pb[name]), name


def metrics_rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def single_node_run(synth_shards, tmp_path_factory) -> Path:
    """The reference: one torchrun, two processes on one node (as tests/test_train_loop.py runs)."""
    tmp = tmp_path_factory.mktemp("single_node")
    run = tmp / "run"
    command = [*torchrun("--standalone", "--nproc_per_node=2"), "--shards", str(synth_shards), "--out", str(run)]
    launch([[*command, *OPTIONS]], [tmp / "single_node.log"])
    return run


def test_two_nodes_train_the_run_one_node_with_two_processes_trains(single_node_run, synth_shards, tmp_path):
    """Each node gets its own --out (a node-local disk): only the rank 0 process writes, so exactly
    one of them becomes the run; its parameters are the single-node run's, bit for bit."""
    outs = [tmp_path / f"node{n}" / "run" for n in range(2)]
    logs = two_nodes(tmp_path, "fresh", [["--shards", str(synth_shards), "--out", str(out), *OPTIONS] for out in outs])

    # c10d numbers the nodes itself (--node-rank is only read by the static rendezvous): find rank 0
    main = [n for n, log in enumerate(logs) if "batch 4 x 2 process(es)" in log]
    assert len(main) == 1, logs
    assert f"run {outs[main[0]]}: " in logs[main[0]]
    for n, log in enumerate(logs):
        assert f"rank {0 if n == main[0] else 1}/2" in log  # the loader line: one group of two
    run, other = outs[main[0]], outs[1 - main[0]]
    assert not other.parent.exists(), "a rank other than 0 wrote"  # not even a folder

    rows = metrics_rows(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(int(r["present/seg"]) == 4 * 2 for r in rows)  # the global batch: world size 2
    assert_same_parameters(run, single_node_run)
    reference = metrics_rows(single_node_run)
    for column in ("loss", "loss/seg", "loss/det2d"):
        assert [r[column] for r in rows] == [r[column] for r in reference], column
    metrics = json.loads((run / "eval.json").read_text())["metrics"]
    assert metrics == json.loads((single_node_run / "eval.json").read_text())["metrics"]


def test_a_two_node_run_stopped_and_resumed_on_both_nodes_ends_as_the_uninterrupted_run(
    single_node_run, synth_shards, tmp_path
):
    """--out on storage both nodes see: every rank reads checkpoints/last.pt when resuming."""
    run = tmp_path / "run"
    two_nodes(tmp_path, "stopped", [["--shards", str(synth_shards), "--out", str(run), *OPTIONS, "--stop-at", "2"]] * 2)
    assert ckpt.load(run / "checkpoints" / "last.pt")["step"] == 2
    two_nodes(tmp_path, "resumed", [["--resume", str(run)]] * 2)
    assert [int(r["step"]) for r in metrics_rows(run)] == [1, 2, 3]
    assert_same_parameters(run, single_node_run)

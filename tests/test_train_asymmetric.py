"""The asymmetric mode's invariants (trainer.md section 5): equal to symmetric when every k is the
batch and every sample labels every task; each part steps exactly floor(labelled / k) times;
DDP ranks stay identical; resume is exact; its limits are one clear line each."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_mtl_train

from mtl_data.train import checkpoint as ckpt

SMALL = [
    "--model",
    "resnet18-fpn",
    "--image-size",
    "64x128",
    "--workers",
    "0",
    "--set",
    "model_options.neck_channels=32",
    "--log-every",
    "1",
    "--seed",
    "5",
]


def ok(capsys, *args) -> None:
    code, _, err = run_mtl_train(capsys, *args)
    assert code == 0, err


def state(run: Path) -> dict:
    return ckpt.load(run / "checkpoints" / "last.pt")


def rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_with_every_k_the_batch_and_full_labels_asymmetric_is_symmetric(synth_shards, tmp_path, capsys):
    """KITTI frames label depth, det2d and det3d all: both modes give the same bytes after 4 steps."""
    common = [
        "--shards",
        synth_shards,
        "--tasks",
        "depth,det2d,det3d",
        "--mix",
        "kitti=1",
        "--batch-size",
        "2",
        "--steps",
        "4",
        *SMALL,
    ]
    ok(capsys, *common, "--out", tmp_path / "sym")
    ok(capsys, *common, "--out", tmp_path / "asym", "--mode", "asymmetric")
    a, b = state(tmp_path / "sym")["model"], state(tmp_path / "asym")["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert [r["loss"] for r in rows(tmp_path / "sym")] == [r["loss"] for r in rows(tmp_path / "asym")]


def test_each_part_steps_exactly_floor_of_its_labelled_samples_over_k(synth_shards, tmp_path, capsys):
    run = tmp_path / "run"
    k = {"encoder": 6, "seg": 5, "sign": 4}
    ok(
        capsys,
        "--shards",
        synth_shards,
        "--out",
        run,
        "--mode",
        "asymmetric",
        "--tasks",
        "seg,sign",
        "--batch-size",
        "4",
        "--steps",
        "7",
        *SMALL,
        *(a for part, v in k.items() for a in ("--set", f"asymmetric.k.{part}={v}")),
    )
    parts = state(run)["optimizer"]
    log = rows(run)
    labelled = {t: sum(int(r[f"present/{t}"]) for r in log) for t in ("seg", "sign")}
    # samples that label any task: every loaded sample (the loader drops those that label none)
    labelled["encoder"] = 4 * 7
    assert 0 < labelled["seg"] < labelled["encoder"] and 0 < labelled["sign"] < labelled["encoder"]
    for part, v in k.items():
        assert parts["steps"][part] == labelled[part] // v, part
        assert parts["count"][part] == labelled[part] % v, part


def test_an_asymmetric_run_resumes_exactly(synth_shards, tmp_path, capsys):
    args = [
        "--shards",
        synth_shards,
        "--mode",
        "asymmetric",
        "--tasks",
        "seg,sign",
        "--batch-size",
        "4",
        "--steps",
        "6",
        "--save-every",
        "2",
        "--set",
        "asymmetric.k.encoder=8",
        "--set",
        "asymmetric.k.seg=6",
        *SMALL,
    ]
    ok(capsys, *args, "--out", tmp_path / "straight")
    ok(capsys, *args, "--out", tmp_path / "stopped", "--stop-at", "3")
    ok(capsys, "--resume", tmp_path / "stopped")
    a, b = state(tmp_path / "straight"), state(tmp_path / "stopped")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert a["optimizer"]["steps"] == b["optimizer"]["steps"] and a["optimizer"]["count"] == b["optimizer"]["count"]


def test_two_asymmetric_ranks_stay_identical(synth_shards, tmp_path):
    """2 gloo processes: the run ends (the loop compares the ranks' parameter checksums)."""
    run = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(Path(sys.executable).parent / "mtl-train"),
        "--shards",
        str(synth_shards),
        "--out",
        str(run),
        "--mode",
        "asymmetric",
        "--tasks",
        "seg,sign",
        "--batch-size",
        "2",
        "--steps",
        "3",
        "--device",
        "cpu",
        "--set",
        "asymmetric.k.seg=6",
        *SMALL,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert state(run)["optimizer"]["steps"]["encoder"] == 3  # global batch 4 = the default k


@pytest.mark.parametrize(
    "args, says",
    [
        (["--precision", "fp16"], "fp32 or bf16"),
        (["--set", "asymmetric.k.seg=2"], "asymmetric.k.seg=2 is below the global batch (4 samples)"),
        (["--set", "asymmetric.k.depth=8"], "asymmetric.k names depth"),
    ],
)
def test_asymmetric_limits_are_one_line_each(args, says, synth_shards, tmp_path, capsys):
    code, _, err = run_mtl_train(
        capsys,
        "--shards",
        synth_shards,
        "--out",
        tmp_path / "r",
        "--mode",
        "asymmetric",
        "--tasks",
        "seg,sign",
        "--batch-size",
        "4",
        "--steps",
        "1",
        *SMALL,
        *args,
    )
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code != 0 and len(lines) == 1 and "Traceback" not in err, err
    assert says in lines[0]
    assert not (tmp_path / "r").exists()


def test_the_thesis_preset_sets_its_configuration_and_options_override_it(synth_shards, tmp_path, capsys):
    from mtl_data.train.config import load_config

    run = tmp_path / "thesis"
    ok(
        capsys,
        "--shards",
        synth_shards,
        "--out",
        run,
        "--preset",
        "thesis",
        "--steps",
        "1",
        "--image-size",
        "64x128",
        "--workers",
        "0",
        "--set",
        "asymmetric.k.seg=40",
    )
    config = load_config(run / "config.toml")
    assert config.mode == "asymmetric" and config.model == "resnet50-bifpn"
    assert config.tasks == ("seg", "depth", "det2d", "steer") and config.loader.mix == {"a2d2": 1.0}
    assert config.asymmetric.k == {"encoder": 48, "steer": 24, "seg": 40, "det2d": 16, "depth": 16}
    assert config.loader.image_size == (64, 128)

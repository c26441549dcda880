"""``mtl-train`` training end to end on CPU: a run of all seven tasks, overfitting a few samples,
exact resume, the run folder, evaluation, Delta_T, and every bad input as one line."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import SMALL_RUN, run_mtl_train

from mtl_data.cli.mtl_train import main as mtl_train
from mtl_data.train import checkpoint as ckpt
from mtl_data.train.evaluate import delta_t
from mtl_data.train.tasks import create_task

run_cli = run_mtl_train


def one_error_line(code: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code != 0 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def metrics_rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def parameters(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return ckpt.load(run / "checkpoints" / f"{which}.pt")["model"]


# ---- a run of every task ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_tasks_run(synth_shards, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "all"
    try:
        mtl_train(["--shards", str(synth_shards), "--out", str(run), "--steps", "2", "--log-every", "1", *SMALL_RUN])
    except SystemExit as exc:  # pragma: no cover - shown by the assertions below
        assert not exc.code
    return run


def test_a_two_step_run_of_all_seven_tasks_on_mixed_sources_writes_the_run_folder(all_tasks_run):
    run = all_tasks_run
    for name in ("config.toml", "metrics.csv", "eval.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    rows = metrics_rows(run)
    tasks = ["seg", "depth", "det2d", "det3d", "steer", "sign", "lane"]
    assert [int(r["step"]) for r in rows] == [1, 2]
    for column in [
        "loss",
        "samples_per_s",
        "data_wait",
        *(f"{k}/{t}" for k in ("loss", "weight", "present") for t in tasks),
        "lr/encoder",
        "lr/heads.seg",
    ]:
        assert column in rows[0], column
        assert math.isfinite(float(rows[0][column])), column
    assert all(float(rows[0][f"weight/{t}"]) in (0.0, 1.0) for t in tasks)
    doc = json.loads((run / "eval.json").read_text())
    assert doc["split"] == "val" and doc["step"] == 2 and doc["delta_t"] is None
    assert {"seg", "det2d", "sign", "lane"} <= set(doc["metrics"])
    assert list(doc["metrics"]["seg"])[:2] == ["miou", "pixel_acc"]


def test_a_checkpoint_loads_with_weights_only_and_holds_every_state(all_tasks_run):
    state = torch.load(all_tasks_run / "checkpoints" / "last.pt", weights_only=True)
    assert {
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "weighting",
        "rng",
        "loader",
        "config",
        "step",
        "classes",
        "best",
    } <= set(state)
    assert state["step"] == 2 and state["config"]["tasks"] == [
        "seg",
        "depth",
        "det2d",
        "det3d",
        "steer",
        "sign",
        "lane",
    ]


def test_the_report_has_one_row_per_run(all_tasks_run, capsys):
    code, out, err = run_cli(capsys, "report", all_tasks_run)
    assert code == 0, err
    header, row = out.splitlines()[:2]
    assert "seg miou (up)" in header and "GFLOPs" in header and "samples/s" in header
    assert row.split()[0] == all_tasks_run.name and "resnet18-fpn" in row


# ---- learning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stl", "symmetric"])
def test_a_small_model_overfits_a_few_samples(mode, synth_shards, tmp_path, capsys):
    """Training on the synthetic A2D2 train split, evaluated on that same split: the seg loss falls
    well below its start and mIoU rises above the untrained model's."""
    tasks = "seg" if mode == "stl" else "seg,depth"
    run = tmp_path / mode
    code, _, err = run_cli(
        capsys,
        "--shards",
        synth_shards,
        "--out",
        run,
        "--mode",
        mode,
        "--tasks",
        tasks,
        "--mix",
        "a2d2=1",
        "--steps",
        "60",
        "--log-every",
        "5",
        "--lr",
        "3e-3",
        "--set",
        "eval.split=train",
        "--set",
        "loader.augment=false",
        *SMALL_RUN,
    )
    assert code == 0, err
    rows = metrics_rows(run)
    first, last = float(rows[0]["loss/seg"]), float(rows[-1]["loss/seg"])
    assert last < 0.5 * first, (first, last)
    trained = json.loads((run / "eval.json").read_text())["metrics"]["seg"]["miou"]
    code, _, err = run_cli(
        capsys,
        "--shards",
        synth_shards,
        "--out",
        tmp_path / "untrained",
        "--mode",
        mode,
        "--tasks",
        tasks,
        "--mix",
        "a2d2=1",
        "--steps",
        "1",
        "--lr",
        "0",
        "--set",
        "eval.split=train",
        *SMALL_RUN,
    )
    assert code == 0, err
    untrained = json.loads((tmp_path / "untrained" / "eval.json").read_text())["metrics"]["seg"]["miou"]
    assert trained > untrained + 0.05, (untrained, trained)


# ---- resume ---------------------------------------------------------------------------------

RESUME_ARGS = ["--tasks", "seg,det2d,sign", "--log-every", "1", "--save-every", "2", "--seed", "3", *SMALL_RUN]


@pytest.fixture(scope="module")
def straight_run(synth_shards, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight") / "run"
    mtl_train_ok(["--shards", synth_shards, "--out", run, "--steps", "6", *RESUME_ARGS])
    return run


def mtl_train_ok(args) -> None:
    try:
        mtl_train([str(a) for a in args])
    except SystemExit as exc:
        assert not exc.code


@pytest.mark.parametrize("stop", [4, 3], ids=["at_a_checkpoint", "inside_a_data_segment"])
def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(stop, straight_run, synth_shards, tmp_path):
    run = tmp_path / "run"
    mtl_train_ok(["--shards", synth_shards, "--out", run, "--steps", "6", "--stop-at", stop, *RESUME_ARGS])
    assert not (run / "eval.json").exists()
    mtl_train_ok(["--resume", run])
    a, b = parameters(straight_run), parameters(run)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    rows = metrics_rows(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in rows] == [r["loss"] for r in metrics_rows(straight_run)]


def test_a_resume_with_another_config_is_refused(straight_run, capsys):
    line = one_error_line(*run_cli(capsys, "--resume", straight_run, "--steps", "8", "--set", "optim.lr=0.5")[::2])
    assert "differs" in line and "optim.lr" in line


def test_a_corrupt_checkpoint_is_one_line(straight_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(straight_run, run)
    path = run / "checkpoints" / "last.pt"
    path.write_bytes(path.read_bytes()[:1000])
    line = one_error_line(*run_cli(capsys, "--resume", run, "--steps", "8")[::2])
    assert "last.pt" in line and "not a readable checkpoint" in line


# ---- evaluation and Delta_T -----------------------------------------------------------------


def test_delta_t_on_hand_values():
    tasks = {"seg": create_task("seg"), "depth": create_task("depth")}
    metrics = {"seg": {"miou": 0.55}, "depth": {"abs_rel": 0.09}}
    # seg +10 % (higher is better), depth 0.09 vs 0.10: 10 % lower error is +10 %
    assert delta_t(metrics, {"seg": 0.5, "depth": 0.10}, tasks) == pytest.approx(10.0)
    assert delta_t(metrics, {"seg": 0.6}, tasks) == pytest.approx(-100 * 0.05 / 0.6)
    assert delta_t(metrics, {}, tasks) is None


def test_eval_against_single_task_runs_gives_delta_t(all_tasks_run, synth_shards, tmp_path, capsys):
    stl = tmp_path / "stl_seg"
    code, _, err = run_cli(
        capsys, "--shards", synth_shards, "--out", stl, "--mode", "stl", "--tasks", "seg", "--steps", "1", *SMALL_RUN
    )
    assert code == 0, err
    code, out, err = run_cli(capsys, "eval", all_tasks_run, "--stl", stl)
    assert code == 0, err
    doc = json.loads((all_tasks_run / "eval.json").read_text())
    seg, base = doc["metrics"]["seg"]["miou"], doc["stl"]["seg"]["value"]
    assert doc["delta_t"] == pytest.approx((seg - base) / base * 100)
    assert "Delta_T" in out


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, says",
    [
        (["--tasks", "seg,flow"], "unknown task flow"),
        (["--model", "resnet99-fpn"], "resnet99-fpn"),
        (["--weighting", "magic"], "magic"),
        (["--set", "optim.lrr=1"], "optim.lrr"),
        (["--set", "optim.lr=fast"], "optim.lr"),
        (["--mode", "stl", "--tasks", "seg,sign"], "one task"),
    ],
)
def test_bad_training_input_is_one_line(args, says, synth_shards, tmp_path, capsys):
    out = tmp_path / "run"
    line = one_error_line(
        *run_cli(capsys, "--shards", synth_shards, "--out", out, "--steps", "1", *SMALL_RUN, *args)[::2]
    )
    assert says in line
    assert not out.exists()  # nothing half-written


def test_a_task_the_split_does_not_label_is_refused(synth_root, tmp_path, capsys, cli):
    shards = tmp_path / "shards"
    assert cli("ingest", "gtsrb", synth_root("gtsrb"), "--to", shards, "--workers", "1").code == 0
    line = one_error_line(
        *run_cli(capsys, "--shards", shards, "--out", tmp_path / "r", "--tasks", "seg", "--steps", "1", *SMALL_RUN)[::2]
    )
    assert "labels seg" in line and "sign" in line


def test_a_new_run_into_an_existing_run_is_refused(all_tasks_run, synth_shards, capsys):
    line = one_error_line(
        *run_cli(capsys, "--shards", synth_shards, "--out", all_tasks_run, "--steps", "1", *SMALL_RUN)[::2]
    )
    assert "holds a run already" in line


def test_a_non_finite_loss_stops_the_run_naming_task_and_step(synth_shards, tmp_path, capsys, monkeypatch):
    from mtl_data.train.tasks.sign import SignTask

    real = SignTask.loss

    def poisoned(self, output, batch):
        loss = real(self, output, batch)
        return loss * torch.where(torch.tensor(poisoned.calls >= 3), torch.tensor(float("nan")), torch.tensor(1.0))

    def counting(self, output, batch):
        poisoned.calls += 1
        return poisoned(self, output, batch)

    poisoned.calls = 0
    monkeypatch.setattr(SignTask, "loss", counting)
    run = tmp_path / "run"
    line = one_error_line(
        *run_cli(
            capsys,
            "--shards",
            synth_shards,
            "--out",
            run,
            "--tasks",
            "sign",
            "--steps",
            "6",
            "--save-every",
            "2",
            "--log-every",
            "2",
            *SMALL_RUN,
        )[::2]
    )
    assert "sign loss is not finite at step 3" in line
    assert ckpt.load(run / "checkpoints" / "last.pt")["step"] == 2


# ---- two processes --------------------------------------------------------------------------


def test_a_two_process_gloo_run_trains_writes_once_and_evaluates_exactly(synth_shards, tmp_path, capsys):
    """torchrun with 2 CPU processes (gloo): the ranks end with the same parameters (the loop
    checks), only rank 0 writes, and the distributed evaluation equals a single-process one."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
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
        "--tasks",
        "seg,sign",
        "--steps",
        "3",
        "--log-every",
        "1",
        "--device",
        "cpu",
        *SMALL_RUN,
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert [int(r["step"]) for r in metrics_rows(run)] == [1, 2, 3]  # one writer
    rows = metrics_rows(run)
    assert all(int(r["present/seg"]) + int(r["present/sign"]) <= 2 * 4 for r in rows)
    distributed = json.loads((run / "eval.json").read_text())["metrics"]
    code, _, err = run_cli(capsys, "eval", run, "--device", "cpu")
    assert code == 0, err
    single = json.loads((run / "eval.json").read_text())["metrics"]
    assert single == distributed


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_train_on_cpu_with_finite_losses(precision, synth_shards, tmp_path, capsys):
    run = tmp_path / precision
    code, _, err = run_cli(
        capsys,
        "--shards",
        synth_shards,
        "--out",
        run,
        "--tasks",
        "sign",
        "--steps",
        "2",
        "--log-every",
        "1",
        "--precision",
        precision,
        *SMALL_RUN,
    )
    assert code == 0, err
    rows = metrics_rows(run)
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    state = ckpt.load(run / "checkpoints" / "last.pt")
    assert state["config"]["precision"] == precision
    assert all(v.dtype == torch.float32 for k, v in state["model"].items() if v.is_floating_point())


def test_task_losses_of_two_ranks_average_to_the_loss_of_the_whole_batch(real_shards, monkeypatch):
    """The normalisation by global labelled counts (steps.task_losses): two ranks holding the
    halves of a batch, whose samples label tasks unevenly, average (as DDP averages gradients) to
    exactly the single-process loss of the whole batch."""
    import polars as pl
    from conftest import batch_from_shards

    from mtl_data.shards.reader import ShardSet
    from mtl_data.train import steps
    from mtl_data.train.distributed import DistInfo
    from mtl_data.train.models import create_model

    keys = ShardSet.open(real_shards).manifest.filter(pl.col("split") == "train")["key"].to_list()[:6]
    batch = batch_from_shards(real_shards, keys, (64, 128))
    torch.manual_seed(0)
    model = create_model("resnet18-fpn", tasks=["seg", "det2d", "sign"], neck_channels=16)
    model.eval()

    def half(b: dict, part: slice) -> dict:
        return {k: (half(v, part) if isinstance(v, dict) else v[part]) for k, v in b.items()}

    halves = [half(batch, slice(0, 3)), half(batch, slice(3, 6))]
    with torch.no_grad():
        whole, counts = steps.task_losses(
            model(batch["image"]), batch, model.tasks, DistInfo(0, 1, 0, torch.device("cpu"))
        )
        outputs = [model(h["image"]) for h in halves]
        local = [torch.stack([h["present"][t].sum() for t in model.tasks]).float() for h in halves]
        per_rank = []
        for rank, h in enumerate(halves):
            monkeypatch.setattr(steps, "all_reduce_sum", lambda t, info: local[0] + local[1])
            loss, _ = steps.task_losses(outputs[rank], h, model.tasks, DistInfo(rank, 2, rank, torch.device("cpu")))
            per_rank.append(loss)
    assert [int(c) for c in counts] != [0, 0, 0] and any(int(pair[0]) != int(pair[1]) for pair in zip(*local))
    torch.testing.assert_close((per_rank[0] + per_rank[1]) / 2, whole, rtol=1e-5, atol=1e-6)


def test_init_from_starts_a_run_from_another_runs_weights(all_tasks_run, synth_shards, tmp_path, capsys):
    run = tmp_path / "continued"
    code, _, err = run_cli(
        capsys,
        "--shards",
        synth_shards,
        "--out",
        run,
        "--steps",
        "1",
        "--lr",
        "0",
        "--set",
        f"init_from={all_tasks_run / 'checkpoints' / 'last.pt'}",
        *SMALL_RUN,
    )
    assert code == 0, err
    a, b = parameters(all_tasks_run), parameters(run)
    assert all(torch.equal(a[k], b[k]) for k in a if k.endswith("weight"))  # lr 0: still the source's weights
    code, _, err = run_cli(
        capsys,
        "--shards",
        synth_shards,
        "--out",
        tmp_path / "other",
        "--tasks",
        "seg",
        "--steps",
        "1",
        "--set",
        f"init_from={all_tasks_run / 'checkpoints' / 'last.pt'}",
        *SMALL_RUN,
    )
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code != 0 and len(lines) == 1 and "same model and tasks" in lines[0]


def test_the_leang_layout_has_a_column_per_strategy_and_the_geometric_mean():
    from mtl_data.train.report import render_leang

    rows = [
        {
            "run": "runs/a",
            "weighting": "equal",
            "weights": {"seg": 1.0, "depth": 1.0},
            "frequencies": {"seg": 1, "depth": 1},
            "metrics": {
                "seg": {"metric": "miou", "value": 0.5, "higher_is_better": True},
                "depth": {"metric": "abs_rel", "value": 0.2, "higher_is_better": False},
            },
        },
        {
            "run": "runs/b",
            "weighting": "async",
            "weights": {"seg": 0.75, "depth": 0.25},
            "frequencies": {"seg": 1, "depth": 3},
            "metrics": {
                "seg": {"metric": "miou", "value": 0.6, "higher_is_better": True},
                "depth": {"metric": "abs_rel", "value": 0.1, "higher_is_better": False},
            },
        },
    ]
    text = render_leang(rows)
    lines = {ln.split("  ")[0]: ln.split() for ln in text.splitlines() if ln.strip()}
    assert text.splitlines()[0].split()[2:] == ["a", "(equal)", "b", "(async)"]
    # geometric mean: miou, and abs_rel as the first run's value over the run's own
    assert float(lines["geometric mean"][-2]) == pytest.approx(math.sqrt(0.5 * 1.0), abs=1e-4)
    assert float(lines["geometric mean"][-1]) == pytest.approx(math.sqrt(0.6 * 2.0), abs=1e-4)
    assert lines["weight depth"][-2:] == ["1.0000", "0.2500"] and lines["frequency depth"][-2:] == ["1", "3"]


def test_the_report_command_lays_runs_out_as_leang_et_al(all_tasks_run, capsys):
    code, out, err = run_cli(capsys, "report", all_tasks_run, all_tasks_run, "--layout", "leang")
    assert code == 0, err
    assert "Table II" in out and "geometric mean" in out and "Table I" in out and "frequency seg" in out


def test_a_moved_run_resumes_but_not_by_another_number_of_processes(straight_run, tmp_path, capsys):
    """The global batch, the data streams and the epoch length depend on the process count; the
    folder a run lies in does not (a run copied to another machine's disk resumes there)."""
    run = tmp_path / "moved"
    shutil.copytree(straight_run, run)
    path = run / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    assert state["world_size"] == 1
    torch.save({**state, "world_size": 2}, path)
    line = one_error_line(*run_cli(capsys, "--resume", run, "--steps", "7")[::2])
    assert "trained by 2 process(es), resumed by 1: resume with 2" in line
    torch.save(state, path)
    mtl_train_ok(["--resume", run, "--steps", "7"])
    assert [int(r["step"]) for r in metrics_rows(run)] == [1, 2, 3, 4, 5, 6, 7]
    assert f'out = "{run}"' in (run / "config.toml").read_text()

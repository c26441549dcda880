"""The Cityscapes-3D recipe of Choi et al. 2024 (TAG; configs/cityscapes3d/, docs/recipes.md).

Every row's config loads and validates with the trainer's loader, holds the paper's settings and
builds its model; the MTL rows differ from the full model only in Table III's switches. Then the
recipe itself runs: ``recipe.sh`` prints its commands (DRY_RUN) for two single-task rows and the
full model, with the sizes overridden (64x128, 2 steps, width 8, on the synthetic Cityscapes), and
each command runs here in-process, in order: ingest -> train -> eval --stl -> speed -> report
--layout tag and tag-ablation. ``mtl-train speed``'s file and its bad options are checked on
those runs too."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_mtl_train
from test_report_tag import paper_rows

from mtl_data.cli.main import main as mtl_data
from mtl_data.cli.mtl_train import main as mtl_train
from mtl_data.train.config import differences, resolve
from mtl_data.train.models import create_model
from mtl_data.train.report import TAG_SWITCHES, summarize_run

CONFIGS = REPO / "configs" / "cityscapes3d"
RECIPE = CONFIGS / "recipe.sh"
ROWS = sorted(p.stem for p in CONFIGS.glob("*.toml"))
MTL_ROWS = [r for r in ROWS if not r.startswith("stl_")]
#: the end-to-end rows: two single-task baselines and the full model
E2E_ROWS = ("stl_seg", "stl_depth", "tag_full")
#: every row at the same tiny size; tag-realtime (w = 8) stands in for resnet34-fpn in the STL
#: rows, whose 25 M parameters (300 MB checkpoints) would cost this test most of its time; the
#: paper's LR (2e-5) leaves a 2-step seg run at mIoU 0, against which Delta_T is undefined
SMALL_TRAIN = (
    "--model tag-realtime --image-size 64x128 --batch-size 2 --steps 2 --workers 0 --lr 1e-3 "
    "--set model_options.width=8 --set eval.every=0 --set save_every=0"
)
SMALL_SPEED = "--device cpu --warmup 1 --iters 2 --repeats 2"


def recipe_commands(**env: str) -> list[list[str]]:
    """``recipe.sh``'s commands under ``env`` (DRY_RUN: printed, not run), each as its argv."""
    done = subprocess.run(
        ["bash", str(RECIPE)],
        env={"PATH": os.environ["PATH"], "DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return [shlex.split(line) for line in done.stdout.splitlines()]


# ---- the configs --------------------------------------------------------------------------------


def test_the_folder_has_every_row_of_tables_ii_and_iii():
    assert ROWS == [
        "stl_depth",
        "stl_det3d",
        "stl_seg",
        "tag_full",
        "tag_no_aggregation",
        "tag_no_branch",
        "tag_no_channel_attention",
        "tag_no_spatial_attention",
        "tag_no_tag",
    ]


@pytest.mark.parametrize("row", ROWS)
def test_every_row_loads_validates_and_builds_its_model(row):
    config = resolve(CONFIGS / f"{row}.toml")
    assert config.out == f"runs/tag/{row}" and config.shards == "shards/cityscapes3d"
    with torch.device("meta"):  # the full-size network, without its memory
        model = create_model(
            config.model, tasks=list(config.tasks), task_options=config.task_options, **config.model_options
        )
    assert sorted(model.heads) == sorted(config.tasks)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    claimed = re.search(r"with this head has ([\d.]+) M", (CONFIGS / f"{row}.toml").read_text())
    if row.startswith("stl_"):  # the comment's count (resnet34-fpn against DLA34's ~20 M) is measured
        assert config.mode == "stl" and config.model == "resnet34-fpn"
        assert claimed is not None and float(claimed.group(1)) == round(params, 1)


def test_every_row_has_the_papers_cityscapes_3d_settings():
    for row in ROWS:
        c = resolve(CONFIGS / f"{row}.toml")
        # Sec. IV-D: 1024 x 2048, batch 2, no augmentation, Adam at 2e-5, poly with power 0.9
        assert c.loader.image_size == (1024, 2048) and c.loader.batch_size == 2, row
        assert c.loader.augment is False and c.loader.flip_p == 0 and c.loader.jitter == 0, row
        assert (c.optim.name, c.optim.lr, c.optim.weight_decay) == ("adamw", 2e-5, 0.0), row
        assert (c.schedule.name, c.schedule.power, c.schedule.warmup_steps) == ("poly", 0.9, 0), row
        assert c.eval.split == "val" and c.steps == 100 * math.ceil(2975 / 2), row
    full = resolve(CONFIGS / "tag_full.toml")
    # eq. 5: lambda_det = 1, lambda_seg = 100, lambda_dep = 1
    assert full.weighting.name == "static" and full.weighting.weights == {"det3d": 1.0, "seg": 100.0, "depth": 1.0}
    assert set(full.tasks) == {"det3d", "seg", "depth"} and full.model == "tag-realtime"


@pytest.mark.parametrize("row", MTL_ROWS)
def test_an_mtl_row_differs_from_the_full_model_only_in_its_switches(row):
    """Sec. IV-F: "These experiments adopt the same configurations as those in Tab. II"."""
    config, full = resolve(CONFIGS / f"{row}.toml"), resolve(CONFIGS / "tag_full.toml")
    changed = differences(full, config, ignore=("out",))
    assert all(d.startswith("model_options.") for d in changed), changed
    off = {name for name, _ in TAG_SWITCHES if config.model_options[name] is False}
    expected = {
        "tag_full": set(),
        "tag_no_tag": {"channel_attention", "spatial_attention"},
        "tag_no_branch": {"branch"},
        "tag_no_aggregation": {"aggregation"},
        "tag_no_channel_attention": {"channel_attention"},
        "tag_no_spatial_attention": {"spatial_attention"},
    }
    assert off == expected[row]


def test_the_recipe_runs_every_row_and_names_only_configs_of_the_folder():
    commands = recipe_commands(RAW="/data/cityscapes")
    trains = [c for c in commands if c[:2] == ["mtl-train", "--config"]]
    trained = [Path(c[2]).stem for c in trains]
    assert sorted(trained) == ROWS and all(Path(c[2]).parent == CONFIGS for c in trains)
    assert trained[:3] == ["stl_seg", "stl_depth", "stl_det3d"]  # the baselines first
    evals = [c for c in commands if c[:2] == ["mtl-train", "eval"]]
    assert len(evals) == len(MTL_ROWS) and all(c.count("--stl") == 3 for c in evals)
    assert commands[0][:3] == ["mtl-data", "ingest", "cityscapes"]
    assert [c[:4] for c in commands[-2:]] == [
        ["mtl-train", "report", "--layout", "tag"],
        ["mtl-train", "report", "--layout", "tag-ablation"],
    ]


def test_the_recipe_refuses_an_unknown_row_and_a_missing_raw_folder():
    bad = subprocess.run(
        ["bash", str(RECIPE)], env={"PATH": os.environ["PATH"], "RAW": "/x", "ROWS": "nope", "DRY_RUN": "1"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode != 0 and "no config" in bad.stderr and "nope.toml" in bad.stderr and not bad.stdout
    bad = subprocess.run(["bash", str(RECIPE)], env={"PATH": os.environ["PATH"], "DRY_RUN": "1"}, capture_output=True)
    assert bad.returncode != 0 and b"set RAW" in bad.stderr


# ---- the recipe, end to end ---------------------------------------------------------------------


def _in_process(argv: list[str]) -> str:
    """Run one ``mtl-data`` / ``mtl-train`` command of the recipe here; its stdout."""
    entry = {"mtl-data": mtl_data, "mtl-train": mtl_train}[argv[0]]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            entry(argv[1:])
        except SystemExit as exc:
            assert not exc.code, f"{shlex.join(argv)} failed:\n{err.getvalue()}"
    return out.getvalue()


@pytest.fixture(scope="module")
def recipe(synth_root, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("recipe")
    commands = recipe_commands(
        RAW=str(synth_root("cityscapes")),
        SHARDS=str(base / "shards"),
        RUNS=str(base / "runs"),
        ROWS=" ".join(E2E_ROWS),
        INGEST_ARGS="--workers 1",
        TRAIN_ARGS=SMALL_TRAIN,
        SPEED_ARGS=SMALL_SPEED,
    )
    outputs = [_in_process(argv) for argv in commands]
    return {"runs": base / "runs", "commands": commands, "outputs": outputs}


def _cells(text: str) -> tuple[str, dict[str, list[str]], list[str]]:
    lines = text.splitlines()
    body = lines[1 : lines.index("")]
    rows = {ln.split("  ")[0].strip(): [c.strip() for c in ln.split("  ") if c.strip()] for ln in body[1:]}
    return body[0], rows, lines[lines.index("") + 1 :]


def test_the_recipe_prints_table_ii_with_the_papers_columns(recipe):
    runs = recipe["runs"]
    text = recipe["outputs"][-2]
    assert text.startswith("Table II (Choi et al. 2024)")
    header, rows, notes = _cells(text)
    for column in ("DS (up)", "mIoU (up)", "RMSE m (down)", "Delta_T % (up)", "FPS (up)", "GFLOPs", "params M"):
        assert column in header, column
    assert list(rows) == list(E2E_ROWS)
    assert [rows[r][1] for r in E2E_ROWS] == ["STL", "STL", "MTL"]
    # the relative changes are the eval.json values against the STL runs', + = better
    full = json.loads((runs / "tag_full" / "eval.json").read_text())["metrics"]
    seg = json.loads((runs / "stl_seg" / "eval.json").read_text())["metrics"]["seg"]["miou"]
    depth = json.loads((runs / "stl_depth" / "eval.json").read_text())["metrics"]["depth"]["rmse"]
    miou_change = (full["seg"]["miou"] - seg) / seg * 100
    rmse_change = -(full["depth"]["rmse"] - depth) / depth * 100
    assert rows["tag_full"][4] == f"{full['seg']['miou'] * 100:.2f} ({miou_change:+.2f}%)"
    assert rows["tag_full"][5] == f"{full['depth']['rmse']:.2f} ({rmse_change:+.2f}%)"
    # DS is measured (a det3d run without det2d reads det2d's amodal boxes for it); no det3d STL row
    assert math.isfinite(full["det3d"]["ds"]) and rows["tag_full"][3] == f"{full['det3d']['ds'] * 100:.2f} (-)"
    assert rows["tag_full"][6] == f"{(miou_change + rmse_change) / 2:+.2f}*"
    assert rows["stl_seg"][6] == "0.00" and rows["stl_depth"][5] == f"{depth:.2f}"
    for r in E2E_ROWS:  # measured, so a number
        assert float(rows[r][7]) > 0 and float(rows[r][8]) > 0 and float(rows[r][9]) > 0
    assert any(n.startswith("FPS (mtl-train speed): batch 1, 64x128, fp32, on ") for n in notes)
    assert "STL baselines: seg stl_seg, depth stl_depth" in notes
    assert json.loads((runs / "report.json").read_text())[2]["speed"]["image_size"] == [64, 128]


def test_the_recipe_prints_table_iii_with_the_switches_of_the_run(recipe):
    text = recipe["outputs"][-1]
    assert text.startswith("Table III (Choi et al. 2024)")
    header, rows, _ = _cells(text)
    assert header.split()[:5] == ["run", "br", "agg", "alpha_t", "beta"]
    assert list(rows) == ["STL (tag-realtime)", "tag_full"]
    assert rows["tag_full"][1:5] == ["on", "on", "on", "on"]
    assert rows["STL (tag-realtime)"][-1] == "0.00"


def test_the_mtl_row_is_evaluated_against_the_stl_rows(recipe):
    doc = json.loads((recipe["runs"] / "tag_full" / "eval.json").read_text())
    assert set(doc["stl"]) == {"seg", "depth"} and doc["delta_t"] is not None


def test_speed_writes_speed_json_into_every_run(recipe):
    line = recipe["outputs"][[c[1] for c in recipe["commands"]].index("speed")]
    for row in E2E_ROWS:
        doc = json.loads((recipe["runs"] / row / "speed.json").read_text())
        assert doc["fps"] > 0 and doc["ms_per_frame"] == pytest.approx(1000 / doc["fps"])
        assert (doc["image_size"], doc["batch_size"]) == ([64, 128], 1)
        assert (doc["precision"], doc["compiled"]) == ("fp32", False)
        assert (doc["device_type"], doc["warmup"], doc["iters"], doc["repeats"]) == ("cpu", 1, 2, 2)
        assert len(doc["fps_windows"]) == 2 and doc["device"] and doc["threads"] >= 1
        assert (doc["model"], doc["step"], doc["run"]) == ("tag-realtime", 2, str(recipe["runs"] / row))
        assert f"{recipe['runs'] / row}: " in line and "frames/s" in line


def test_speed_at_another_size_and_precision_is_recorded_as_measured(recipe, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(recipe["runs"] / "stl_seg", run)
    code, out, err = run_mtl_train(
        capsys, "speed", run, "--image-size", "32x64", "--precision", "bf16", "--device", "cpu",
        "--warmup", "0", "--iters", "1", "--repeats", "1",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads((run / "speed.json").read_text())
    assert (doc["image_size"], doc["precision"], doc["warmup"]) == ([32, 64], "bf16", 0)
    assert "32x64, bf16" in out and str(run / "speed.json") in out


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--image-size", "0x128"], "Invalid value for '--image-size': '0x128': both sides must be >= 1"),
        (["--image-size", "big"], "Invalid value for '--image-size'"),
        (["--precision", "fp8"], "Invalid value for '--precision'"),
        (["--iters", "0"], "Invalid value for '--iters'"),
        (["--warmup", "-1"], "Invalid value for '--warmup'"),
        (["--repeats", "0"], "Invalid value for '--repeats'"),
        (["--device", "tpu"], "device 'tpu'"),
    ],
)
def test_speed_refuses_a_bad_option_in_one_line(recipe, options, fragment, capsys):
    code, _, err = run_mtl_train(capsys, "speed", recipe["runs"] / "stl_seg", *options)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


def test_speed_of_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    code, _, err = run_mtl_train(capsys, "speed", tmp_path)
    assert code != 0 and err.count("\n") == 1 and "not a run folder" in err


def test_the_reports_fabricated_rows_have_the_format_of_a_real_run(recipe):
    """tests/test_report_tag.py lays out rows built by hand: they hold what summarize_run gives."""
    real = summarize_run(recipe["runs"] / "tag_full")
    for fabricated in paper_rows():
        assert set(fabricated) == set(real)
        assert set(fabricated["speed"]) - {"fps"} <= set(real["speed"])
        for task, metric in (("det3d", "ds"), ("seg", "miou"), ("depth", "rmse")):
            assert metric in real["values"][task]

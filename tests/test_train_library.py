"""The training library end to end on the real fixtures of all five sources: every registered model
runs every registered task on one mixed batch; partial labels give no loss and no gradient; a
model's predictions written in the benchmarks' formats and read back by ``mtl-train score`` give
exactly the metrics computed in memory; the scorer's errors are one clear line."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import batch_from_shards, run_mtl_train

from mtl_data.cli.mtl_train import main as mtl_train
from mtl_data.errors import MtlDataError
from mtl_data.shards.reader import ShardSet
from mtl_data.train.data import build_loader
from mtl_data.train.models import create_model, list_models
from mtl_data.train.predict import write_predictions
from mtl_data.train.score import label_samples, score, tasks_for
from mtl_data.train.tasks import list_tasks

SIZE = (64, 128)


@pytest.fixture(scope="module")
def manifest(real_shards) -> pl.DataFrame:
    return ShardSet.open(real_shards).manifest


@pytest.fixture(scope="module")
def mixed_batch(real_shards, manifest) -> dict:
    """One letterboxed batch holding a sample of every source (and both Cityscapes frames)."""
    keys = [manifest.filter(pl.col("source") == s)["key"][0] for s in ("a2d2", "gtsrb", "kitti", "tusimple")]
    keys += manifest.filter(pl.col("source") == "cityscapes")["key"].to_list()
    return batch_from_shards(real_shards, keys, SIZE, letterbox=True)


def test_the_registries_name_every_task_and_the_documented_models():
    assert list_tasks() == ["seg", "depth", "det2d", "det3d", "steer", "sign", "lane"]
    assert {"resnet18-fpn", "resnet34-fpn", "resnet50-fpn", "resnet18-bifpn", "resnet50-bifpn"} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_every_task_on_a_real_batch_of_all_five_sources(name, mixed_batch):
    torch.manual_seed(0)
    model = create_model(name, tasks=list_tasks())
    assert set(mixed_batch["source"]) == {"a2d2", "cityscapes", "gtsrb", "kitti", "tusimple"}
    outputs = model(mixed_batch["image"])
    assert list(outputs) == list_tasks()
    total = 0.0
    for task_name, task in model.tasks.items():
        loss = task.batch_loss(outputs[task_name], mixed_batch)
        assert loss.ndim == 0 and torch.isfinite(loss), task_name
        total = total + loss
        predictions = task.decode(outputs[task_name], mixed_batch)
        assert len(predictions) == len(mixed_batch["key"]), task_name
    total.backward()
    # every task that some sample of the batch labels sends gradient into its head
    for task_name in list_tasks():
        grads = [p.grad for p in model.heads[task_name].parameters()]
        labelled = bool(mixed_batch["present"][task_name].any())
        assert labelled == any(g is not None and g.abs().sum() > 0 for g in grads), task_name


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return create_model("resnet18-fpn", tasks=list_tasks(), neck_channels=32)


@pytest.mark.parametrize("task_name", list_tasks())
def test_a_task_no_sample_labels_gives_exactly_zero_loss_and_no_gradient(task_name, small_model, real_shards, manifest):
    unlabelled = manifest.filter(~pl.col(f"has_{task_name}"))["key"].to_list()
    batch = batch_from_shards(real_shards, unlabelled[:6], SIZE)
    assert not batch["present"][task_name].any()
    small_model.zero_grad(set_to_none=True)
    outputs = small_model(batch["image"])
    loss = small_model.tasks[task_name].batch_loss(outputs[task_name], batch)
    assert loss.item() == 0.0
    loss.backward()
    for p in small_model.heads[task_name].parameters():
        assert p.grad is None or torch.count_nonzero(p.grad) == 0


# ---- predictions -> score --------------------------------------------------------------------

SPLITS = ("train", "val")


@pytest.fixture(scope="module")
def predictions(real_shards, small_model, tmp_path_factory) -> dict[str, Path]:
    """A random small model's predictions of the train and val splits of the real shards."""
    out = {}
    for split in SPLITS:
        loader = build_loader(
            real_shards, split=split, infinite=False, batch_size=4, image_size=SIZE, letterbox=True, workers=0
        )
        folder = tmp_path_factory.mktemp("preds") / split
        write_predictions(small_model, small_model.tasks, loader, real_shards, folder)
        out[split] = folder
    return out


def in_memory_metrics(model, shards: Path, split: str) -> dict:
    """The same evaluation without files: decode -> metric, truth from the shards."""
    shard_set = ShardSet.open(shards)
    tasks = tasks_for(shard_set, list_tasks())
    loader = build_loader(shards, split=split, infinite=False, batch_size=4, image_size=SIZE, letterbox=True, workers=0)
    metrics = {t: tasks[t].metric() for t in loader.tasks}
    with torch.no_grad():
        for batch in loader:
            outputs = model(batch["image"])
            keys = [k for k in batch["key"] if k]
            samples = {s.key: s for s in label_samples(shard_set, keys, loader.tasks)}
            for t in loader.tasks:
                for i, prediction in enumerate(tasks[t].decode(outputs[t], batch)):
                    key = batch["key"][i]
                    truth = tasks[t].ground_truth(samples[key]) if key else None
                    if truth is not None:
                        metrics[t].update(prediction, truth)
    return {t: m.compute() for t, m in metrics.items()}


#: (rel, abs) tolerance: the file formats are exact but for depth, stored in 1/256 m steps (the
#: KITTI depth format), which moves errors by ~1e-6 and may move a pixel across a delta threshold.
TOLERANCE = {"depth": (1e-5, 1e-3)}


def same(a, b, tolerance: tuple[float, float]) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tolerance) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == pytest.approx(b, rel=tolerance[0], abs=tolerance[1])


@pytest.mark.parametrize("split", SPLITS)
def test_written_predictions_score_exactly_as_the_metrics_in_memory(
    split, predictions, real_shards, small_model, manifest
):
    result = score(real_shards, split, predictions[split])
    labelled = {t for t in list_tasks() if manifest.filter((pl.col("split") == split) & pl.col(f"has_{t}")).height}
    assert result["split"] == split and labelled <= set(result["metrics"])
    expected = in_memory_metrics(small_model, real_shards, split)
    for task_name in labelled:
        tolerance = TOLERANCE.get(task_name, (1e-12, 1e-12))
        assert same(result["metrics"][task_name], expected[task_name], tolerance), (
            task_name,
            result["metrics"][task_name],
            expected[task_name],
        )
        headline = tasks_for(ShardSet.open(real_shards), [task_name])[task_name].metric_keys
        assert list(result["metrics"][task_name])[: len(headline)] == list(headline)


run_train = run_mtl_train


def run_score(capsys, *args) -> tuple[int, str, str]:
    """``mtl-train score ARGS`` (see ``run_train``)."""
    return run_train(capsys, "score", *args)


def test_the_score_command_prints_a_table_and_writes_the_json(predictions, real_shards, tmp_path, capsys):
    out = tmp_path / "scores.json"
    code, stdout, _ = run_score(
        capsys, real_shards, "--split", "train", "--predictions", predictions["train"], "--json", out
    )
    assert code == 0
    assert stdout.startswith("split train") and "seg" in stdout and "miou" in stdout
    written = json.loads(out.read_text())
    assert written["split"] == "train" and {"seg", "depth", "det2d", "det3d", "sign", "lane"} <= set(written["metrics"])
    code, stdout, _ = run_score(
        capsys, real_shards, "--split", "train", "--predictions", predictions["train"], "--json", "-", "--task", "sign"
    )
    assert code == 0 and list(json.loads(stdout)["metrics"]) == ["sign"]


def copy_predictions(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "preds"
    shutil.copytree(src, dst)
    return dst


def one_error_line(code: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_a_prediction_for_a_key_outside_the_split_is_refused(predictions, real_shards, tmp_path, capsys):
    preds = copy_predictions(predictions["train"], tmp_path)
    with (preds / "sign.csv").open("a") as f:
        f.write("gtsrb_test_00000,3\n")  # a test-split key
    line = one_error_line(*run_score(capsys, real_shards, "--split", "train", "--predictions", preds)[::2])
    assert "sign predictions for 1 key(s) not in split 'train'" in line and "gtsrb_test_00000" in line


def test_a_missing_dense_prediction_is_refused_naming_the_sample(predictions, real_shards, tmp_path, capsys):
    preds = copy_predictions(predictions["train"], tmp_path)
    victim = sorted((preds / "seg").glob("*.png"))[0]
    victim.unlink()
    line = one_error_line(*run_score(capsys, real_shards, "--split", "train", "--predictions", preds)[::2])
    assert "no seg prediction for 1 of the" in line and victim.stem in line


def test_a_seg_prediction_of_the_wrong_size_is_refused(predictions, real_shards, tmp_path, capsys):
    preds = copy_predictions(predictions["train"], tmp_path)
    victim = sorted((preds / "seg").glob("a2d2_*.png"))[0]
    import cv2

    assert cv2.imwrite(str(victim), np.zeros((10, 20), np.uint8))
    line = one_error_line(*run_score(capsys, real_shards, "--split", "train", "--predictions", preds)[::2])
    assert victim.stem in line and "seg" in line


def test_a_malformed_detection_file_is_one_line_naming_it(predictions, real_shards, tmp_path, capsys):
    preds = copy_predictions(predictions["train"], tmp_path)
    (preds / "det2d.json").write_text("{not json")
    line = one_error_line(*run_score(capsys, real_shards, "--split", "train", "--predictions", preds)[::2])
    assert "det2d.json" in line


def test_an_empty_folder_and_an_unknown_split_are_one_line_each(real_shards, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_error_line(*run_score(capsys, real_shards, "--split", "train", "--predictions", empty)[::2])
    assert "holds no predictions" in line
    line = one_error_line(*run_score(capsys, real_shards, "--split", "dev", "--predictions", empty)[::2])
    assert "no sample in split 'dev'" in line


def test_predictions_are_written_whole_or_not_at_all(real_shards, small_model, tmp_path):
    loader = build_loader(real_shards, split="val", infinite=False, batch_size=4, image_size=SIZE, workers=0)
    out = tmp_path / "p"
    write_predictions(small_model, small_model.tasks, loader, real_shards, out)
    assert out.is_dir() and not (tmp_path / "p.partial").exists()
    with pytest.raises(MtlDataError, match="exists"):
        write_predictions(small_model, small_model.tasks, loader, real_shards, out)


@pytest.fixture(scope="module")
def trained_run(real_shards, tmp_path_factory) -> Path:
    """A one-step run on the real shards (train: A2D2 seg, KITTI boxes; val: the Cityscapes frames)."""
    run = tmp_path_factory.mktemp("runs") / "run"
    try:
        mtl_train(
            [
                "--shards",
                str(real_shards),
                "--out",
                str(run),
                "--tasks",
                "seg,det2d,det3d",
                "--steps",
                "1",
                "--image-size",
                "64x128",
                "--batch-size",
                "2",
                "--workers",
                "0",
                "--set",
                "model_options.neck_channels=32",
            ]
        )
    except SystemExit as exc:  # pragma: no cover - shown by the tests using it
        assert not exc.code
    return run


def test_the_predict_command_writes_benchmark_files_and_pictures_that_score(trained_run, real_shards, tmp_path, capsys):
    out = tmp_path / "preds"
    code, stdout, err = run_train(capsys, "predict", trained_run, "--out", out)
    assert code == 0, err
    assert "seg 2, det2d 2, det3d 2 ->" in stdout
    import cv2

    pictures = sorted(out.glob("overlays/*.png"))
    assert [p.stem for p in pictures] == [
        "cityscapes_val_frankfurt_000000_000294",
        "cityscapes_val_lindau_000000_000019",
    ]
    assert all(cv2.imread(str(p)) is not None for p in pictures)
    code, stdout, err = run_train(capsys, "score", real_shards, "--split", "val", "--predictions", out)
    assert code == 0 and "det3d  ds" in stdout, err
    line = one_error_line(*run_train(capsys, "predict", trained_run, "--out", out)[::2])
    assert "exists" in line
    code, _, err = run_train(capsys, "predict", trained_run, "--out", out, "--overwrite", "--no-overlays")
    assert code == 0 and not (out / "overlays").exists(), err


def test_the_models_command_lists_models_tasks_and_weightings(capsys):
    code, stdout, _ = run_train(capsys, "models")
    assert code == 0
    assert "resnet18-fpn" in stdout and "seg, depth, det2d, det3d, steer, sign, lane" in stdout
    from mtl_data.train.weighting import list_weightings

    assert ", ".join(list_weightings()) in stdout and {"equal", "static", "gradnorm", "pcgrad"} <= set(
        list_weightings()
    )


def test_bad_predict_input_is_one_line_each(trained_run, tmp_path, capsys):
    line = one_error_line(*run_train(capsys, "predict", tmp_path, "--out", tmp_path / "p")[::2])
    assert "not a run folder" in line
    line = one_error_line(*run_train(capsys, "predict", trained_run, "--split", "dev", "--out", tmp_path / "p")[::2])
    assert "dev" in line
    assert not (tmp_path / "p").exists() and not (tmp_path / "p.partial").exists()


def test_a_weights_file_that_is_not_a_state_dict_is_one_line(real_shards, tmp_path, capsys):
    bad = tmp_path / "resnet18.pth"
    bad.write_bytes(b"not a torch file")
    code, _, err = run_train(
        capsys, "--shards", real_shards, "--out", tmp_path / "r", "--tasks", "seg", "--steps", "1", "--weights", bad
    )
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]  # training also logs its start-up
    assert code == 1 and len(lines) == 1 and "Traceback" not in err
    assert str(bad) in lines[0] and "weights_only" not in lines[0]
    assert not (tmp_path / "r").exists()

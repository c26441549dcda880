"""Multi-frame input (MultiNet++, ``train/models/multiframe.py``): frame t and its previous frames
through one shared encoder, fused per level, the neck and heads once; streaming prediction that
caches the previous frames' encoder maps; ``mtl-train --frames`` runs, resume, eval, and
``predict --video``. Tiny models on CPU (64x128 inputs)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest
import torch
from conftest import SMALL_RUN, run_mtl_train

from mtl_data.cli.mtl_train import main as mtl_train
from mtl_data.shards.reader import ShardSet
from mtl_data.train import checkpoint as ckpt
from mtl_data.train.config import FRAME_FUSIONS, TrainConfig
from mtl_data.train.data.loader import LoaderConfig
from mtl_data.train.models import MultiTaskModel, create_model, list_models
from mtl_data.train.models.multiframe import (
    FrameStream,
    MultiFrameModel,
    create_fusion,
    list_fusions,
    model_inputs,
    wrap_frames,
)
from mtl_data.train.optim import build_part_optimizers
from mtl_data.train.run import build_model, frames_note
from mtl_data.train.weighting import create_weighting

TASKS = ["seg", "depth", "det2d", "det3d", "steer", "lane"]
SIZE = (64, 128)


def tiny_model(name: str = "resnet18-fpn", tasks=TASKS) -> MultiTaskModel:
    torch.manual_seed(0)
    options = {"width": 8} if name == "tag-realtime" else {}  # tag-realtime's narrow test width
    return create_model(name, tasks=tasks, neck_channels=16, **options)


def flat(outputs: dict) -> dict[str, torch.Tensor]:
    """Every output tensor by ``task`` or ``task/name`` (det3d returns a dict of maps)."""
    out = {}
    for task, value in outputs.items():
        if isinstance(value, dict):
            out.update({f"{task}/{k}": v for k, v in value.items()})
        else:
            out[task] = value
    return out


def assert_outputs_close(a: dict, b: dict, rtol: float = 1e-4, atol: float = 1e-4) -> None:
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for key in fa:
        torch.testing.assert_close(fa[key], fb[key], rtol=rtol, atol=atol, msg=lambda m, k=key: f"{k}: {m}")


def frames(n: int, batch: int = 1, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, *SIZE, generator=g) for _ in range(n)]


# ---- the model --------------------------------------------------------------------------------


def test_the_fusions_registry_is_the_configs_choice_list():
    assert tuple(list_fusions()) == tuple(sorted(FRAME_FUSIONS))


@pytest.mark.parametrize("fusion", list_fusions())
@pytest.mark.parametrize("name", list_models())
def test_every_model_and_fusion_keeps_the_models_parameter_names_and_parts_cover_each_parameter_once(name, fusion):
    model = tiny_model(name)
    single = set(model.state_dict())
    wrapped = MultiFrameModel(model, 2, fusion)
    keys = set(wrapped.state_dict())
    assert single <= keys  # encoder., neck., heads. as the single-frame model: its checkpoints load
    assert {k for k in keys - single} == {k for k in keys if k.startswith("fusion.")}
    assert (keys == single) is (fusion == "sum")  # the sum adds no parameter
    in_parts = [id(p) for part in wrapped.parts().values() for p in part.parameters()]
    assert len(in_parts) == len(set(in_parts)) == len(list(wrapped.parameters()))
    assert set(wrapped.parts()) == set(model.parts())  # the fusion joins the neck part
    fusion_ids = {id(p) for p in wrapped.fusion.parameters()}
    assert fusion_ids <= {id(p) for p in wrapped.parts()["neck"].parameters()}


@pytest.mark.parametrize("name", list_models())
def test_a_single_frame_checkpoint_loads_strictly_into_the_sum_model_and_predicts_the_same_from_one_frame(name):
    model = tiny_model(name).eval()
    other = MultiFrameModel(tiny_model(name), 2, "sum").eval()
    torch.manual_seed(1)
    for p in model.parameters():  # weights unlike the copy's initialisation
        p.data.normal_(0, 0.05)
    other.load_state_dict(model.state_dict(), strict=True)
    (x,) = frames(1)
    with torch.no_grad():
        # with no previous frame the sum model computes t + t: the single-frame maps, doubled
        doubled = model.forward_encoded([2 * m for m in model.encoder(x)], SIZE)
        assert_outputs_close(other(x), doubled, rtol=1e-5, atol=1e-5)


def test_conv1x1_starts_as_the_sum():
    model = tiny_model()
    summed, conv = MultiFrameModel(model, 3, "sum").eval(), MultiFrameModel(model, 3, "conv1x1").eval()
    x, p1, p2 = frames(3, batch=2)
    prev = torch.stack([p1, p2], dim=1)  # (B, 2, 3, H, W)
    present = torch.tensor([[True, True], [True, False]])
    with torch.no_grad():
        assert_outputs_close(conv(x, prev, present), summed(x, prev, present), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fusion", list_fusions())
@pytest.mark.parametrize("name", ["resnet18-fpn", "resnet18-bifpn", "tag-realtime"])
def test_streaming_prediction_equals_the_two_frame_model_on_the_same_pair(name, fusion):
    model = MultiFrameModel(tiny_model(name), 2, fusion).eval()
    a, b, c = frames(3)
    stream = FrameStream(model)
    with torch.no_grad():
        first, second, third = stream(a), stream(b), stream(c)
        # the first frame has no previous one: absent, frame t stands in (the training rule)
        assert_outputs_close(first, model(a, torch.zeros(1, 1, 3, *SIZE), torch.tensor([[False]])))
        assert_outputs_close(second, model(b, a[:, None], torch.tensor([[True]])))
        assert_outputs_close(third, model(c, b[:, None], torch.tensor([[True]])))


def test_streaming_three_frames_caches_the_last_two_in_order():
    model = MultiFrameModel(tiny_model(), 3, "conv1x1").eval()
    a, b, c, d = frames(4)
    stream = FrameStream(model)
    with torch.no_grad():
        outs = [stream(x) for x in (a, b, c, d)]
        expect_b = model(b, torch.stack([a, a], 1), torch.tensor([[True, False]]))
        expect_d = model(d, torch.stack([c, b], 1), torch.tensor([[True, True]]))
    assert_outputs_close(outs[1], expect_b)
    assert_outputs_close(outs[3], expect_d)
    stream.reset()
    with torch.no_grad():
        assert_outputs_close(stream(d), model(d))  # a new stream: no previous frame


@pytest.mark.parametrize("fusion", list_fusions())
def test_an_absent_previous_frame_is_frame_t_whatever_the_loader_filled_in(fusion):
    model = MultiFrameModel(tiny_model(), 2, fusion).eval()
    x, junk = frames(2, batch=2)
    absent = torch.tensor([[False], [True]])
    with torch.no_grad():
        zeros = model(x, torch.zeros(2, 1, 3, *SIZE), absent)
        garbage = model(x, junk[:, None], absent)
        as_t = model(x, x[:, None], torch.tensor([[True], [True]]))
        nothing = model(x)
    # sample 0 lacks t-1: bit for bit the same whatever image_prev holds there, and t's maps
    for key, value in flat(zeros).items():
        assert torch.equal(value[0], flat(garbage)[key][0]), key
        torch.testing.assert_close(value[0], flat(as_t)[key][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(value[0], flat(nothing)[key][0], rtol=1e-4, atol=1e-4)


def test_in_training_absent_frames_do_not_reach_batchnorm_as_zero_images():
    """BatchNorm's batch statistics see frame t where t-1 is absent, not the loader's black fill."""
    model = MultiFrameModel(tiny_model(tasks=["seg"]), 2, "sum").train()
    x, _ = frames(2, batch=2)
    absent = torch.zeros(2, 1, dtype=torch.bool)
    a = model(x, torch.zeros(2, 1, 3, *SIZE), absent)["seg"]
    b = model(x, torch.full((2, 1, 3, *SIZE), 7.0), absent)["seg"]
    assert torch.equal(a, b)


def test_the_graph_is_the_same_whatever_frames_are_present():
    """The same parameters get a gradient on every step, absent frames or not (DDP's static graph;
    FPN's stride 8 and 16 outputs, which seg and steer do not read, never do)."""
    model = MultiFrameModel(tiny_model(tasks=["seg", "steer"]), 2, "conv1x1").train()
    x, p = frames(2, batch=2)
    used = []
    for present in ([[False], [False]], [[True], [False]], [[True], [True]]):
        model.zero_grad(set_to_none=True)
        out = model(x, p[:, None], torch.tensor(present))
        (out["seg"].mean() + out["steer"].mean()).backward()
        used.append({n for n, q in model.named_parameters() if q.grad is not None})
    assert used[0] == used[1] == used[2]
    assert {n for n, _ in model.named_parameters() if n.startswith(("encoder.", "fusion."))} <= used[0]


def test_image_prev_of_the_wrong_shape_is_one_clear_error():
    model = MultiFrameModel(tiny_model(tasks=["seg"]), 3, "sum")
    x, p = frames(2)
    with pytest.raises(Exception, match=r"image_prev must be \(B, N, 3, H, W\) = \(1, 2, 3, 64, 128\)"):
        model(x, p[:, None])


def test_the_models_command_lists_the_fusions(capsys):
    code, stdout, _ = run_mtl_train(capsys, "models")
    assert code == 0 and "fusions:    conv1x1, sum (frame_fusion, with --frames > 1)" in stdout


def test_unknown_fusion_and_one_frame_are_refused():
    with pytest.raises(Exception, match="unknown frame fusion 'max'; choose from conv1x1, sum"):
        create_fusion("max", (8,), 2)
    with pytest.raises(Exception, match="2 or more frames"):
        MultiFrameModel(tiny_model(tasks=["seg"]), 1)


# ---- single-frame models and batches are unchanged ------------------------------------------------


def test_one_frame_builds_the_plain_model_and_a_plain_batch_gives_the_image_alone():
    model = tiny_model(tasks=["seg"])
    assert wrap_frames(model, 1, "conv1x1") is model
    config = TrainConfig(shards="s", out="o", tasks=("seg",), model_options={"neck_channels": 16})
    assert type(build_model(config, ("seg",), {})) is MultiTaskModel
    two = TrainConfig(shards="s", out="o", tasks=("seg",), loader=LoaderConfig(frames=2), frame_fusion="conv1x1")
    built = build_model(two, ("seg",), {})
    assert isinstance(built, MultiFrameModel) and built.frames == 2 and built.fusion_name == "conv1x1"
    image = torch.zeros(2, 3, *SIZE)
    assert model_inputs({"image": image, "key": ["a", "b"]}) == (image,)
    prev, present = torch.zeros(2, 1, 3, *SIZE), torch.ones(2, 1, dtype=torch.bool)
    args = model_inputs({"image": image, "image_prev": prev, "prev_present": present})
    assert args[0] is image and args[1] is prev and args[2] is present


def test_the_single_frame_forward_is_encoder_then_forward_encoded_bit_for_bit():
    model = tiny_model().eval()
    (x,) = frames(1)
    with torch.no_grad():
        a = model(x)
        b = model.forward_encoded(model.encoder(x), SIZE)
    for key, value in flat(a).items():
        assert torch.equal(value, flat(b)[key]), key


def test_asymmetric_parts_hold_the_fusion_with_the_shared_part():
    model = MultiFrameModel(tiny_model(tasks=["seg", "steer"]), 2, "conv1x1")
    weighting = create_weighting("equal", ["seg", "steer"])
    config = TrainConfig(shards="s", out="o")
    _, params = build_part_optimizers(model, weighting, config.optim, config.schedule, 10, {}, 4, ["seg", "steer"])
    shared = {id(p) for p in params["encoder"]}
    assert {id(p) for p in model.fusion.parameters()} <= shared
    every = [id(p) for group in params.values() for p in group]
    assert sorted(every) == sorted(id(p) for p in model.parameters())


# ---- runs ------------------------------------------------------------------------------------------

FRAMES_RUN = ["--tasks", "seg,depth,det2d", "--frames", "2", "--log-every", "1", "--save-every", "2", *SMALL_RUN]


def mtl_train_ok(args) -> None:
    try:
        mtl_train([str(a) for a in args])
    except SystemExit as exc:
        assert not exc.code


def parameters(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load(run / "checkpoints" / "last.pt")["model"]


@pytest.fixture(scope="module")
def two_frame_run(synth_shards_frames, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("frames") / "run"
    mtl_train_ok(["--shards", synth_shards_frames, "--out", run, "--steps", "4", *FRAMES_RUN])
    return run


def test_the_runs_shards_hold_samples_with_and_without_a_previous_frame(synth_shards_frames):
    """So the runs below train and evaluate on present and absent t-1 alike."""
    rows = ShardSet.open(synth_shards_frames).manifest.filter(pl.col("has_seg"))
    for split in ("train", "val"):
        counts = rows.filter(pl.col("split") == split)["prev_frames"].to_list()
        assert min(counts) == 0 and max(counts) >= 1, (split, counts)


def test_a_two_frame_run_trains_evaluates_and_records_its_frames(two_frame_run):
    run = two_frame_run
    state = ckpt.load(run / "checkpoints" / "last.pt")
    assert state["config"]["loader"]["frames"] == 2 and state["config"]["frame_fusion"] == "sum"
    assert "frames = 2" in (run / "config.toml").read_text()
    with (run / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    doc = json.loads((run / "eval.json").read_text())
    assert doc["step"] == 4 and {"seg", "depth", "det2d"} <= set(doc["metrics"])


def test_a_two_frame_run_resumes_exactly(two_frame_run, synth_shards_frames, tmp_path):
    run = tmp_path / "run"
    mtl_train_ok(["--shards", synth_shards_frames, "--out", run, "--steps", "4", "--stop-at", "2", *FRAMES_RUN])
    mtl_train_ok(["--resume", run])
    a, b = parameters(two_frame_run), parameters(run)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_eval_and_predict_of_a_two_frame_run_use_its_frames(two_frame_run, tmp_path, capsys):
    trained = json.loads((two_frame_run / "eval.json").read_text())
    code, out, err = run_mtl_train(capsys, "eval", two_frame_run, "--split", "val", "--device", "cpu")
    assert code == 0, err
    # the same pass with the same frames: the metrics of training's final evaluation
    again = json.loads((two_frame_run / "eval.json").read_text())
    assert again["split"] == trained["split"] == "val" and again["metrics"] == trained["metrics"]
    code, out, err = run_mtl_train(capsys, "predict", two_frame_run, "--out", tmp_path / "preds", "--no-overlays")
    assert code == 0, err
    assert list((tmp_path / "preds" / "seg").glob("*.png")) and (tmp_path / "preds" / "det2d.json").is_file()


def test_conv1x1_fusion_of_three_frames_trains_and_is_in_the_checkpoint(synth_shards_frames, tmp_path):
    run = tmp_path / "run"
    args = ["--tasks", "seg", "--frames", "3", "--set", "frame_fusion=conv1x1", "--lr", "0.01", *SMALL_RUN]
    mtl_train_ok(["--shards", synth_shards_frames, "--out", run, "--steps", "2", *args])
    state = parameters(run)
    weights = {k: v for k, v in state.items() if k.startswith("fusion.convs.") and k.endswith(".weight")}
    assert len(weights) == 4  # one per ResNet level
    for key, weight in weights.items():
        c = weight.shape[0]
        start = torch.eye(c).reshape(c, c, 1, 1).repeat(1, 3, 1, 1)  # [I, I, I]: the sum of 3 frames
        assert weight.shape == start.shape and not torch.equal(weight, start), key  # it moved: it trains


# ---- predict --video --------------------------------------------------------------------------------


def write_frames(folder: Path, n: int, size=(48, 100)) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"frame_{i:03d}.png"), image)
    (folder / "notes.txt").write_text("not a frame")
    return folder


def test_predict_video_on_a_folder_of_frames_writes_every_frames_predictions(two_frame_run, tmp_path, capsys):
    frames_dir = write_frames(tmp_path / "clip", 3)
    out = tmp_path / "video_preds"
    code, stdout, err = run_mtl_train(capsys, "predict", two_frame_run, "--video", frames_dir, "--out", out)
    assert code == 0, err
    keys = [f"video_frames_frame_{i:03d}" for i in range(3)]
    assert sorted(p.stem for p in (out / "overlays").glob("*.png")) == keys
    assert sorted(p.stem for p in (out / "seg").glob("*.png")) == keys
    for key in keys:
        seg = cv2.imread(str(out / "seg" / f"{key}.png"), cv2.IMREAD_UNCHANGED)
        depth = cv2.imread(str(out / "depth" / f"{key}.png"), cv2.IMREAD_UNCHANGED)
        assert seg.shape == (48, 100) and depth.shape == (48, 100) and depth.dtype == np.uint16
    assert "seg 3" in stdout and not (tmp_path / "video_preds.partial").exists()


def test_predict_video_streams_the_run_and_equals_the_two_frame_model(two_frame_run, tmp_path):
    """The folder's frames give the seg maps of the batched two-frame model on each (t-1, t) pair."""
    from mtl_data.train.run import load_run
    from mtl_data.train.tasks.base import view_of
    from mtl_data.train.video import frame_batch, read_frames, write_video_predictions

    config, model, _ = load_run(two_frame_run)
    frames_dir = write_frames(tmp_path / "clip", 3)
    out = tmp_path / "preds"
    write_video_predictions(model, read_frames(frames_dir), out, image_size=(64, 128), letterbox=False)
    batches = [frame_batch(f"video_frames_{i}", image, (64, 128), False)[0] for i, image in read_frames(frames_dir)]
    model.eval()
    for i, batch in enumerate(batches):
        prev = batches[i - 1]["image"][:, None] if i else torch.zeros(1, 1, 3, 64, 128)
        with torch.no_grad():
            logits = model(batch["image"], prev, torch.tensor([[i > 0]]))["seg"]
        expect = model.tasks["seg"].decode(logits, batch)[0]
        got = cv2.imread(str(out / "seg" / f"video_frames_frame_{i:03d}.png"), cv2.IMREAD_UNCHANGED)
        assert view_of(batch, 0).placement.src_size == got.shape
        assert (got == expect).mean() > 0.999  # argmax ties aside, the same labels


def test_predict_video_reads_a_video_file(two_frame_run, tmp_path, capsys):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 48))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for i in range(4):
        writer.write(np.full((48, 96, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "preds"
    code, _, err = run_mtl_train(capsys, "predict", two_frame_run, "--video", path, "--out", out, "--no-overlays")
    assert code == 0, err
    assert sorted(p.stem for p in (out / "seg").glob("*.png")) == [f"video_frames_{i:06d}" for i in range(4)]


def test_predict_video_bad_input_is_one_line(two_frame_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_mtl_train(capsys, "predict", two_frame_run, "--video", empty, "--out", tmp_path / "p")
    assert code != 0 and "no frames in it" in err and "Traceback" not in err
    assert not (tmp_path / "p").exists() and not (tmp_path / "p.partial").exists()
    code, _, err = run_mtl_train(
        capsys, "predict", two_frame_run, "--video", empty, "--split", "val", "--out", tmp_path / "p"
    )
    assert code != 0 and "leave out --split" in err
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    code, _, err = run_mtl_train(capsys, "predict", two_frame_run, "--video", junk, "--out", tmp_path / "p")
    assert code != 0 and "not a video OpenCV can open" in err and "Traceback" not in err


def test_a_two_frame_run_on_shards_without_previous_frames_says_so(synth_shards, tmp_path):
    config = TrainConfig(shards=str(synth_shards), out="o", loader=LoaderConfig(frames=2))
    note = frames_note(config, ShardSet.open(synth_shards))
    assert note.startswith("2 frames: 0 of ") and "ingest with mtl-data ingest --prev-frames 1" in note
    assert frames_note(TrainConfig(shards=str(synth_shards), out="o"), ShardSet.open(synth_shards)) is None


def test_a_single_frame_run_predicts_a_video_frame_by_frame(synth_shards, tmp_path, capsys):
    run = tmp_path / "run"
    mtl_train_ok(["--shards", synth_shards, "--out", run, "--steps", "1", "--tasks", "seg", *SMALL_RUN])
    out = tmp_path / "preds"
    code, _, err = run_mtl_train(capsys, "predict", run, "--video", write_frames(tmp_path / "c", 2), "--out", out)
    assert code == 0, err
    assert len(list((out / "seg").glob("*.png"))) == 2


def test_a_two_process_gloo_run_of_two_frames_keeps_the_ranks_equal_and_evaluates_exactly(
    synth_shards_frames, tmp_path, capsys
):
    """DDP with static_graph over the conv1x1 two-frame model: seg samples with and without t-1,
    sign crops (GTSRB: never a previous frame) in the same batches; the loop checks that the ranks
    end with the same parameters, and the 2-rank evaluation equals a single-process one."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
        str(Path(sys.executable).parent / "mtl-train"),
        *("--shards", synth_shards_frames, "--out", run, "--tasks", "seg,sign", "--steps", "3", "--device", "cpu"),
        *("--frames", "2", "--set", "frame_fusion=conv1x1", *SMALL_RUN),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "resnet18-fpn x 2 frames (conv1x1)" in result.stderr  # the start-up line names them
    assert re.search(r"2 frames: [1-9]\d* of \d+ train samples carry 1 previous frame", result.stderr)
    distributed = json.loads((run / "eval.json").read_text())["metrics"]
    code, _, err = run_mtl_train(capsys, "eval", run, "--device", "cpu")
    assert code == 0, err
    assert json.loads((run / "eval.json").read_text())["metrics"] == distributed

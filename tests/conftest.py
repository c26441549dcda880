"""Shared test helpers: the real fixtures, synthetic raw data, and an in-process CLI runner."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtl_data.cli.main import main
from mtl_data.shards.codec import LABEL_PNG_PARAMS
from mtl_data.shards.depthpoints import decode_depth_points
from mtl_data.shards.tario import TarShardWriter, iter_tar_samples
from mtl_data.synth import SYNTHESIZERS

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("MTL_FIXTURES", REPO.parent / "shared" / "fixtures"))


def fixture_path(*parts: str) -> Path:
    """A path inside the real fixtures; the test FAILS (never skips) when it is missing."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"real fixture {path} is missing: set MTL_FIXTURES to the shared fixtures folder")
    return path


#: the real Cityscapes-3D box annotation and the camera json quoted from public code (PROVENANCE.md).
BOX_SAMPLE = ("cityscapes", "gtBbox3d_sample", "cityscapesScripts_docs_sample_gtBbox3d.json")
CAMERA_SAMPLE = ("cityscapes", "camera_sample", "quoted_camera.json")


def cityscapes_image(path: Path) -> Path:
    """A 2048x1024 leftImg8bit-sized PNG at ``path`` (imgWidth x imgHeight of the real gtBbox3d sample)."""
    rows, cols = np.indices((1024, 2048))
    image = np.stack([rows % 256, cols % 256, (rows + cols) % 256], axis=-1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return path


def box_sample_root(root: Path, big_image: Path, with_camera: bool) -> Path:
    """A Cityscapes root of one val frame: ``big_image`` with the real gtBbox3d sample (and the
    camera json when ``with_camera``)."""
    frame = "lindau_000000_000019"
    files = {
        f"leftImg8bit/val/lindau/{frame}_leftImg8bit.png": big_image,
        f"gtBbox3d/val/lindau/{frame}_gtBbox3d.json": fixture_path(*BOX_SAMPLE),
    }
    if with_camera:
        files[f"camera/val/lindau/{frame}_camera.json"] = fixture_path(*CAMERA_SAMPLE)
    for rel, src in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / rel)
    return root


def read_manifest(out: Path, source: str) -> list[dict]:
    """The manifest rows of ``out/<source>``."""
    return pq.read_table(out / source / "manifest.parquet").to_pylist()


def read_rejects(out: Path, source: str) -> list[dict]:
    """The ``rejects.jsonl`` records of ``out/<source>``."""
    text = (out / source / "rejects.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_report(out: Path, source: str) -> dict:
    """The ``ingest.json`` report of ``out/<source>``."""
    return json.loads((out / source / "ingest.json").read_text())


def rewrite_as_schema_1(root: Path) -> Path:
    """Turn the shards under ``root`` into schema 1 shards in place, as the tool wrote them before
    ``depth.pts``: each ``depth.pts`` becomes the ``depth.png`` of the same map at its place
    (written with ``codec.LABEL_PNG_PARAMS``, as the schema 1 codec did), each ``meta.json`` says
    ``"schema":1``; the shards are written by the ingest's own tar writer, and the manifests'
    offsets and ``ingest.json``'s shard sizes follow. Returns ``root``."""
    for manifest in sorted(root.glob("*/manifest.parquet")):
        folder = manifest.parent
        offsets: dict[str, int] = {}
        for shard in sorted(folder.glob("*.tar")):
            samples = list(iter_tar_samples(shard))
            writer = TarShardWriter(shard.with_suffix(".part"), shard)
            for key, members in samples:
                old = []
                for ext, data in members.items():
                    if ext == "depth.pts":
                        png = cv2.imencode(".png", decode_depth_points(data).to_map(), LABEL_PNG_PARAMS)[1]
                        ext, data = "depth.png", png.tobytes()
                    elif ext == "meta.json":
                        assert data.startswith(b'{"schema":2,'), data[:20]
                        data = b'{"schema":1,' + data[len(b'{"schema":2,') :]
                    old.append((ext, data))
                offsets[key] = writer.add(key, old)[1]
            writer.commit()
        table = pq.read_table(manifest)
        offset = pa.array([offsets[k] for k in table["key"].to_pylist()], pa.int64())
        pq.write_table(table.set_column(table.schema.get_field_index("offset"), "offset", offset), manifest)
        report = json.loads((folder / "ingest.json").read_text())
        report["shard_bytes"] = {name: (folder / name).stat().st_size for name in report["shard_bytes"]}
        (folder / "ingest.json").write_text(json.dumps(report))
    return root


def file_and_line(path: Path | str, line: int | None = None) -> str:
    """``path``, or ``path:line`` where there is a line: how an error line names the bad place."""
    return f"{path}" + ("" if line is None else f":{line}")


def ingest_cli(cli, source: str, root: Path, out: Path, *extra, workers: int = 1) -> CliResult:
    """``mtl-data ingest SOURCE ROOT --to OUT --workers WORKERS EXTRA...`` through the ``cli`` fixture."""
    return cli("ingest", source, root, "--to", out, "--workers", workers, *extra)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a source folder that must be reproducible (ingest.json has a timestamp)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != "ingest.json"}


def raw_with_a_bad_frame(synth_root, tmp_path: Path, source: str) -> Path:
    """A copy of the synthetic ``source`` root with one frame that is rejected under skip."""
    raw = tmp_path / f"{source}_raw"
    shutil.copytree(synth_root(source), raw)
    if source == "kitti":
        (raw / "training" / "velodyne" / "000001.bin").write_bytes(b"\0" * 17)  # truncated scan
    else:
        (raw / "GTSRB" / "Final_Test" / "Images" / "00002.ppm").write_bytes(b"this is not a ppm at all\n" * 50)
    return raw


def ingest_corrupted(
    cli, source: str, corrupt: Callable[[Path], None], root: Path, tmp_path: Path, *extra, workers: int = 1
) -> tuple[CliResult, Path]:
    """Corrupt ``root`` in place by ``corrupt(root)``, then ingest it into ``tmp_path/shards`` (see
    ``ingest_cli``); returns the result and that output folder."""
    corrupt(root)
    out = tmp_path / "shards"
    return ingest_cli(cli, source, root, out, *extra, workers=workers), out


@dataclass(frozen=True)
class FrameCorruption:
    """A corruption of one frame of a writable raw root, and what the error must say."""

    apply: Callable[[Path], None]
    bad_id: str  # the bad frame
    rel: str  # the bad file, relative to the raw root
    line: int | None  # its line number, where there is one
    says: tuple[str, ...]  # substrings of the error line besides ``rel[:line]``


def assert_nothing_half_written(out: Path, source: str) -> None:
    """After a failed first run: no temporary visible outside ``.ingest/`` and no manifest."""
    visible_parts = [p for p in out.rglob("*.part") if ".ingest" not in p.relative_to(out).parts]
    assert visible_parts == []
    assert not (out / source / "manifest.parquet").exists()


def assert_error_line(result: CliResult, *fragments: str) -> str:
    """The command failed with one ``error: ...`` line (no traceback) that holds every fragment; returns it."""
    line = result.one_error_line()
    for text in fragments:
        assert text in line, text
    return line


def assert_fails_cleanly(result: CliResult, out: Path, source: str, *fragments: str) -> str:
    """A run under ``--on-error fail`` that hit bad input: one ``error:`` line holding every fragment
    (see ``assert_error_line``) and nothing half-written in ``out`` (see
    ``assert_nothing_half_written``); returns the error line."""
    line = assert_error_line(result, *fragments)
    assert_nothing_half_written(out, source)
    return line


def assert_fails_before_writing(result: CliResult, out: Path, source: str, *fragments: str) -> str:
    """A run refused before any frame was read (bad option or bad layout): one ``error:`` line holding
    every fragment (see ``assert_error_line``) and no ``out/<source>`` folder at all; returns the line."""
    line = assert_error_line(result, *fragments)
    assert not (out / source).exists()
    return line


def assert_skipped_cleanly(
    result: CliResult,
    out: Path,
    source: str,
    *,
    split: str,
    frame_id: str,
    path_suffix: str,
    line: int | None,
    expected_keys,
    column: str = "key",
    error_says: tuple[str, ...] = (),
) -> tuple[dict, list[dict]]:
    """A run under ``--on-error skip`` with one bad frame: exit 0 and no traceback; exactly one record
    in ``rejects.jsonl``, with this ``split`` and ``frame_id``, a path ending with ``path_suffix``,
    this ``line`` and a non-empty error that holds every fragment of ``error_says``; the manifest's
    ``column`` values, sorted, are ``expected_keys`` sorted (the other frames); no ``*.part`` file
    left anywhere in ``out`` and no ``.ingest/`` state left. Returns the reject and the manifest rows."""
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    [reject] = read_rejects(out, source)
    assert (reject["split"], reject["id"]) == (split, frame_id)
    assert Path(reject["path"]).as_posix().endswith(path_suffix)
    assert reject["line"] == line
    assert reject["error"]
    for text in error_says:
        assert text in reject["error"], text
    rows = read_manifest(out, source)
    assert sorted(r[column] for r in rows) == sorted(expected_keys)
    assert list(out.rglob("*.part")) == []
    assert not (out / source / ".ingest").exists()
    return reject, rows


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


@pytest.fixture(scope="session")
def synth_shards(synth_root, tmp_path_factory) -> Path:
    """One shards root with every synthetic source ingested (read-only, shared).

    Three samples per shard (so a split has several shards) and a grouped val split of 0.34
    everywhere but Cityscapes, whose native layout has its own val split.
    """
    return _ingest_every_source(synth_root, tmp_path_factory.mktemp("synth_shards"))


@pytest.fixture(scope="session")
def synth_shards_frames(synth_root, tmp_path_factory) -> Path:
    """``synth_shards`` ingested with ``--prev-frames 2``: KITTI, Cityscapes and TuSimple samples
    carry up to two previous frames (some none), A2D2 and GTSRB none (read-only, shared)."""
    return _ingest_every_source(synth_root, tmp_path_factory.mktemp("synth_shards_frames"), "--prev-frames", "2")


def _ingest_every_source(synth_root, out: Path, *extra: str) -> Path:
    for source in sorted(SYNTHESIZERS):
        val = [] if source == "cityscapes" else ["--val-fraction", "0.34"]
        args = ["ingest", source, str(synth_root(source)), "--to", str(out), "--workers", "1", "--shard-size", "3"]
        try:
            main([*args, *val, *extra])
        except SystemExit as exc:  # pragma: no cover - a failed ingest is a broken fixture
            assert not exc.code, f"ingest {source} failed"
    return out


@pytest.fixture(scope="session")
def synth_shards_v1(synth_shards, tmp_path_factory) -> Path:
    """``synth_shards`` as schema 1 shards (``depth.png``; see ``rewrite_as_schema_1``), read-only, shared."""
    out = tmp_path_factory.mktemp("synth_shards_v1") / "shards"
    shutil.copytree(synth_shards, out)
    return rewrite_as_schema_1(out)


@pytest.fixture(scope="session")
def big_image(tmp_path_factory) -> Path:
    """``cityscapes_image`` in a session folder (read-only)."""
    return cityscapes_image(tmp_path_factory.mktemp("cityscapes_big") / "image.png")


@pytest.fixture(scope="session")
def real_shards(tmp_path_factory, big_image) -> Path:
    """One shards root with the real fixtures of all five sources (read-only, shared).

    a2d2/train: the real semantic frame (seg); kitti/train: two real frames (depth, det2d,
    det3d); gtsrb: the official-layout crops (sign); tusimple/train: the real frame (lane);
    cityscapes/val: the real downscaled frame (seg) and the real gtBbox3d sample on a generated
    2048x1024 image (det2d, det3d with full rotation, K from the camera json).
    """
    out = tmp_path_factory.mktemp("real_shards")
    city = tmp_path_factory.mktemp("real_cityscapes")
    shutil.copytree(fixture_path("cityscapes", "mmseg_pseudo"), city, dirs_exist_ok=True)
    box_sample_root(city, big_image, with_camera=True)
    roots = {
        "a2d2": fixture_path("a2d2"),
        "kitti": fixture_path("kitti", "object"),
        "gtsrb": fixture_path("gtsrb", "official"),
        "tusimple": fixture_path("tusimple"),
        "cityscapes": city,
    }
    # the A2D2 fixture's bbox frame has no camera image (an error): its semantic part alone
    extra = {"a2d2": ["--parts", "camera_lidar_semantic"]}
    for source, root in roots.items():
        try:
            main(["ingest", source, str(root), "--to", str(out), "--workers", "1", *extra.get(source, [])])
        except SystemExit as exc:  # pragma: no cover - a failed ingest is a broken fixture
            assert not exc.code, f"ingest {source} failed"
    return out


def batch_of_samples(
    samples: list,
    image_size: tuple[int, int] = (64, 128),
    letterbox: bool = False,
    tasks: tuple[str, ...] | None = None,
    flip: bool = False,
    **target_options,
) -> dict:
    """The loader's batch (the contract, ``targets.collate``) of in-memory stored ``samples``, in
    that order (None = a dummy slot), resized (or letterboxed) to ``image_size`` without
    augmentation; with ``flip`` every sample that can be mirrored is (the loader's augmentation
    with flip_p = 1 and no photometric jitter). ``target_options`` are ``TargetConfig`` fields
    (grid, anchors, num_classes ...)."""
    from mtl_data.schema.sample import TASKS
    from mtl_data.train.data.targets import TargetConfig, collate, encode_example
    from mtl_data.train.data.transforms import TransformConfig, transform_view

    transform = TransformConfig(tuple(image_size), letterbox=letterbox, augment=flip, flip_p=1.0, jitter=0.0)
    config = TargetConfig(tasks or TASKS, tuple(image_size), **target_options)
    rng = np.random.default_rng(0)
    examples = []
    for sample in samples:
        if sample is None:
            examples.append(encode_example(None, config))
            continue
        out, view = transform_view(sample, transform, rng)
        examples.append(encode_example(out, config, view=view))
    return collate(examples)


def batch_from_shards(
    root: Path,
    keys: list[str],
    image_size: tuple[int, int] = (64, 128),
    letterbox: bool = False,
    tasks: tuple[str, ...] | None = None,
    flip: bool = False,
    **target_options,
) -> dict:
    """``batch_of_samples`` of the samples ``keys`` of a shards root, in that order; any split."""
    from mtl_data.shards.reader import ShardSet

    shards = ShardSet.open(root)
    return batch_of_samples(
        [shards.read_sample(key) for key in keys], image_size, letterbox, tasks, flip, **target_options
    )


def random_features(
    batch: dict, channels: int = 8, seed: int = 0, strides: tuple[int, ...] = (4, 8, 16, 32)
) -> list[torch.Tensor]:
    """Random neck outputs for ``batch``'s images (N(0, 1), from a generator seeded with ``seed``):
    one (B, channels, H / s, W / s) map per stride ``s``, each a leaf that records its gradient."""
    import torch

    g = torch.Generator().manual_seed(seed)
    b, _, h, w = batch["image"].shape
    return [torch.randn(b, channels, h // s, w // s, generator=g).requires_grad_() for s in strides]


def assert_absent_task_gives_zero_loss_and_gradient(task, head, batch: dict, channels: int = 8) -> list[torch.Tensor]:
    """On a batch where no sample labels ``task``: ``task.batch_loss`` of ``head`` on
    ``random_features(batch, channels)`` is exactly 0 and every head parameter gets a gradient of
    zeros. Returns the features, whose gradients a test may check too."""
    import torch

    assert not batch["present"][task.name].any()
    features = random_features(batch, channels)
    loss = task.batch_loss(head(features, tuple(batch["image"].shape[-2:])), batch)
    assert loss.item() == 0.0
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0, name
    return features


def det2d_perfect_output(batch: dict, logit: float = 20.0) -> torch.Tensor:
    """The raw det2d (YOLO) output whose decoding is the batch's grid target: logit offsets, sqrt
    sizes, confident objectness and class on object slots, confident "no object" elsewhere."""
    import torch

    target = batch["det2d"].double()  # (B, S, S, A, 5 + C)
    mask = batch["det2d_mask"]  # (B, S, S, A)
    out = torch.empty_like(target)
    offsets = target[..., 0:2].clamp(1e-9, 1 - 1e-9)
    out[..., 0:2] = torch.log(offsets / (1 - offsets))
    out[..., 2:4] = target[..., 2:4].sqrt()
    out[..., 4] = torch.where(mask, logit, -logit)
    out[..., 5:] = target[..., 5:] * logit
    return out.float()


def det3d_perfect_output(task, batch: dict) -> dict[str, torch.Tensor]:
    """det3d head outputs that hold exactly the batch's targets: logit(heatmap) and the regressions
    at the box centres, on the ``task.config.stride`` map of the batch's images."""
    import torch

    h, w = batch["image"].shape[-2:]
    fh, fw = h // task.config.stride, w // task.config.stride
    t = task.targets(batch, (fh, fw))
    out = {"heatmap": torch.logit(t.heatmap.clamp(1e-12, 1 - 1e-7)).clamp(min=-30)}
    for name in ("offset", "depth", "size", "orientation", "pitch_roll"):
        target = getattr(t, name)  # (B, M, k)
        b, m, k = target.shape
        maps = torch.zeros(b, k, fh * fw)
        maps.scatter_(2, t.index[:, None, :].expand(b, k, m), (target * t.valid[..., None]).transpose(1, 2))
        out[name] = maps.view(b, k, fh, fw)
    return out


def prediction_read_error(task, folder: Path, path: Path, content: bytes | str) -> str:
    """Write ``content`` to ``path`` (its folders made), then read ``task``'s predictions from
    ``folder``: that must raise MtlDataError; returns its message."""
    from mtl_data.errors import MtlDataError

    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    with pytest.raises(MtlDataError) as info:
        task.read_predictions(folder)
    return str(info.value)


def write_task_predictions(task, folder: Path, predictions: dict, samples: list | None = None) -> Path:
    """Write ``predictions`` (key -> prediction) with ``task.writer(folder)`` and close it: one
    ``add`` per sample of ``samples``, in that order (``predictions[sample.key]`` with its sample),
    or, without samples, one per prediction in the dict's order with no sample. Returns ``folder``."""
    writer = task.writer(folder)
    if samples is None:
        for key, prediction in predictions.items():
            writer.add(key, prediction, None)
    else:
        for sample in samples:
            writer.add(sample.key, predictions[sample.key], sample)
    writer.close()
    return folder


def first_batches(loader, n: int) -> list[dict]:
    """The first ``n`` batches of a pass over ``loader``."""
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def run_mtl_train(capsys, *args) -> tuple[int, str, str]:
    """``mtl-train ARGS`` in-process: exit code, stdout and stderr."""
    from mtl_data.cli.mtl_train import main as mtl_train

    try:
        mtl_train([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        """The lines of stderr that are not progress-bar output."""
        return [
            ln
            for ln in self.err.replace("\r", "\n").splitlines()
            if ln.strip() and "frame/s" not in ln and "it/s" not in ln and "frame]" not in ln and "?frame" not in ln
        ]

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


def monodle_angle2class(angle: float, bins: int) -> tuple[int, float]:
    """MonoDLE's ``angle2class`` (Ma et al. 2021), the reference the det3d
    heading encoding is checked against: bin of width 2 pi / bins centred on k 2 pi / bins, residual
    from the bin centre."""
    angle = angle % (2 * math.pi)
    angle_per_class = 2 * math.pi / bins
    shifted_angle = (angle + angle_per_class / 2) % (2 * math.pi)
    class_id = int(shifted_angle / angle_per_class)
    return class_id, shifted_angle - (class_id * angle_per_class + angle_per_class / 2)


# A tiny mtl-train run for tests: a small model on small images, no worker processes.
SMALL_RUN = [
    "--model",
    "resnet18-fpn",
    "--image-size",
    "64x128",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--set",
    "model_options.neck_channels=32",
]

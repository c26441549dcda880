"""``mtl-data reshard``: training copies of a full-size master equal ``ingest --max-side N``.

Masters and references are ingested once per module from the real fixtures: KITTI's two frames
(depth, det2d, det3d) with a PNG image, and A2D2's real semantic frame with a real LiDAR scan
(seg, depth) with the default JPEG image. Each test that changes a master works on a copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_error_line, fixture_path, rewrite_as_schema_1

from mtl_data.cli.main import main
from mtl_data.schema.sample import SCHEMA_VERSION
from mtl_data.shards.codec import decode_image
from mtl_data.shards.tario import iter_tar_samples

SIDE = 300
A2D2_SCENE, A2D2_PREFIX, A2D2_ID = "20180807_145028", "20180807145028", "000006882"
LIDAR_SCENE, LIDAR_PREFIX, LIDAR_ID = "20180810_142822", "20180810142822", "000015196"


# ---- helpers ----------------------------------------------------------------------------------


def _main(*args) -> None:
    """``mtl-data ARGS`` in-process for the module fixtures (a failure is a broken fixture)."""
    try:
        main([str(a) for a in args])
    except SystemExit as exc:  # pragma: no cover
        assert not exc.code, f"mtl-data {args} failed"


def a2d2_lidar_root(root: Path) -> Path:
    """A raw A2D2 root of one front-center frame of ``camera_lidar_semantic``: the real camera
    image and label of frame 000006882 with the real LiDAR npz of frame 000015196 (a real
    1920x1208 scan, paired with another frame: bench/ingest_a2d2.py does the same)."""
    fx = fixture_path("a2d2")
    part = root / "camera_lidar_semantic"
    files = {
        root / "cams_lidars.json": fx / "cams_lidars.json",
        part / "class_list.json": fx / "class_list.json",
    }
    for kind in ("camera", "label"):
        name = f"{A2D2_PREFIX}_{kind}_frontcenter_{A2D2_ID}.png"
        files[part / A2D2_SCENE / kind / "cam_front_center" / name] = (
            fx / "camera_lidar_semantic" / A2D2_SCENE / kind / "cam_front_center" / name
        )
    npz = f"{LIDAR_PREFIX}_lidar_frontcenter_{LIDAR_ID}.npz"
    files[part / A2D2_SCENE / "lidar" / "cam_front_center" / f"{A2D2_PREFIX}_lidar_frontcenter_{A2D2_ID}.npz"] = (
        fx / "camera_lidar_semantic_bboxes" / LIDAR_SCENE / "lidar" / "cam_front_center" / npz
    )
    for dst, src in files.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    return root


def shard_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def members(folder: Path) -> dict[str, dict[str, bytes]]:
    """key -> {extension: bytes} of every sample of a source folder's shards."""
    return {key: m for tar in sorted(folder.glob("*.tar")) for key, m in iter_tar_samples(tar)}


def manifest(folder: Path) -> pa.Table:
    return pq.read_table(folder / "manifest.parquet")


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def writable_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for path in dst.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dst


def damage_member(shard: Path, ext: str) -> None:
    """Invert 64 bytes in the middle of the first ``ext`` member of ``shard`` (its size unchanged)."""
    with tarfile.open(shard) as tar:
        info = next(i for i in tar if i.name.endswith("." + ext))
    data = bytearray(shard.read_bytes())
    start = info.offset_data + info.size // 2
    data[start : start + 64] = bytes(b ^ 0xFF for b in data[start : start + 64])
    shard.write_bytes(bytes(data))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def a2d2_raw(tmp_path_factory) -> Path:
    return a2d2_lidar_root(tmp_path_factory.mktemp("a2d2_raw"))


@pytest.fixture(scope="module")
def masters(tmp_path_factory, a2d2_raw) -> Path:
    """Full-size masters (read-only): kitti as PNG, one sample per shard; a2d2 as JPEG."""
    out = tmp_path_factory.mktemp("masters")
    kitti = fixture_path("kitti", "object")
    _main("ingest", "kitti", kitti, "--to", out, "--workers", 1, "--image-format", "png", "--shard-size", 1)
    _main("ingest", "a2d2", a2d2_raw, "--to", out, "--workers", 1)
    return out


@pytest.fixture(scope="module")
def references(tmp_path_factory, a2d2_raw) -> dict[str, Path]:
    """What ingest --max-side SIDE gives from the raw data (read-only): the masters' options, and
    a2d2 also lossless (png) for the image-quality comparison."""
    out = tmp_path_factory.mktemp("references")
    kitti = fixture_path("kitti", "object")
    common = ["--workers", 1, "--max-side", SIDE]
    _main("ingest", "kitti", kitti, "--to", out / "jpg", *common, "--image-format", "png", "--shard-size", 1)
    _main("ingest", "a2d2", a2d2_raw, "--to", out / "jpg", *common)
    _main("ingest", "a2d2", a2d2_raw, "--to", out / "png", *common, "--image-format", "png")
    return {"kitti": out / "jpg" / "kitti", "a2d2": out / "jpg" / "a2d2", "a2d2_png": out / "png" / "a2d2"}


@pytest.fixture(scope="module")
def copies(tmp_path_factory, masters) -> Path:
    """``mtl-data reshard MASTERS --max-side SIDE --to COPIES``: both sources (read-only)."""
    out = tmp_path_factory.mktemp("copies") / "shards"
    _main("reshard", masters, "--max-side", SIDE, "--to", out, "--workers", 1)
    return out


# ---- the copies equal ingest --max-side -------------------------------------------------------


def test_png_master_copy_is_byte_identical_to_ingest_with_max_side(copies, references):
    copy, ref = copies / "kitti", references["kitti"]
    assert sorted(shard_files(copy)) == ["train-000000.tar", "train-000001.tar"]  # the master's --shard-size 1
    assert shard_files(copy) == shard_files(ref)
    assert manifest(copy).equals(manifest(ref))
    for name in ("classes.json", "rejects.jsonl"):
        assert (copy / name).read_bytes() == (ref / name).read_bytes(), name
    report = json.loads((copy / "ingest.json").read_text())
    options = report["fingerprint"]["options"]
    assert (options["max_side"], options["image_format"], options["shard_size"]) == (
        SIDE,
        "png",
        {"count": 1, "bytes": None},
    )
    assert report["fingerprint"]["converter_options"]["master"]["options"]["max_side"] is None


def test_jpeg_master_copy_has_every_label_member_byte_identical_and_the_image_within_tolerance(copies, references):
    copy, ref = members(copies / "a2d2"), members(references["a2d2"])
    assert list(copy) == list(ref)
    [key] = copy
    depth = next(e for e in ref[key] if e.startswith("depth."))  # depth.png or depth.pts: the codec's choice
    assert list(copy[key]) == list(ref[key]) == ["jpg", "meta.json", "seg.png", depth]
    for ext in ("meta.json", "seg.png", depth):
        assert copy[key][ext] == ref[key][ext], ext
    assert copy[key]["jpg"] != ref[key]["jpg"]  # one more JPEG generation
    # the manifest rows too; only byte offsets after a JPEG could differ (one sample per shard here)
    rows, ref_rows = manifest(copies / "a2d2"), manifest(references["a2d2"])
    assert rows.drop_columns(["offset"]).equals(ref_rows.drop_columns(["offset"]))

    # the tolerance docs/conventions.md states (measured: MAD 1.20, PSNR 43.6 dB at 300 px)
    image, reference = decode_image(copy[key]["jpg"]), decode_image(ref[key]["jpg"])
    assert image.shape == reference.shape == (189, 300, 3)
    assert np.abs(image.astype(np.int16) - reference).mean() < 2.0
    assert psnr(image, reference) > 40.0
    # against the lossless resize, the copy is within 0.5 dB of the direct ingest
    [lossless] = [m["png"] for m in members(references["a2d2_png"]).values()]
    lossless = decode_image(lossless)
    assert psnr(reference, lossless) - psnr(image, lossless) < 0.5


def test_schema_1_master_gives_a_current_schema_copy_identical_to_ingest(masters, references, tmp_path):
    master = writable_copy(masters / "kitti", tmp_path / "old" / "kitti")
    rewrite_as_schema_1(master.parent)
    assert all(json.loads(m["meta.json"])["schema"] == 1 and "depth.png" in m for m in members(master).values())
    out = tmp_path / "copies"
    _main("reshard", master, "--max-side", SIDE, "--to", out, "--workers", 1)
    assert {json.loads(m["meta.json"])["schema"] for m in members(out / "kitti").values()} == {SCHEMA_VERSION}
    assert shard_files(out / "kitti") == shard_files(references["kitti"])
    assert manifest(out / "kitti").equals(manifest(references["kitti"]))


def test_master_at_or_below_max_side_passes_its_samples_unchanged(cli, references, tmp_path):
    small = references["kitti"]  # ingested with --max-side 300, PNG
    result = cli("reshard", small, "--max-side", 600, "--to", tmp_path / "out", "--workers", 1)
    assert result.code == 0, result.err
    assert any("--max-side 300, at most 600: its samples keep their size" in ln for ln in result.error_lines)
    assert shard_files(tmp_path / "out" / "kitti") == shard_files(small)
    assert manifest(tmp_path / "out" / "kitti").equals(manifest(small))


def test_source_option_and_a_single_source_folder_pick_the_sources(cli, masters, tmp_path):
    result = cli("reshard", masters, "--source", "kitti", "--max-side", 64, "--to", tmp_path / "a", "--workers", 1)
    assert result.code == 0, result.err
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["kitti"]
    result = cli("reshard", masters / "a2d2", "--max-side", 64, "--to", tmp_path / "b", "--workers", 1)
    assert result.code == 0, result.err
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["a2d2"]
    assert manifest(tmp_path / "b" / "a2d2")["width"].to_pylist() == [64]
    line = assert_error_line(cli("reshard", masters, "--source", "gtsrb", "--max-side", 64, "--to", tmp_path / "c"))
    assert "no source 'gtsrb' there; choose from a2d2, kitti" in line
    assert not (tmp_path / "c").exists()


# ---- re-runs, overwrite, lock, resume -----------------------------------------------------------


def _reshard(cli, master: Path, out: Path, *extra, side: int = SIDE):
    return cli("reshard", master, "--max-side", side, "--to", out, "--workers", 1, *extra)


def test_second_identical_run_does_nothing_and_overwrite_rebuilds(cli, masters, tmp_path):
    out = tmp_path / "out"
    assert _reshard(cli, masters / "kitti", out).code == 0
    before = files(out / "kitti")

    result = _reshard(cli, masters / "kitti", out)
    assert result.code == 0, result.err
    assert any("train already complete" in ln and "left alone" in ln for ln in result.error_lines), result.err
    assert files(out / "kitti") == before  # ingest.json too: nothing was rewritten

    line = assert_error_line(_reshard(cli, masters / "kitti", out, side=200))
    assert "was built with different options (options.max_side: 300 -> 200)" in line and "--overwrite" in line

    damage_member(out / "kitti" / "train-000000.tar", "png")  # same size: a plain re-run keeps it
    assert _reshard(cli, masters / "kitti", out).code == 0
    assert (out / "kitti" / "train-000000.tar").read_bytes() != before["train-000000.tar"]
    result = _reshard(cli, masters / "kitti", out, "--overwrite")
    assert result.code == 0, result.err
    rebuilt = files(out / "kitti")
    assert {k: v for k, v in rebuilt.items() if k != "ingest.json"} == {
        k: v for k, v in before.items() if k != "ingest.json"
    }


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mtl_data.ingest.engine import ingest_lock

    with ingest_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def test_a_second_run_into_a_held_copy_folder_is_refused_naming_the_holder(cli, masters, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out / "kitti")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked", proc.stderr.read()
        line = assert_error_line(_reshard(cli, masters / "kitti", out))
        assert f"{out / 'kitti'}: another ingest is writing this folder (pid {proc.pid}" in line
        assert sorted(p.name for p in (out / "kitti").iterdir()) == ["ingest.lock"]
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_damaged_master_sample_stops_with_one_line_and_the_repaired_master_resumes(cli, masters, references, tmp_path):
    master = writable_copy(masters / "kitti", tmp_path / "master" / "kitti")
    intact = (master / "train-000001.tar").read_bytes()
    damage_member(master / "train-000001.tar", "png")  # the second sample's image, same size
    out = tmp_path / "out"
    line = assert_error_line(_reshard(cli, master, out))
    assert f"{master / 'train-000001.tar'}: kitti_train_000001 at byte 0 does not decode" in line
    assert "the master is damaged: rebuild its split: `mtl-data ingest kitti " in line
    assert "--split train --overwrite`" in line and "then re-run this reshard, which resumes" in line
    assert (out / "kitti" / "train-000000.tar").exists()  # the finished shard is kept ...
    assert not (out / "kitti" / "manifest.parquet").exists()  # ... and the copy is not complete

    (master / "train-000001.tar").write_bytes(intact)
    result = _reshard(cli, master, out)
    assert result.code == 0, result.err
    assert shard_files(out / "kitti") == shard_files(references["kitti"])
    assert manifest(out / "kitti").equals(manifest(references["kitti"]))


def test_truncated_master_shard_is_refused_before_anything_is_written(cli, masters, tmp_path):
    master = writable_copy(masters / "kitti", tmp_path / "master" / "kitti")
    shard = master / "train-000001.tar"
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:1000])
    out = tmp_path / "out"
    line = assert_error_line(_reshard(cli, master, out))
    assert f"{shard}: master shard has 1,000 bytes, {size:,} when it was written" in line
    assert "re-run the ingest that wrote it (`mtl-data ingest kitti " in line
    assert not out.exists()


# ---- bad command lines --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["not_shards", "small_side", "out_is_shards", "out_inside_shards", "out_inside_master"],
)
def test_bad_input_is_one_error_line_and_writes_nothing(case, cli, masters, tmp_path):
    before = files(masters)
    empty = tmp_path / "empty"
    empty.mkdir()
    shards, side, out, says = {
        "not_shards": (empty, SIDE, tmp_path / "out", f"{empty}: no manifest.parquet found"),
        "small_side": (masters, 8, tmp_path / "out", "--max-side"),
        "out_is_shards": (masters, SIDE, masters, "inside the shards being read"),
        "out_inside_shards": (masters, SIDE, masters / "small", "inside the shards being read"),
        "out_inside_master": (masters / "kitti", SIDE, masters / "kitti" / "small", "inside the shards being read"),
    }[case]
    result = cli("reshard", shards, "--max-side", side, "--to", out, "--workers", 1)
    assert_error_line(result, says)
    assert files(masters) == before
    assert not (tmp_path / "out").exists()


def test_master_with_an_unfinished_ingest_is_refused(cli, masters, tmp_path):
    master = writable_copy(masters / "kitti", tmp_path / "master" / "kitti")
    (master / ".ingest").mkdir()
    line = assert_error_line(_reshard(cli, master, tmp_path / "out"))
    assert f"{master}: an ingest is running or unfinished there (.ingest/ exists)" in line
    assert not (tmp_path / "out").exists()

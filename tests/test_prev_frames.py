"""``--prev-frames N``: previous frames t-1 .. t-N as members ``prev1.<ext>`` .. ``prevN.<ext>``.

The real fixture layouts (KITTI ``prev_2/``, Cityscapes ``leftImg8bit_sequence/``, TuSimple clip
frames) get previous-frame files written here: altered copies of the labelled image, so that each
is told apart. A previous frame must come out exactly as that image would if it were the labelled
one (same decode, resize and encode): the tests ingest it that way too and compare bytes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import assert_error_line, fixture_path, ingest_cli, read_manifest, read_rejects, read_report

from mtl_data.shards.codec import DecodeError, decode_sample, encode_sample
from mtl_data.shards.manifest import MANIFEST_NAME, read_manifests
from mtl_data.shards.reader import ShardSet
from mtl_data.shards.tario import TarShardWriter, iter_tar_samples
from mtl_data.synth.kitti import PREV_FRAMES


def _samples(out: Path, source: str) -> dict[str, dict[str, bytes]]:
    """key -> members (extension -> bytes) of every shard of ``out/source``."""
    found = {}
    for tar in sorted((out / source).glob("*.tar")):
        found.update({key: members for key, members in iter_tar_samples(tar)})
    return found


def _tar_bytes(out: Path, source: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / source).glob("*.tar"))}


def _prev_counts(out: Path, source: str) -> dict[str, int]:
    return {r["id"]: r["prev_frames"] for r in read_manifest(out, source)}


def _altered(src: Path, dst: Path, shift: int) -> None:
    """Write ``src``'s picture, rolled ``shift`` px to the right and brightened, to ``dst`` in the
    format of ``dst``'s suffix (a frame that differs from the labelled one, of its size)."""
    image = cv2.imread(str(src), cv2.IMREAD_COLOR)
    image = np.roll(image, shift, axis=1).astype(np.int16) + shift
    dst.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(dst), np.clip(image, 0, 255).astype(np.uint8))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for path in dst.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dst


def _as_labelled(cli, source: str, root: Path, labelled: Path, prev: Path, out: Path, *options) -> dict[str, bytes]:
    """The members a run gives when ``prev`` (a previous frame) takes the place of the labelled
    image ``labelled`` (both under ``root``): the previous frame through the labelled frame's path."""
    shutil.copy(prev, labelled)
    result = ingest_cli(cli, source, root, out, *options)
    assert result.code == 0, result.err
    return _samples(out, source)


# ---- the real fixture layouts -----------------------------------------------------------------


def test_kitti_prev_2_frames_go_through_the_image_path_of_frame_t(cli, tmp_path: Path):
    raw = _copy(fixture_path("kitti", "object"), tmp_path / "raw")
    image = raw / "training/image_2/000000.png"
    for k in (1, 2):  # 000000: t-1 and t-2; t-3 missing
        _altered(image, raw / f"training/prev_2/000000_{k:02d}.png", 5 * k)
    _altered(raw / "training/image_2/000001.png", raw / "training/prev_2/000001_02.png", 7)  # t-1 missing
    options = ("--max-side", "500", "--jpeg-quality", "90")
    result = ingest_cli(cli, "kitti", raw, tmp_path / "out", "--prev-frames", "3", *options, workers=2)
    assert result.code == 0, result.err
    assert "previous frames: 2 x1, 0 x1" in result.out
    assert _prev_counts(tmp_path / "out", "kitti") == {"000000": 2, "000001": 0}  # t-2 alone is not used
    samples = _samples(tmp_path / "out", "kitti")
    first, second = samples["kitti_train_000000"], samples["kitti_train_000001"]
    assert list(first)[:4] == ["jpg", "prev1.jpg", "prev2.jpg", "meta.json"]
    assert not any(ext.startswith("prev") for ext in second)
    # t-k is exactly what the labelled frame's path gives for that picture (decode, --max-side, JPEG)
    for k in (1, 2):
        alone = _copy(fixture_path("kitti", "object"), tmp_path / f"raw_{k}")
        got = _as_labelled(
            cli,
            "kitti",
            alone,
            alone / "training/image_2/000000.png",
            raw / f"training/prev_2/000000_{k:02d}.png",
            tmp_path / f"out_{k}",
            *options,
        )
        assert first[f"prev{k}.jpg"] == got["kitti_train_000000"]["jpg"]
    assert first["prev1.jpg"] != first["prev2.jpg"] != first["jpg"]
    # the labelled frame's calibration and labels are untouched by its previous frames
    plain = ingest_cli(cli, "kitti", fixture_path("kitti", "object"), tmp_path / "plain", *options)
    assert plain.code == 0, plain.err
    unchanged = _samples(tmp_path / "plain", "kitti")
    assert {e: b for e, b in first.items() if not e.startswith("prev")} == unchanged["kitti_train_000000"]
    assert second == unchanged["kitti_train_000001"]


def test_cityscapes_previous_frames_are_frame_numbers_f_minus_k_of_the_labelled_frame(cli, tmp_path: Path):
    raw = _copy(fixture_path("cityscapes", "mmseg_pseudo"), tmp_path / "raw")
    labelled = raw / "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"
    sequence = raw / "leftImg8bit_sequence/val/frankfurt"
    for frame, shift in ((293, 4), (292, 8)):  # F = 294, not 19: t-1 = 293, t-2 = 292, t-3 (291) missing
        _altered(labelled, sequence / f"frankfurt_000000_{frame:06d}_leftImg8bit.png", shift)
    _altered(labelled, sequence / "frankfurt_000000_000018_leftImg8bit.png", 12)  # F = 19 would read this
    shutil.copy(labelled, sequence / labelled.name)  # the package holds the labelled frame too
    result = ingest_cli(cli, "cityscapes", raw, tmp_path / "out", "--prev-frames", "3", "--image-format", "png")
    assert result.code == 0, result.err
    assert _prev_counts(tmp_path / "out", "cityscapes") == {"frankfurt_000000_000294": 2}
    members = _samples(tmp_path / "out", "cityscapes")["cityscapes_val_frankfurt_000000_000294"]
    for k, frame in ((1, 293), (2, 292)):
        want = cv2.cvtColor(
            cv2.imread(str(sequence / f"frankfurt_000000_{frame:06d}_leftImg8bit.png")), cv2.COLOR_BGR2RGB
        )
        got = decode_sample("k", members).prev[k - 1]
        np.testing.assert_array_equal(got, want)  # PNG: lossless, pixel for pixel
    alone = _copy(fixture_path("cityscapes", "mmseg_pseudo"), tmp_path / "alone")
    got = _as_labelled(
        cli,
        "cityscapes",
        alone,
        alone / "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png",
        sequence / "frankfurt_000000_000293_leftImg8bit.png",
        tmp_path / "out_alone",
        "--image-format",
        "png",
    )
    assert members["prev1.png"] == got["cityscapes_val_frankfurt_000000_000294"]["png"]


def test_tusimple_19_jpg_is_t_minus_1_of_the_labelled_20_jpg(cli, tmp_path: Path):
    raw = _copy(fixture_path("tusimple"), tmp_path / "raw")
    clip = raw / "train_set/clips/0601/1494453497604532231"
    _altered(clip / "20.jpg", clip / "19.jpg", 6)
    _altered(clip / "20.jpg", clip / "18.jpg", 12)  # 17.jpg missing: 2 of 3
    _altered(clip / "20.jpg", clip / "16.jpg", 20)  # beyond the gap: never used
    result = ingest_cli(cli, "tusimple", raw, tmp_path / "out", "--prev-frames", "3", "--max-side", "640")
    assert result.code == 0, result.err
    ((key, members),) = _samples(tmp_path / "out", "tusimple").items()
    assert [e for e in members if e.startswith("prev")] == ["prev1.jpg", "prev2.jpg"]
    assert _prev_counts(tmp_path / "out", "tusimple") == {"clips/0601/1494453497604532231/20": 2}
    alone = _copy(fixture_path("tusimple"), tmp_path / "alone")
    for k, name in ((1, "19.jpg"), (2, "18.jpg")):
        got = _as_labelled(
            cli,
            "tusimple",
            alone,
            alone / "train_set/clips/0601/1494453497604532231/20.jpg",
            clip / name,
            tmp_path / f"out_{k}",
            "--max-side",
            "640",
        )
        assert members[f"prev{k}.jpg"] == got[key]["jpg"]


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:200]), "truncated PNG"),
        (lambda p: cv2.imwrite(str(p), np.zeros((100, 300, 3), np.uint8)), "is 300x100, but its labelled frame"),
    ],
    ids=["corrupt", "other-size"],
)
def test_a_bad_previous_frame_is_one_error_line_naming_it_or_a_reject(cli, tmp_path: Path, damage, says):
    raw = _copy(fixture_path("kitti", "object"), tmp_path / "raw")
    bad = raw / "training/prev_2/000001_01.png"
    _altered(raw / "training/image_2/000001.png", bad, 3)
    damage(bad)
    result = ingest_cli(cli, "kitti", raw, tmp_path / "fail", "--prev-frames", "1")
    assert_error_line(result, str(bad), says)
    assert not (tmp_path / "fail/kitti/manifest.parquet").exists()
    skipped = ingest_cli(cli, "kitti", raw, tmp_path / "skip", "--prev-frames", "1", "--on-error", "skip")
    assert skipped.code == 0, skipped.err
    (reject,) = read_rejects(tmp_path / "skip", "kitti")
    assert (reject["id"], reject["path"]) == ("000001", str(bad.resolve()))
    assert says in reject["error"]
    assert _prev_counts(tmp_path / "skip", "kitti") == {"000000": 0}


# ---- synthetic data ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kitti_prev(synth_root, tmp_path_factory) -> Path:
    """Synthetic KITTI ingested with --prev-frames 3 as PNG (a lossless master), one worker."""
    from mtl_data.cli.main import main

    out = tmp_path_factory.mktemp("kitti_prev")
    args = ["ingest", "kitti", synth_root("kitti"), "--to", out, "--workers", "1", "--prev-frames", "3"]
    try:
        main([str(a) for a in [*args, "--image-format", "png"]])
    except SystemExit as exc:  # pragma: no cover - a failed ingest is a broken fixture
        assert exc.code in (0, None)
    return out


def test_synth_kitti_counts_follow_its_prev_2_files_consecutively(kitti_prev: Path):
    # PREV_FRAMES: training 0..5 then testing 0..1; (1, 3) has a gap after t-1, so 1
    consecutive = []
    for ks in PREV_FRAMES:
        n = 0
        while n + 1 in ks:
            n += 1
        consecutive.append(n)
    assert consecutive == [3, 1, 0, 1, 3, 2, 3, 0]
    rows = read_manifest(kitti_prev, "kitti")
    got = {(r["split"], r["id"]): r["prev_frames"] for r in rows}
    ids = [("train", f"{i:06d}") for i in range(6)] + [("test", f"{i:06d}") for i in range(2)]
    assert [got[i] for i in ids] == consecutive
    assert pq.read_schema(kitti_prev / "kitti" / MANIFEST_NAME).field("prev_frames").type == "uint8"
    for key, members in _samples(kitti_prev, "kitti").items():
        prev = [e for e in members if e.startswith("prev")]
        assert prev == [f"prev{k}.png" for k in range(1, len(prev) + 1)], key
    report = read_report(kitti_prev, "kitti")
    assert report["fingerprint"]["options"]["prev_frames"] == 3
    assert report["splits"]["train"]["prev_frames"] == {"3": 2, "2": 1, "1": 2, "0": 1}


def test_previous_frames_are_byte_identical_across_workers_and_partitions(cli, synth_root, kitti_prev, tmp_path):
    raw = synth_root("kitti")
    common = ("--prev-frames", "3", "--image-format", "png")
    assert ingest_cli(cli, "kitti", raw, tmp_path / "w2", *common, workers=2).code == 0
    for i in range(2):
        assert ingest_cli(cli, "kitti", raw, tmp_path / "parts", *common, "--partition", f"{i}/2").code == 0
    for out in (tmp_path / "w2", tmp_path / "parts"):
        assert _tar_bytes(out, "kitti") == _tar_bytes(kitti_prev, "kitti")
        assert read_manifest(out, "kitti") == read_manifest(kitti_prev, "kitti")


def test_without_previous_frames_shards_are_those_of_a_run_without_the_option(cli, synth_root, kitti_prev, tmp_path):
    raw = synth_root("kitti")
    assert ingest_cli(cli, "kitti", raw, tmp_path / "plain", "--image-format", "png").code == 0
    assert ingest_cli(cli, "kitti", raw, tmp_path / "zero", "--image-format", "png", "--prev-frames", "0").code == 0
    assert _tar_bytes(tmp_path / "zero", "kitti") == _tar_bytes(tmp_path / "plain", "kitti")
    assert (
        read_report(tmp_path / "zero", "kitti")["fingerprint"]
        == read_report(tmp_path / "plain", "kitti")["fingerprint"]
    )
    # with previous frames, every other member of every sample is the plain run's, byte for byte
    plain, prev = _samples(tmp_path / "plain", "kitti"), _samples(kitti_prev, "kitti")
    assert {k: {e: b for e, b in m.items() if not e.startswith("prev")} for k, m in prev.items()} == plain
    assert [r["prev_frames"] for r in read_manifest(tmp_path / "plain", "kitti")] == [0] * len(plain)
    # a source where none are found: the shards of a run without the option
    root = tmp_path / "no_prev"
    shutil.copytree(raw, root, ignore=shutil.ignore_patterns("prev_2"))
    assert ingest_cli(cli, "kitti", root, tmp_path / "none", "--image-format", "png", "--prev-frames", "3").code == 0
    assert _tar_bytes(tmp_path / "none", "kitti") == _tar_bytes(tmp_path / "plain", "kitti")


def test_other_prev_frames_on_an_existing_output_are_refused(cli, synth_root, kitti_prev, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(kitti_prev, out)
    result = ingest_cli(cli, "kitti", synth_root("kitti"), out, "--image-format", "png", "--prev-frames", "2")
    assert_error_line(result, "different options", "prev_frames: 3 -> 2")
    again = ingest_cli(cli, "kitti", synth_root("kitti"), out, "--image-format", "png", "--prev-frames", "3")
    assert again.code == 0 and "already complete" in again.err


def test_more_than_three_previous_frames_is_a_usage_error(cli, synth_root, tmp_path):
    result = ingest_cli(cli, "kitti", synth_root("kitti"), tmp_path / "out", "--prev-frames", "4")
    assert result.code == 2 and "--prev-frames" in result.err
    assert not (tmp_path / "out").exists()


def test_reshard_carries_previous_frames_resized_like_the_image(cli, synth_root, kitti_prev, tmp_path):
    result = cli("reshard", kitti_prev, "--max-side", "300", "--to", tmp_path / "copy", "--workers", "1")
    assert result.code == 0, result.err
    direct = ingest_cli(
        cli,
        "kitti",
        synth_root("kitti"),
        tmp_path / "direct",
        "--prev-frames",
        "3",
        "--image-format",
        "png",
        "--max-side",
        "300",
    )
    assert direct.code == 0, direct.err
    copy = _samples(tmp_path / "copy", "kitti")
    assert copy == _samples(tmp_path / "direct", "kitti")  # a PNG master: byte for byte
    assert any("prev3.png" in m for m in copy.values())
    assert read_manifest(tmp_path / "copy", "kitti") == read_manifest(tmp_path / "direct", "kitti")
    assert read_report(tmp_path / "copy", "kitti")["fingerprint"]["options"]["prev_frames"] == 3


@pytest.mark.parametrize(
    "source, says",
    [("a2d2", "a2d2: no previous frames (labelled frames are not sequential)"), ("gtsrb", "gtsrb: no previous frames")],
)
def test_a_source_without_previous_frames_says_so_once(cli, synth_root, tmp_path, source, says):
    result = ingest_cli(cli, source, synth_root(source), tmp_path / "out", "--prev-frames", "2")
    assert result.code == 0, result.err
    assert result.out.count("no previous frames") == 1 and says in result.out
    plain = ingest_cli(cli, source, synth_root(source), tmp_path / "plain")
    assert "no previous frames" not in plain.out
    assert _tar_bytes(tmp_path / "out", source) == _tar_bytes(tmp_path / "plain", source)
    assert {r["prev_frames"] for r in read_manifest(tmp_path / "out", source)} == {0}


# ---- reading: validate, inspect, old manifests, the codec ------------------------------------


def test_validate_and_inspect_know_the_previous_frames(cli, kitti_prev):
    result = cli("validate", kitti_prev)
    assert result.code == 0 and "8 samples OK" in result.out
    shown = cli("inspect", kitti_prev, "--key", "kitti_train_000000")
    assert shown.code == 0
    assert "kitti_train_000000.prev3.png" in shown.out and "previous frames: 3" in shown.out


def test_validate_finds_a_previous_frame_of_another_size(cli, kitti_prev, tmp_path):
    out = tmp_path / "shards"
    shutil.copytree(kitti_prev, out)
    tar = out / "kitti/train-000000.tar"
    samples = list(iter_tar_samples(tar))
    key, members = samples[-1]  # the last sample: the offsets of the others stay
    assert "prev1.png" in members
    members["prev1.png"] = cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))[1].tobytes()
    tar.unlink()
    writer = TarShardWriter(tmp_path / "t.part", tar)
    for k, m in samples:
        writer.add(k, list(m.items()))
    writer.commit()
    result = cli("validate", out)
    assert result.code == 1
    assert f"{key}: previous frame t-1 must be" in result.out


def test_a_manifest_without_the_column_reads_as_no_previous_frames(synth_shards, tmp_path):
    out = tmp_path / "shards"
    shutil.copytree(synth_shards / "kitti", out / "kitti")
    path = out / "kitti" / MANIFEST_NAME
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["prev_frames"]), path)  # as written before the column existed
    assert "prev_frames" not in pq.read_schema(path).names
    assert read_manifests(out)["prev_frames"].to_pylist() == [0] * table.num_rows
    assert ShardSet.open(out).manifest["prev_frames"].to_list() == [0] * table.num_rows


def test_codec_round_trips_previous_frames_and_refuses_a_gap(kitti_prev):
    key, members = next(iter_tar_samples(kitti_prev / "kitti/train-000000.tar"))
    sample = decode_sample(key, members)
    assert len(sample.prev) == 3
    again = dict(encode_sample(sample, "png"))
    assert again == members  # PNG: lossless; same members, same order of bytes
    assert list(again) == list(members)
    gap = {e: b for e, b in members.items() if e != "prev2.png"}
    with pytest.raises(DecodeError, match="prev1 .. prevK"):
        decode_sample(key, gap)
    # a caller that decodes the image itself (a loader) gets no previous frames decoded
    assert decode_sample(key, members, image=sample.image).prev == ()
    assert json.loads(members["meta.json"])["tasks"] == list(sample.tasks)

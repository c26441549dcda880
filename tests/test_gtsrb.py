"""The GTSRB converter on the real samples of ``fixtures/gtsrb`` (official and Kaggle layouts),
and the synthetic GTSRB writer."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import fixture_path, read_manifest
from PIL import Image

import mtl_data.files as synth_files
import mtl_data.synth.gtsrb as synth_module
from mtl_data.ingest.engine import IngestOptions, plan_ingest, run_ingest
from mtl_data.ingest.gtsrb import GtsrbConverter, GtsrbOptions
from mtl_data.schema.taxonomy import SIGN_CLASSES
from mtl_data.schema.validate import validate
from mtl_data.shards.codec import encode_sample
from mtl_data.shards.reader import ShardSet, check_shards
from mtl_data.synth import SYNTHESIZERS
from mtl_data.synth.gtsrb import synth_gtsrb

TRAIN_IDS = ("00000_00000_00000", "00000_00000_00001", "00020_00000_00000", "00020_00000_00001")
TEST_IDS = ("00000", "00001", "00002")
NUMBERS = ("Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2")


# ---- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def official() -> Path:
    return fixture_path("gtsrb", "official")


@pytest.fixture
def kaggle() -> Path:
    return fixture_path("gtsrb", "kaggle")


def _copy(src: Path, dst: Path) -> Path:
    """A writable copy of a fixture root."""
    shutil.copytree(src, dst)
    for path in dst.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dst


def read_csv(path: Path, delimiter: str) -> list[dict[str, str]]:
    """Independent reading of a GTSRB CSV: {column: text} per row."""
    lines = [ln for ln in path.read_bytes().decode().replace("\r\n", "\n").split("\n") if ln]
    header = lines[0].split(delimiter)
    return [dict(zip(header, ln.split(delimiter))) for ln in lines[1:]]


def read_ppm_or_png(path: Path) -> np.ndarray:
    """Pixels through Pillow (a decoder independent of the converter's OpenCV)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def convert_all(root: Path, **options) -> dict[str, object]:
    conv = GtsrbConverter(root, GtsrbOptions(**options))
    return {f.id: conv.convert(f) for f in conv.frames()}


# ---- listing ----------------------------------------------------------------------------------


def test_both_real_layouts_list_the_same_frames(official, kaggle):
    expected = [("test", i) for i in TEST_IDS] + [("train", i) for i in TRAIN_IDS]
    for root in (official, kaggle):
        assert [(f.split, f.id) for f in GtsrbConverter(root).frames()] == expected


def test_kaggle_path_prefix_code_resolves_to_the_image_under_raw_root(kaggle):
    assert "/code/Train/20/00020_00000_00000.png" in (kaggle / "Train.csv").read_text()
    frames = {f.id: f for f in GtsrbConverter(kaggle).frames()}
    assert frames["00020_00000_00000"].paths["image"] == kaggle / "Train" / "20" / "00020_00000_00000.png"
    assert frames["00001"].paths["image"] == kaggle / "Test" / "00001.png"


@pytest.mark.parametrize("prefix", ["", "C:\\data\\gtsrb\\"], ids=["relative", "windows"])
def test_kaggle_path_without_or_with_another_prefix_gives_the_same_samples(prefix, kaggle, tmp_path):
    root = _copy(kaggle, tmp_path / "kaggle")
    for name in ("Train.csv", "Test.csv"):
        text = (root / name).read_text().replace("/code/", prefix)
        if "\\" in prefix:
            text = text.replace("/", "\\")
        (root / name).write_text(text)
    got, want = convert_all(root), convert_all(kaggle)
    assert sorted(got) == sorted(want)
    for frame_id, sample in got.items():
        np.testing.assert_array_equal(sample.image, want[frame_id].image)
        assert sample.sign == want[frame_id].sign


# ---- labels -----------------------------------------------------------------------------------


def test_roi_class_and_size_equal_the_official_crlf_csv_rows(official):
    samples = convert_all(official)
    images = official / "GTSRB" / "Final_Training" / "Images"
    for class_dir in ("00000", "00020"):
        csv = images / class_dir / f"GT-{class_dir}.csv"
        assert b"\r\n" in csv.read_bytes()  # the real files are CRLF
        for row in read_csv(csv, ";"):
            sample = samples[f"{class_dir}_{row['Filename'][:-4]}"]
            w, h, x1, y1, x2, y2 = (int(row[k]) for k in NUMBERS)
            assert sample.size == sample.orig_size == (h, w)
            assert sample.sign.class_id == int(row["ClassId"]) == int(class_dir)
            assert sample.sign.roi == (x1, y1, x2, y2)
            assert "\r" not in sample.id


def test_roi_class_and_size_equal_the_kaggle_csv_rows(kaggle):
    samples = convert_all(kaggle)
    for name in ("Train.csv", "Test.csv"):
        for row in read_csv(kaggle / name, ","):
            sample = samples[Path(row["Path"]).stem]
            w, h, x1, y1, x2, y2 = (int(row[k]) for k in NUMBERS)
            assert sample.size == (h, w)
            assert sample.sign.class_id == int(row["ClassId"])
            assert sample.sign.roi == (x1, y1, x2, y2)


def test_test_images_are_labelled_from_gt_final_test_csv(official):
    samples = convert_all(official)
    rows = read_csv(official / "GT-final_test.csv", ";")
    assert [samples[r["Filename"][:5]].sign.class_id for r in rows] == [16, 1, 38]
    for r in rows:
        sample = samples[r["Filename"][:5]]
        assert (sample.split, sample.key, sample.tasks) == ("test", f"gtsrb_test_{r['Filename'][:5]}", ("sign",))
        assert sample.sign.roi == tuple(float(r[k]) for k in NUMBERS[2:])


def test_only_gt_final_test_test_csv_gives_unlabelled_test_images(official, tmp_path):
    root = _copy(official, tmp_path / "official")
    (root / "GT-final_test.csv").unlink()
    samples = convert_all(root)
    for frame_id in TEST_IDS:
        sample = samples[frame_id]
        assert (sample.split, sample.sign, sample.tasks) == ("test", None, ())
        np.testing.assert_array_equal(
            sample.image, read_ppm_or_png(root / "GTSRB" / "Final_Test" / "Images" / f"{frame_id}.ppm")
        )
    assert all(samples[i].sign is not None for i in TRAIN_IDS)


def test_gt_final_test_csv_kept_inside_final_test_is_read_too(official, tmp_path):
    root = _copy(official, tmp_path / "official")
    (root / "GT-final_test.csv").rename(root / "GTSRB" / "Final_Test" / "GT-final_test.csv")
    assert [convert_all(root)[i].sign.class_id for i in TEST_IDS] == [16, 1, 38]


def test_sequence_is_the_track_prefixed_with_its_class(official):
    samples = convert_all(official)
    # both classes have a track 00000: the class prefix keeps the two physical signs apart
    assert {i: samples[i].sequence for i in TRAIN_IDS} == {
        "00000_00000_00000": "00000_00000",
        "00000_00000_00001": "00000_00000",
        "00020_00000_00000": "00020_00000",
        "00020_00000_00001": "00020_00000",
    }
    assert {samples[i].sequence for i in TEST_IDS} == {None}


def test_class_tables_are_the_43_names_of_the_real_signnames_csv(official):
    rows = read_csv(fixture_path("gtsrb", "signnames.csv"), ",")
    assert [int(r["ClassId"]) for r in rows] == list(range(43))
    assert GtsrbConverter(official).class_tables() == {"sign": [r["SignName"] for r in rows]}
    assert list(SIGN_CLASSES) == [r["SignName"] for r in rows]


def test_converted_real_samples_validate_with_the_sign_task_only(official, kaggle):
    for root in (official, kaggle):
        for sample in convert_all(root).values():
            assert validate(sample) == []
            assert sample.tasks == ("sign",)
            assert (sample.K, sample.timestamp_us, sample.det2d) == (None, None, None)


# ---- the same image in both layouts -----------------------------------------------------------


def test_same_image_gets_the_same_key_class_roi_and_pixels_in_both_layouts(official, kaggle):
    a, b = convert_all(official), convert_all(kaggle)
    assert sorted(a) == sorted(b) == sorted(TRAIN_IDS + TEST_IDS)
    for frame_id in a:
        sa, sb = a[frame_id], b[frame_id]
        assert (sa.key, sa.split, sa.sequence, sa.sign) == (sb.key, sb.split, sb.sequence, sb.sign)
        np.testing.assert_array_equal(sa.image, sb.image)
        assert encode_sample(sa, "png") == encode_sample(sb, "png")  # meta.json and members too


def test_official_ppm_pixels_equal_the_kaggle_png_pixels_read_independently(official, kaggle):
    samples = convert_all(official)
    for frame_id in TRAIN_IDS:
        cls, rest = frame_id[:5], frame_id[6:]
        ppm = read_ppm_or_png(official / "GTSRB/Final_Training/Images" / cls / f"{rest}.ppm")
        png = read_ppm_or_png(kaggle / "Train" / str(int(cls)) / f"{frame_id}.png")
        np.testing.assert_array_equal(ppm, png)
        np.testing.assert_array_equal(samples[frame_id].image, ppm)


# ---- validation split -------------------------------------------------------------------------


@pytest.fixture
def full_class_csv(tmp_path) -> tuple[Path, Path]:
    """The complete real GT-00000.csv (7 tracks x 30 frames) in both layouts (CSV rows only)."""
    full = fixture_path("gtsrb", "official", "GT-00000.full.csv")
    official = tmp_path / "official"
    folder = official / "GTSRB" / "Final_Training" / "Images" / "00000"
    folder.mkdir(parents=True)
    shutil.copyfile(full, folder / "GT-00000.csv")
    kaggle = tmp_path / "kaggle"
    (kaggle / "Train" / "0").mkdir(parents=True)
    lines = [
        ",".join([*(r[k] for k in NUMBERS), r["ClassId"], f"Train/0/00000_{r['Filename'][:-4]}.png"])
        for r in read_csv(full, ";")
    ]
    (kaggle / "Train.csv").write_text("\n".join(["Width,Height,Roi.X1,Roi.Y1,Roi.X2,Roi.Y2,ClassId,Path", *lines]))
    return official, kaggle


def _split_by_track(root: Path, fraction: float) -> dict[str, set[str]]:
    splits: dict[str, set[str]] = {}
    for f in GtsrbConverter(root, GtsrbOptions(val_fraction=fraction)).frames():
        splits.setdefault(f.id[:11], set()).add(f.split)
    return splits


def test_val_split_moves_whole_tracks_of_the_real_class_csv(full_class_csv):
    official, kaggle = full_class_csv
    splits = _split_by_track(official, 0.3)
    assert len(splits) == 7  # tracks 00000_00000 .. 00000_00006
    assert all(len(s) == 1 for s in splits.values()), splits  # no track on both sides
    val = sorted(t for t, s in splits.items() if s == {"val"})
    assert len(val) == 2  # round(0.3 x 7)
    frames = GtsrbConverter(official, GtsrbOptions(val_fraction=0.3)).frames()
    assert sum(f.split == "val" for f in frames) == 60  # 2 tracks x 30 frames
    # deterministic, the same in the Kaggle layout, and only growing with the fraction
    assert _split_by_track(official, 0.3) == splits == _split_by_track(kaggle, 0.3)
    assert set(val) <= {t for t, s in _split_by_track(official, 0.6).items() if s == {"val"}}
    assert {s for v in _split_by_track(official, 0.0).values() for s in v} == {"train"}


def test_val_split_takes_at_least_one_track_and_never_all_tracks_of_a_class(full_class_csv):
    official, _ = full_class_csv
    small = [t for t, s in _split_by_track(official, 0.01).items() if s == {"val"}]
    large = [t for t, s in _split_by_track(official, 0.99).items() if s == {"val"}]
    assert (len(small), len(large)) == (1, 6)


def test_a_class_with_a_single_track_stays_in_train(official):
    frames = GtsrbConverter(official, GtsrbOptions(val_fraction=0.9)).frames()
    assert {f.split for f in frames} == {"train", "test"}


# ---- through the engine and the CLI -----------------------------------------------------------


def test_png_round_trip_through_the_engine_is_pixel_exact(official, kaggle, tmp_path):
    for name, root in (("a", official), ("b", kaggle)):
        plan = plan_ingest(GtsrbConverter(root), tmp_path / name, IngestOptions(image_format="png"))
        report = run_ingest(plan)
        assert {s: v["samples"] for s, v in report["splits"].items()} == {"train": 4, "test": 3}
    shards = ShardSet.open(tmp_path / "a")
    assert list(check_shards(shards)) == []
    for frame_id in TRAIN_IDS:
        cls, rest = frame_id[:5], frame_id[6:]
        got = shards.read_sample(f"gtsrb_train_{frame_id}")
        np.testing.assert_array_equal(
            got.image, read_ppm_or_png(official / "GTSRB/Final_Training/Images" / cls / f"{rest}.ppm")
        )
        assert got.sign.class_id == int(cls)
        assert got.sequence == frame_id[:11]
    meta = json.loads(shards.read_members("gtsrb_test_00000")["meta.json"])
    assert (meta["sign_roi"], meta["tasks"], meta["size"]) == ([6.0, 5.0, 48.0, 49.0], ["sign"], [54, 53])
    assert shards.read_members("gtsrb_test_00000")["sign.cls"] == b"16"
    # the same shards, byte for byte, from either layout
    for shard in ("train-000000.tar", "test-000000.tar"):
        assert (tmp_path / "a/gtsrb" / shard).read_bytes() == (tmp_path / "b/gtsrb" / shard).read_bytes()


def test_cli_ingest_writes_the_manifest_and_class_names(cli, official, tmp_path):
    out = tmp_path / "shards"
    result = cli("ingest", "gtsrb", official, "--to", out, "--workers", 1)
    assert result.code == 0, result.err
    rows = {r["key"]: r for r in read_manifest(out, "gtsrb")}
    assert {k: (r["sign_class"], r["sequence"], r["has_sign"]) for k, r in rows.items()} == {
        "gtsrb_train_00000_00000_00000": (0, "00000_00000", True),
        "gtsrb_train_00000_00000_00001": (0, "00000_00000", True),
        "gtsrb_train_00020_00000_00000": (20, "00020_00000", True),
        "gtsrb_train_00020_00000_00001": (20, "00020_00000", True),
        "gtsrb_test_00000": (16, None, True),
        "gtsrb_test_00001": (1, None, True),
        "gtsrb_test_00002": (38, None, True),
    }
    assert json.loads((out / "gtsrb" / "classes.json").read_text()) == {"sign": list(SIGN_CLASSES)}
    assert "gtsrb/train: 4 samples" in result.out and "gtsrb/test: 3 samples" in result.out


def test_cli_val_fraction_and_two_workers_give_the_same_shards_as_one(cli, full_class_csv, tmp_path):
    official, _ = full_class_csv
    folder = official / "GTSRB/Final_Training/Images/00000"
    template = cv2.imread(str(fixture_path("gtsrb", "official", "GTSRB/Final_Training/Images/00000/00000_00000.ppm")))
    for row in read_csv(folder / "GT-00000.csv", ";"):  # a real-sized image for every real row
        image = cv2.resize(template, (int(row["Width"]), int(row["Height"])), interpolation=cv2.INTER_AREA)
        assert cv2.imwrite(str(folder / row["Filename"]), image)
    tars = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        result = cli(
            "ingest", "gtsrb", official, "--to", out, "--workers", workers, "--val-fraction", 0.3, "--shard-size", 100
        )
        assert result.code == 0, result.err
        tars.append({p.name: p.read_bytes() for p in sorted((out / "gtsrb").glob("*.tar"))})
        rows = read_manifest(out, "gtsrb")
        assert sum(r["split"] == "val" for r in rows) == 60
        by_track = {}
        for r in rows:
            by_track.setdefault(r["sequence"], set()).add(r["split"])
        assert all(len(s) == 1 for s in by_track.values())
    assert tars[0] == tars[1]
    assert sorted(tars[0]) == ["train-000000.tar", "train-000001.tar", "val-000000.tar"]


# ---- the synthetic dataset --------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gtsrb_synth")
    synth_gtsrb(out, seed=0)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _synth_rows(root: Path) -> list[tuple[Path, dict[str, str]]]:
    """(image path, CSV row with ClassId) of every synthetic image, training then test."""
    out = []
    for csv in sorted((root / "GTSRB/Final_Training/Images").glob("*/GT-*.csv")):
        out += [(csv.parent / r["Filename"], r) for r in read_csv(csv, ";")]
    out += [(root / "GTSRB/Final_Test/Images" / r["Filename"], r) for r in read_csv(root / "GT-final_test.csv", ";")]
    return out


def test_synth_is_registered_under_gtsrb():
    assert SYNTHESIZERS["gtsrb"] is synth_gtsrb


def test_synth_writes_the_official_layout(synth):
    classes, tracks, frames = synth_module.CLASSES, synth_module.TRACKS_PER_CLASS, synth_module.FRAMES_PER_TRACK
    assert len(classes) >= 3 and tracks >= 2 and frames >= 3
    n_test = len(classes) * synth_module.TEST_PER_CLASS
    expected = {"GT-final_test.csv", "GTSRB/Final_Test/Images/GT-final_test.test.csv"}
    expected |= {f"GTSRB/Final_Test/Images/{i:05d}.ppm" for i in range(n_test)}
    for c in classes:
        expected.add(f"GTSRB/Final_Training/Images/{c:05d}/GT-{c:05d}.csv")
        expected |= {
            f"GTSRB/Final_Training/Images/{c:05d}/{t:05d}_{i:05d}.ppm" for t in range(tracks) for i in range(frames)
        }
    assert set(_files(synth)) == expected


def test_synth_csvs_are_crlf_with_the_official_headers(synth):
    header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2"
    for rel, data in _files(synth).items():
        if rel.endswith(".csv"):
            assert data.endswith(b"\r\n") and data.count(b"\n") == data.count(b"\r\n"), rel
            first = data.split(b"\r\n")[0].decode()
            assert first == (header if rel.endswith(".test.csv") else header + ";ClassId"), rel
    labelled = read_csv(synth / "GT-final_test.csv", ";")
    unlabelled = read_csv(synth / "GTSRB/Final_Test/Images/GT-final_test.test.csv", ";")
    assert [{k: v for k, v in r.items() if k != "ClassId"} for r in labelled] == unlabelled
    assert {int(r["ClassId"]) for r in labelled} == set(synth_module.CLASSES)


def test_synth_images_are_ppm_of_the_csv_size_and_sizes_vary(synth):
    sizes = set()
    for image, row in _synth_rows(synth):
        assert image.read_bytes()[:3] == b"P6\n"
        h, w = read_ppm_or_png(image).shape[:2]
        assert (w, h) == (int(row["Width"]), int(row["Height"]))
        sizes.add((w, h))
    assert len(sizes) > 20


def test_synth_signs_grow_along_a_track(synth):
    for csv in (synth / "GTSRB/Final_Training/Images").glob("*/GT-*.csv"):
        widths: dict[str, list[int]] = {}
        for r in read_csv(csv, ";"):
            widths.setdefault(r["Filename"][:5], []).append(int(r["Roi.X2"]) - int(r["Roi.X1"]))
        for track in widths.values():
            assert track == sorted(track) and track[0] < track[-1]


def test_synth_roi_is_the_box_of_the_drawn_sign(synth):
    """The saturated sign paint fills the ROI: its bounding box is the ROI to within a pixel."""
    for image, row in _synth_rows(synth):
        rgb = read_ppm_or_png(image).astype(np.int16)
        saturated = (rgb.max(-1) - rgb.min(-1)) > 65  # the background is grey-ish, the paint is not
        rows, cols = np.nonzero(saturated)
        box = np.array([cols.min(), rows.min(), cols.max(), rows.max()])
        roi = np.array([int(row[k]) for k in NUMBERS[2:]])
        assert np.abs(box - roi).max() <= 1, (image.name, box, roi)


def test_synth_class_is_learnable_by_nearest_neighbour_on_roi_crops(synth):
    """1-NN on contrast-normalized 16x16 ROI crops, trained on the training images, labels every
    test image right (raw pixels would mostly measure each track's lighting)."""

    def crop(image, row):
        x1, y1, x2, y2 = (int(row[k]) for k in NUMBERS[2:])
        patch = read_ppm_or_png(image)[y1 : y2 + 1, x1 : x2 + 1]
        values = cv2.resize(patch, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
        return (values - values.mean()) / values.std()

    rows = _synth_rows(synth)
    train = [(crop(i, r), int(r["ClassId"])) for i, r in rows if "Final_Training" in i.parts]
    test = [(crop(i, r), int(r["ClassId"])) for i, r in rows if "Final_Test" in i.parts]
    features = np.stack([f for f, _ in train])
    predicted = [train[int(np.argmin(((features - f) ** 2).sum(1)))][1] for f, _ in test]
    assert predicted == [c for _, c in test]


def test_synth_same_seed_gives_byte_identical_files_and_another_seed_other_images(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        synth_gtsrb(tmp_path / name, seed=seed)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert all(a[k] != c[k] for k in a if k.endswith(".ppm"))


def test_synth_writes_every_file_through_a_temporary_name(tmp_path, monkeypatch):
    renamed = []
    real_replace = os.replace

    def replace(src, dst):
        renamed.append((Path(src).name, Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(synth_files.os, "replace", replace)
    synth_gtsrb(tmp_path, seed=0)
    assert sorted(dst for _, dst in renamed) == sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert all(src == dst.name + ".part" for src, dst in renamed)


def test_synth_converts_with_tracks_that_restart_in_every_class(synth):
    samples = list(convert_all(synth).values())
    train = [s for s in samples if s.split == "train"]
    classes, tracks = synth_module.CLASSES, synth_module.TRACKS_PER_CLASS
    assert len({s.sequence for s in train}) == len(classes) * tracks
    assert {s.sequence[6:] for s in train} == {f"{t:05d}" for t in range(tracks)}
    assert all(s.sequence[:5] == f"{s.sign.class_id:05d}" for s in train)
    assert sorted(s.key for s in samples if s.split == "test") == [
        f"gtsrb_test_{i:05d}" for i in range(len(classes) * synth_module.TEST_PER_CLASS)
    ]
    assert all(validate(s) == [] and s.tasks == ("sign",) for s in samples)


def test_synth_val_split_takes_one_whole_track_per_class(synth):
    frames = GtsrbConverter(synth, GtsrbOptions(val_fraction=0.34)).frames()
    val_tracks = {f.id[:11] for f in frames if f.split == "val"}
    train_tracks = {f.id[:11] for f in frames if f.split == "train"}
    assert val_tracks.isdisjoint(train_tracks)
    assert sorted(t[:5] for t in val_tracks) == [f"{c:05d}" for c in synth_module.CLASSES]
    assert sum(f.split == "val" for f in frames) == len(synth_module.CLASSES) * synth_module.FRAMES_PER_TRACK

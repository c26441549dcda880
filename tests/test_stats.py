"""`mtl-data stats`: counts checked against independent counts, formulas, warnings, errors.

The shards are ingested from the synthetic datasets of all five sources (native layouts); the
expected numbers are counted here with pyarrow and plain Python, not with the report's code.
"""

from __future__ import annotations

import collections
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from mtl_data.errors import MtlDataError
from mtl_data.schema.sample import TASKS
from mtl_data.shards.manifest import MANIFEST_NAME, VERSION_KEY, rows_to_table, write_table
from mtl_data.stats import StatsOptions, load_manifests, render, summarize
from mtl_data.stats.formulas import effective_number, task_weights, temperature_mix
from mtl_data.stats.render import WIDTH


@pytest.fixture(scope="module")
def shards(synth_shards) -> Path:
    """All five synthetic datasets ingested into one shards root (conftest; read-only)."""
    return synth_shards


@pytest.fixture(scope="module")
def rows(shards) -> list[dict]:
    return [r for p in sorted(shards.glob(f"*/{MANIFEST_NAME}")) for r in pq.read_table(p).to_pylist()]


@pytest.fixture(scope="module")
def report(shards) -> dict:
    return summarize(load_manifests(shards))


def copy_shards(shards: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "shards"
    shutil.copytree(shards, dst)
    return dst


def class_names(shards: Path, source: str, task: str) -> list[str]:
    return json.loads((shards / source / "classes.json").read_text())[task]


# ---- counts equal independent counts ----------------------------------------------------------


def test_source_and_split_counts_equal_the_manifest_rows(report, rows):
    per = collections.Counter((r["source"], r["split"]) for r in rows)
    assert report["samples"] == len(rows) == sum(per.values())
    assert set(report["sources"]) == {"kitti", "a2d2", "gtsrb", "tusimple", "cityscapes"}
    for source, data in report["sources"].items():
        assert data["splits"] == {split: n for (s, split), n in per.items() if s == source}
        assert data["samples"] == sum(data["splits"].values())
        assert data["share"] == pytest.approx(data["samples"] / len(rows), abs=1e-6)
        for t in TASKS:
            assert data["tasks"][t] == sum(r[f"has_{t}"] for r in rows if r["source"] == source)


def test_task_counts_shares_and_ratio_to_the_largest(report, rows):
    labelled = {t: sum(r[f"has_{t}"] for r in rows) for t in TASKS}
    assert all(labelled.values()), "every task is labelled by some synthetic source"
    for t, data in report["tasks"].items():
        assert data["labelled"] == labelled[t]
        assert data["share"] == pytest.approx(labelled[t] / sum(labelled.values()), abs=1e-6)
        assert data["ratio_to_largest"] == pytest.approx(labelled[t] / max(labelled.values()), abs=1e-6)
        assert data["by_source"] == dict(collections.Counter(r["source"] for r in rows if r[f"has_{t}"]))
        assert sum(data["by_split"].values()) == labelled[t]


@pytest.mark.parametrize("task", ["det2d", "det3d"])
def test_detection_histogram_counts_every_instance_by_name(report, rows, shards, task):
    expected = collections.Counter()
    for r in rows:
        for c in r[f"{task}_classes"] or []:
            expected[class_names(shards, r["source"], task)[c]] += 1
    classes = report["tasks"][task]["classes"]
    assert {k: v for k, v in classes["counts"].items() if v} == dict(expected)
    assert classes["total"] == sum(expected.values())
    assert classes["absent"] == [n for n in class_names(shards, "kitti", task) if n not in expected]
    assert classes["imbalance_ratio"] == pytest.approx(max(expected.values()) / min(expected.values()))
    for name, n in expected.items():
        assert classes["effective_number"][name] == pytest.approx(effective_number(n, 0.9999), abs=1e-5)


def test_seg_histogram_sums_pixels_and_keeps_ignore_apart(report, rows, shards):
    pixels, frames, ignore = collections.Counter(), collections.Counter(), 0
    for r in rows:
        if not r["has_seg"]:
            continue
        for c, n in zip(r["seg_classes"], r["seg_pixels"]):
            if c == 255:
                ignore += n
                continue
            name = class_names(shards, r["source"], "seg")[c]
            pixels[name] += n
            frames[name] += 1
    seg = report["tasks"]["seg"]["classes"]
    assert {k: v for k, v in seg["counts"].items() if v} == dict(pixels)
    assert seg["ignore_pixels"] == ignore > 0
    # each seg sample's pixels (ignore included) add up to its image
    assert sum(pixels.values()) + ignore == sum(r["height"] * r["width"] for r in rows if r["has_seg"])
    assert {k: v for k, v in seg["frames"].items() if v} == dict(frames)
    assert seg["effective_number_basis"] == "frames"


def test_sign_histogram_counts_samples(report, rows, shards):
    expected = collections.Counter(class_names(shards, "gtsrb", "sign")[r["sign_class"]] for r in rows if r["has_sign"])
    sign = report["tasks"]["sign"]["classes"]
    assert {k: v for k, v in sign["counts"].items() if v} == dict(expected)
    assert len(sign["counts"]) == 43


def test_depth_steering_and_lane_summaries(report, rows):
    depth = [r for r in rows if r["has_depth"]]
    d = report["tasks"]["depth"]["depth"]
    assert d["frames"] == len(depth)
    assert d["points_per_frame"]["mean"] == pytest.approx(np.mean([r["depth_points"] for r in depth]), abs=0.05)
    assert d["coverage"]["max"] == pytest.approx(max(r["depth_points"] / (r["height"] * r["width"]) for r in depth))
    assert d["range_m"] == pytest.approx([min(r["depth_min_m"] for r in depth), max(r["depth_max_m"] for r in depth)])

    angles = [r["steer_angle_deg"] for r in rows if r["has_steer"]]
    s = report["tasks"]["steer"]["steering"]
    assert s["frames"] == len(angles) > 0
    assert sum(s["counts"]) == len(angles)
    edges = s["edges_deg"]
    for lo, hi, n in zip(edges[:-1], edges[1:], s["counts"]):
        last = hi == edges[-1]
        assert n == sum(lo <= a < hi or (last and a == hi) for a in angles)
    assert s["near_straight"] == sum(abs(a) <= 5.0 for a in angles)

    lanes = collections.Counter(str(r["lane_count"]) for r in rows if r["has_lane"])
    assert report["tasks"]["lane"]["lanes"]["lanes_per_frame"] == dict(sorted(lanes.items()))


def test_split_option_counts_only_that_split(shards, rows):
    val = summarize(load_manifests(shards), StatsOptions(split="val"))
    assert val["samples"] == sum(r["split"] == "val" for r in rows)
    assert all(set(src["splits"]) == {"val"} for src in val["sources"].values())
    det = collections.Counter(c for r in rows if r["split"] == "val" for c in r["det2d_classes"] or [])
    assert val["tasks"]["det2d"]["classes"]["total"] == sum(det.values())


def test_recommendations_are_computed_from_the_labelled_train_rows(report, rows):
    train = [r for r in rows if r["split"] == "train" and any(r[f"has_{t}"] for t in TASKS)]
    rec = report["recommendations"]
    assert rec["basis"]["samples"] == len(train)
    assert rec["basis"]["sources"] == dict(sorted(collections.Counter(r["source"] for r in train).items()))
    inverse = rec["task_weights"]["inverse_frequency"]
    n = {t: sum(r[f"has_{t}"] for r in train) for t in TASKS}
    assert inverse["lane"] / inverse["sign"] == pytest.approx(n["sign"] / n["lane"], rel=1e-4)
    assert set(rec["mix"]) == {"0.0", "0.5", "1.0"}
    assert rec["mix"]["1.0"]["gtsrb"] == pytest.approx(rec["basis"]["sources"]["gtsrb"] / len(train), abs=1e-6)


# ---- formulas on a hand-made manifest ---------------------------------------------------------


def hand_rows() -> list[dict]:
    """100 sign crops, 25 KITTI frames (det2d + depth), 4 lane frames; all train."""
    rows = []
    for i in range(100):
        rows.append(
            {
                "key": f"gtsrb_train_{i}",
                "source": "gtsrb",
                "split": "train",
                "sequence": f"t{i // 10}",
                "height": 32,
                "width": 32,
                "has_sign": True,
                "sign_class": i % 4,
            }
        )
    for i in range(25):
        rows.append(
            {
                "key": f"kitti_train_{i}",
                "source": "kitti",
                "split": "train",
                "height": 10,
                "width": 10,
                "has_det2d": True,
                "det2d_classes": [0, 0, 4],
                "det2d_count": 3,
                "has_depth": True,
                "depth_points": 10,
                "depth_min_m": 1.0,
                "depth_max_m": 9.0,
            }
        )
    for i in range(4):
        rows.append(
            {
                "key": f"tusimple_train_{i}",
                "source": "tusimple",
                "split": "train",
                "sequence": "c0",
                "height": 10,
                "width": 10,
                "has_lane": True,
                "lane_count": 2 + i % 2,
            }
        )
    return rows


def write_manifests(root: Path, rows: list[dict]) -> Path:
    for source in sorted({r["source"] for r in rows}):
        (root / source).mkdir(parents=True, exist_ok=True)
        full = [
            {
                **{f"has_{t}": False for t in TASKS},
                "id": r["key"],
                "shard": "x.tar",
                "position": 0,
                "offset": 0,
                "orig_height": r["height"],
                "orig_width": r["width"],
                **r,
            }
            for r in rows
            if r["source"] == source
        ]
        write_table(rows_to_table(full), root / source / MANIFEST_NAME)
    return root


def test_task_weights_follow_their_formulas_on_a_hand_made_manifest(tmp_path):
    beta = 0.99
    report = summarize(
        load_manifests(write_manifests(tmp_path, hand_rows())), StatsOptions(beta=beta, alphas=(0.0, 0.5, 1.0))
    )
    n = {"sign": 100, "det2d": 25, "depth": 25, "lane": 4}
    weights = report["recommendations"]["task_weights"]
    assert set(weights) == {"inverse_frequency", "sqrt_inverse_frequency", "effective_number"}

    def normalized(raw):
        mean = sum(raw.values()) / len(raw)
        return pytest.approx({t: v / mean for t, v in raw.items()}, abs=1e-5)

    assert weights["inverse_frequency"] == normalized({t: 1 / v for t, v in n.items()})
    assert weights["sqrt_inverse_frequency"] == normalized({t: 1 / math.sqrt(v) for t, v in n.items()})
    assert weights["effective_number"] == normalized({t: (1 - beta) / (1 - beta**v) for t, v in n.items()})
    # hand values: 1/n normalized -> sign 0.01/0.1225 * 4 ... lane = 0.25 / mean(0.01, 0.04, 0.04, 0.25)
    assert weights["inverse_frequency"]["lane"] == pytest.approx(0.25 / 0.085, abs=1e-5)
    mix = report["recommendations"]["mix"]
    assert mix["1.0"] == pytest.approx({"gtsrb": 100 / 129, "kitti": 25 / 129, "tusimple": 4 / 129}, abs=1e-6)
    assert mix["0.0"] == pytest.approx(dict.fromkeys(("gtsrb", "kitti", "tusimple"), 1 / 3), abs=1e-6)
    assert mix["0.5"] == pytest.approx({"gtsrb": 10 / 17, "kitti": 5 / 17, "tusimple": 2 / 17}, abs=1e-6)


def test_formula_edge_cases():
    assert effective_number(0, 0.9) == 0.0
    assert effective_number(1, 0.9) == pytest.approx(1.0)
    assert effective_number(10**9, 0.999) == pytest.approx(1000.0)
    assert effective_number(5, 0.0) == 1.0
    assert task_weights({"a": 0, "b": 10}, "inverse_frequency") == {"b": 1.0}
    assert temperature_mix({"a": 0, "b": 3}, 0.0) == {"a": 0.0, "b": 1.0}
    with pytest.raises(ValueError):
        effective_number(3, 1.0)


def test_class_histogram_imbalance_rare_and_absent_on_a_hand_made_manifest(tmp_path):
    rows = hand_rows()
    rows[0]["sign_class"] = 42  # one sample of a class that is otherwise absent
    (tmp_path / "gtsrb").mkdir()
    (tmp_path / "gtsrb" / "classes.json").write_text(json.dumps({"sign": [f"s{i}" for i in range(43)]}))
    report = summarize(load_manifests(write_manifests(tmp_path, rows)), StatsOptions(rare_share=0.05))
    sign = report["tasks"]["sign"]["classes"]
    assert sign["counts"]["s42"] == 1 and sign["counts"]["s0"] == 24
    assert sign["imbalance_ratio"] == 25.0
    assert sign["rare"] == ["s42"]
    assert sign["absent"] == [f"s{i}" for i in range(4, 42)]
    # no classes.json for KITTI: ids are named class_<id>
    assert report["tasks"]["det2d"]["classes"]["counts"] == {"class_0": 50, "class_4": 25}


# ---- warnings ---------------------------------------------------------------------------------


def codes(report: dict) -> collections.Counter:
    return collections.Counter(w["code"] for w in report["warnings"])


def test_leakage_is_detected_when_a_sequence_is_in_train_and_val(tmp_path, report):
    assert codes(report)["sequence_leak"] == 0, "the tool's own grouped splits do not leak"
    rows = hand_rows()
    rows[5] = {**rows[5], "split": "val"}  # track t0: now in train and in val
    rows[101] = {**rows[101], "split": "val"}  # KITTI rows have no sequence: never a leak
    report = summarize(load_manifests(write_manifests(tmp_path, rows)))
    leaks = [w for w in report["warnings"] if w["code"] == "sequence_leak"]
    assert len(leaks) == 1 and leaks[0]["source"] == "gtsrb" and leaks[0]["sequences"] == ["t0"]
    assert "t0" in leaks[0]["message"] and "train and val" in leaks[0]["message"]


def test_task_without_validation_samples_and_class_absent_from_a_split_are_warned(tmp_path):
    rows = hand_rows()
    for r in rows:
        if r["source"] == "gtsrb" and r["sign_class"] != 3 and int(r["key"].rsplit("_", 1)[1]) >= 80:
            r["split"] = "val"  # val has classes 0-2 only, every track of them
    report = summarize(load_manifests(write_manifests(tmp_path, rows)))
    no_val = {w["task"] for w in report["warnings"] if w["code"] == "no_validation"}
    assert no_val == {"det2d", "depth", "lane"}
    absent = [w for w in report["warnings"] if w["code"] == "class_absent"]
    assert [(w["task"], w["split"], w["classes"]) for w in absent] == [("sign", "val", ["class_3"])]


def test_a_source_whose_samples_label_no_task_is_warned(tmp_path):
    rows = hand_rows() + [
        {"key": f"kitti_test_{i}", "source": "kitti", "split": "test", "height": 4, "width": 4} for i in range(3)
    ]
    rows += [{"key": "cityscapes_train_0", "source": "cityscapes", "split": "train", "height": 4, "width": 4}]
    report = summarize(load_manifests(write_manifests(tmp_path, rows)))
    unlabelled = [w for w in report["warnings"] if w["code"] == "unlabelled_source"]
    assert [(w["source"], w["split"]) for w in unlabelled] == [("cityscapes", None)]
    assert report["sources"]["cityscapes"]["labelled"] == 0
    assert report["sources"]["kitti"]["labelled"] == 25


def test_a_split_without_samples_is_warned_not_an_error(cli, tmp_path):
    root = write_manifests(tmp_path, hand_rows())
    data = json.loads(cli("stats", root, "--split", "test", "--json", "-").out)
    assert data["samples"] == 0
    assert [w["code"] for w in data["warnings"]][0] == "empty_split"
    assert "the shards have: train" in data["warnings"][0]["message"]


# ---- errors -----------------------------------------------------------------------------------


def test_empty_shards_folder_is_one_clear_error(cli, tmp_path):
    (tmp_path / "shards").mkdir()
    line = cli("stats", tmp_path / "shards").one_error_line()
    assert "no manifest.parquet found" in line and "mtl-data ingest" in line


def test_missing_shards_folder_is_one_clear_error(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = cli("stats").one_error_line()
    assert "shards: no such folder" in line


def test_corrupt_parquet_is_one_clear_error_naming_the_file(cli, shards, tmp_path):
    root = copy_shards(shards, tmp_path)
    path = root / "kitti" / MANIFEST_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    line = cli("stats", root).one_error_line()
    assert str(path) in line and "not a readable Parquet manifest" in line and "--overwrite" in line


def test_manifest_of_an_older_schema_version_is_one_clear_error(cli, shards, tmp_path):
    root = copy_shards(shards, tmp_path)
    path = root / "tusimple" / MANIFEST_NAME
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({VERSION_KEY: b"0"}), path)
    line = cli("stats", root).one_error_line()
    assert str(path) in line and "version 0" in line and "reads version 1" in line
    pq.write_table(table.replace_schema_metadata(None).drop(["lane_count"]), path)
    line = cli("stats", root).one_error_line()
    assert "older layout without a version" in line


def test_manifest_lacking_a_column_is_one_clear_error(shards, tmp_path):
    root = copy_shards(shards, tmp_path)
    path = root / "gtsrb" / MANIFEST_NAME
    pq.write_table(pq.read_table(path).drop(["sign_class"]), path)
    with pytest.raises(MtlDataError, match="lacks columns sign_class"):
        load_manifests(root)


def test_stats_never_opens_a_tar(shards, tmp_path):
    root = copy_shards(shards, tmp_path)
    for tar in root.rglob("*.tar"):
        tar.write_bytes(b"")
    assert summarize(load_manifests(root)) == {**summarize(load_manifests(shards)), "root": str(root)}


# ---- command line -----------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["task", "source"])
def test_terminal_report_fits_100_columns_and_shows_the_shares(cli, shards, by):
    result = cli("stats", shards, "--by", by)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    assert any(line.startswith("gtsrb") and "train" in line for line in lines)
    assert "Recommended source sampling ratios" in result.out and "warning:" in result.out
    if by == "source":
        assert "det2d, kitti: instances per class" in result.out


def test_json_file_equals_the_report_and_dash_prints_only_json(cli, shards, report, tmp_path):
    out = tmp_path / "deep" / "report.json"
    assert cli("stats", shards, "--json", out).code == 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert not list(out.parent.glob("*.part"))
    result = cli("stats", shards, "--json", "-")
    assert json.loads(result.out) == json.loads(json.dumps(report))


def test_alpha_option_sets_the_mix_keys(cli, shards):
    data = json.loads(cli("stats", shards, "--json", "-", "--alpha", "0.3", "--alpha", "1").out)
    assert set(data["recommendations"]["mix"]) == {"0.3", "1.0"}
    assert "x>=0" in cli("stats", shards, "--alpha", "-1").one_error_line()


def test_plots_are_pngs_a_person_can_open(cli, shards, tmp_path):
    result = cli("stats", shards, "--plots", tmp_path / "plots")
    assert result.code == 0, result.err
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == [
        "classes_det2d.png",
        "classes_det3d.png",
        "classes_seg.png",
        "classes_sign.png",
        "shares.png",
        "steering.png",
    ]
    for name in names:
        image = cv2.imread(str(tmp_path / "plots" / name))
        assert image is not None and image.shape[0] > 200 and image.std() > 10


def test_plots_without_matplotlib_is_one_clear_error(cli, shards, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    line = cli("stats", shards, "--plots", tmp_path / "plots").one_error_line()
    assert "mtl-data[plots]" in line


def test_render_cuts_an_overlong_table_cell(report):
    long = json.loads(json.dumps(report))
    long["tasks"]["seg"]["by_source"] = {f"source_{i:03d}": i for i in range(40)}
    assert max(len(line) for line in render(long)) <= WIDTH

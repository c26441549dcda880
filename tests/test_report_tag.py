"""``mtl-train report --layout tag`` and ``tag-ablation`` (Choi et al. 2024, Tables II and III) on
rows built from the paper's own numbers: the relative changes (+ = better), Delta_T (eq. 6) and
the STL row of Table III come out as the paper prints them; FPS is "-" unless measured, and the
device of every measurement is named. The rows have the format ``summarize_run`` gives (checked
against real runs in tests/test_recipe_tag.py)."""

from __future__ import annotations

import json

import pytest

from mtl_data.train.report import render_tag, render_tag_ablation

TITAN = {
    "device": "NVIDIA TITAN RTX",
    "device_type": "cuda",
    "threads": None,
    "precision": "fp32",
    "image_size": [1024, 2048],
    "compiled": False,
}
HEADLINE = {"det3d": ("ds", True), "seg": ("miou", True), "depth": ("abs_rel", False)}


def row(
    name: str,
    mode: str,
    values: dict[str, dict[str, float]],
    *,
    model: str = "tag-realtime",
    fps: float | None = None,
    speed: dict | None = None,
    model_options: dict | None = None,
    stl_runs: dict[str, str] | None = None,
    params_m: float = 33.9,
    gflops: float = 219.0,
) -> dict:
    """A report row as ``summarize_run`` returns it (values in the metrics' own units: DS and mIoU
    in [0, 1], RMSE in metres)."""
    return {
        "run": f"runs/tag/{name}",
        "mode": mode,
        "model": model,
        "steps": 148800,
        "weighting": "static",
        "split": "val",
        "metrics": {
            t: {"metric": HEADLINE[t][0], "value": v.get(HEADLINE[t][0]), "higher_is_better": HEADLINE[t][1]}
            for t, v in values.items()
        },
        "delta_t": None,
        "params_m": params_m,
        "gflops": gflops,
        "samples_per_s": 8.0,
        "weights": dict.fromkeys(values, 1.0),
        "frequencies": dict.fromkeys(values, 1),
        "values": values,
        "stl_runs": stl_runs or {},
        "image_size": [1024, 2048],
        "model_options": model_options or {},
        "speed": None if fps is None else {**(speed or TITAN), "fps": fps},
    }


def paper_rows() -> list[dict]:
    """Table II's STL rows (DLA34) and three MTL rows, and two of Table III's ablations."""
    return [
        row("stl_det3d", "stl", {"det3d": {"ds": 0.5455}}, model="dla34", fps=17.4, params_m=20.1, gflops=246),
        row("stl_seg", "stl", {"seg": {"miou": 0.6638}}, model="dla34", fps=17.8, params_m=19.9, gflops=222),
        row("stl_depth", "stl", {"depth": {"rmse": 5.50}}, model="dla34", fps=17.8, params_m=19.9, gflops=223),
        row(
            "mtl_dla34",
            "symmetric",
            {"det3d": {"ds": 0.3805}, "seg": {"miou": 0.6379}, "depth": {"rmse": 6.15}},
            model="dla34",
            fps=17.3,
            params_m=20.4,
            gflops=285,
        ),
        row(
            "tag_no_tag",
            "symmetric",
            {"det3d": {"ds": 0.5746}, "seg": {"miou": 0.6590}, "depth": {"rmse": 5.49}},
            fps=30.8,
            model_options={"channel_attention": False, "spatial_attention": False},
        ),
        row(
            "tag_no_spatial_attention",
            "symmetric",
            {"det3d": {"ds": 0.5821}, "seg": {"miou": 0.6371}, "depth": {"rmse": 5.62}},
            fps=30.7,
            model_options={"spatial_attention": False},
        ),
        row(
            "tag_full",
            "symmetric",
            {"det3d": {"ds": 0.6121}, "seg": {"miou": 0.6650}, "depth": {"rmse": 5.36}},
            fps=30.2,
        ),
    ]


def table(text: str) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """(header line, run name -> cells split on runs of 2+ spaces, footnote lines)."""
    lines = text.splitlines()
    body = lines[1 : lines.index("")]
    cells = {ln.split("  ")[0].strip(): [c.strip() for c in ln.split("  ") if c.strip()] for ln in body[1:]}
    return body[0], cells, lines[lines.index("") + 1 :]


def test_table_ii_gives_the_papers_relative_changes_and_delta_t():
    header, cells, _ = table(render_tag(paper_rows()))
    for column in (
        "DS (up)",
        "mIoU (up)",
        "RMSE m (down)",
        "Delta_T % (up)",
        "FPS (up)",
        "GFLOPs (down)",
        "params M (down)",
    ):
        assert column in header, column
    # Table II: "Ours" 61.21 (+12.21%) 66.50 (+0.18%) 5.36 (+2.55%) +4.98 30.2 219 33.9
    assert cells["tag_full"] == [
        "tag_full",
        "MTL",
        "tag-realtime",
        "61.21 (+12.21%)",
        "66.50 (+0.18%)",
        "5.36 (+2.55%)",
        "+4.98",
        "30.2",
        "219.0",
        "33.9",
    ]
    # the MTL DLA34 row: 38.05 (-30.25%) 63.79 (-3.90%) 6.15 (-11.82%) -15.32
    assert cells["mtl_dla34"][3:7] == ["38.05 (-30.25%)", "63.79 (-3.90%)", "6.15 (-11.82%)", "-15.32"]
    # "Ours (w/o TAG)": 57.46 (+5.33%) 65.90 (-0.72%) 5.49 (+0.18%) +1.60
    assert cells["tag_no_tag"][3:7] == ["57.46 (+5.33%)", "65.90 (-0.72%)", "5.49 (+0.18%)", "+1.60"]
    # the STL rows: their own value without a change, "-" elsewhere, Delta_T 0
    assert cells["stl_det3d"][1:8] == ["STL", "dla34", "54.55", "-", "-", "0.00", "17.4"]
    assert cells["stl_depth"][3:6] == ["-", "-", "5.50"]


def test_table_iii_has_the_stl_row_the_switches_and_the_papers_delta_t():
    header, cells, notes = table(render_tag_ablation(paper_rows()))
    assert header.split() == ["run", "br", "agg", "alpha_t", "beta", "DS", "mIoU", "RMSE", "m", "FPS", "Delta_T", "%"]
    # "DLA34 (STL) 54.55 66.38 5.50 17.4~17.8 0.00"
    assert cells["STL (dla34)"] == ["STL (dla34)", "54.55", "66.38", "5.50", "17.4~17.8", "0.00"]
    # the switches from model_options over tag-realtime's defaults (all on)
    assert cells["tag_full"] == ["tag_full", "on", "on", "on", "on", "61.21", "66.50", "5.36", "30.2", "+4.98"]
    # Table III, w/o beta: 58.21 63.71 5.62 30.7 +0.17
    assert cells["tag_no_spatial_attention"][1:] == ["on", "on", "on", "off", "58.21", "63.71", "5.62", "30.7", "+0.17"]
    # another model's row has no switches
    assert cells["mtl_dla34"][1:] == ["38.05", "63.79", "6.15", "17.3", "-15.32"]
    assert "FPS (mtl-train speed): batch 1, 1024x2048, fp32, on NVIDIA TITAN RTX" in notes
    assert "STL baselines: det3d stl_det3d, seg stl_seg, depth stl_depth" in notes


def test_fps_is_a_dash_without_a_measurement_and_measurements_on_two_devices_are_told_apart():
    rows = paper_rows()
    rows[-1]["speed"] = None
    cpu = {**TITAN, "device": "AMD EPYC", "device_type": "cpu", "threads": 2, "image_size": [64, 128]}
    rows[-2]["speed"] = {**cpu, "fps": 3.5}
    _, cells, notes = table(render_tag(rows))
    assert cells["tag_full"][7] == "-"
    assert cells["tag_no_spatial_attention"][7] == "3.5 [2]" and cells["stl_seg"][7] == "17.8 [1]"
    assert "FPS [1] (mtl-train speed): batch 1, 1024x2048, fp32, on NVIDIA TITAN RTX" in notes
    assert "FPS [2] (mtl-train speed): batch 1, 64x128, fp32, on AMD EPYC, 2 CPU threads" in notes


def test_without_any_measurement_the_table_says_how_to_measure():
    rows = paper_rows()
    for r in rows:
        r["speed"] = None
    _, cells, notes = table(render_tag(rows))
    assert all(c[7] == "-" for c in cells.values())
    assert "FPS: not measured (mtl-train speed RUN writes RUN/speed.json)" in notes


def test_a_task_without_an_stl_run_is_left_out_of_delta_t_and_said_so():
    rows = [r for r in paper_rows() if r["run"] != "runs/tag/stl_det3d"]
    _, cells, notes = table(render_tag(rows))
    assert cells["tag_full"][3] == "61.21 (-)"
    assert cells["tag_full"][6] == f"{(0.6650 - 0.6638) / 0.6638 * 50 + (5.50 - 5.36) / 5.50 * 50:+.2f}*"
    assert "* tag_full: Delta_T over seg, depth only (det3d: no value or no STL run)" in notes


def test_a_missing_baseline_row_is_taken_from_the_stl_run_the_eval_json_names(tmp_path):
    stl = tmp_path / "stl_det3d"
    stl.mkdir()
    (stl / "eval.json").write_text(json.dumps({"split": "val", "step": 1, "metrics": {"det3d": {"ds": 0.5455}}}))
    rows = [r for r in paper_rows() if r["run"] != "runs/tag/stl_det3d"]
    rows[-1]["stl_runs"] = {"det3d": str(stl)}
    _, cells, notes = table(render_tag(rows))
    assert cells["tag_full"][3:7] == ["61.21 (+12.21%)", "66.50 (+0.18%)", "5.36 (+2.55%)", "+4.98"]
    assert f"tag_full: det3d against {stl} (the STL run of its eval.json)" in notes


def test_a_second_stl_run_of_a_task_is_compared_with_the_first():
    rows = paper_rows()
    rows.insert(3, row("stl_seg_b", "stl", {"seg": {"miou": 0.6704}}, model="resnet34-fpn"))
    _, cells, _ = table(render_tag(rows))
    assert cells["stl_seg_b"][4:7] == ["67.04 (+0.99%)", "-", "+0.99"]
    _, ablation, _ = table(render_tag_ablation(rows))
    assert ablation["stl_seg_b"][1:] == ["-", "67.04", "-", "-", "+0.99"]  # a row of its own


@pytest.mark.parametrize("value", [None, float("nan")])
def test_a_metric_without_a_value_is_a_dash_and_not_a_change(value):
    rows = paper_rows()
    rows[-1]["values"]["det3d"]["ds"] = value
    _, cells, _ = table(render_tag(rows))
    assert cells["tag_full"][3] == "-"
    assert cells["tag_full"][6] == f"{(0.6650 - 0.6638) / 0.6638 * 50 + (5.50 - 5.36) / 5.50 * 50:+.2f}*"

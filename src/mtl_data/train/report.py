"""``mtl-train report``: several runs in one table (the numbers a paper's comparison needs).

One row per run: its mode, model, steps, each task's headline metric (from ``RUN/eval.json``),
Delta_T against its single-task baselines, parameters, GFLOPs and training samples/s. Columns
are the union of the runs' tasks, so single-task baselines sit next to multi-task runs.

* **parameters**: counted from the model the run's checkpoint rebuilds;
* **GFLOPs**: one forward at batch 1 at the run's training size, counted by torch's
  ``FlopCounterMode`` (convolutions and matrix products; a multiply-add is 2 FLOPs, the
  convention of bench/models.py); never guessed;
* **samples/s**: the median of ``metrics.csv``'s ``samples_per_s`` over the log rows after the
  first (the first window includes start-up), i.e. the training throughput of the whole run
  (all ranks).

Three layouts (``mtl-train report --layout``): ``runs`` (the above), ``leang`` (Leang et al.
2020, ``render_leang``) and Choi et al.'s (2024, TAG) two Cityscapes-3D tables:

* ``tag`` (``render_tag``, Table II): a row per run, STL and MTL; DS, mIoU and depth RMSE, each
  with its relative change to the matching single-task run; Delta_T; FPS; GFLOPs; parameters.
* ``tag-ablation`` (``render_tag_ablation``, Table III): the single-task baselines as one row,
  then a row per run with ``tag-realtime``'s four switches (from the run's resolved
  ``model_options``), DS, mIoU, RMSE, FPS and Delta_T.

In both, **the relative change** of a metric is signed as the paper prints it, ``+`` = better:
``(-1)^{l_t} (M_t - M_stl,t) / M_stl,t x 100`` with ``l_t = 1`` for RMSE (Table II: RMSE 5.36
against the STL's 5.50 is "+2.55%"), and **Delta_T** is the mean of the three changes (eq. 6;
+4.98 = (12.21 + 0.18 + 2.55) / 3 in Table II). It is recomputed here on the paper's metrics
(depth RMSE), so it differs from ``eval.json``'s Delta_T, which compares each task's headline
metric (depth AbsRel). The matching single-task run of a task is the first STL run of that task
among the runs reported, else the one the run's ``eval.json`` was compared with (``--stl``).
DS and mIoU are shown in percent as in the paper; RMSE in metres. **FPS** is read from
``RUN/speed.json`` (``mtl-train speed``; "-" when the run was not measured), and the device,
resolution and precision of the measurement are written under the table, never assumed.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from mtl_data.errors import MtlDataError
from mtl_data.train.evaluate import EVAL_FILE
from mtl_data.train.run import METRICS_FILE, load_run
from mtl_data.train.speed import read_speed

#: Choi et al.'s (2024) metric columns: (task, metric, label, higher is better, display scale).
TAG_METRICS = (
    ("det3d", "ds", "DS", True, 100.0),
    ("seg", "miou", "mIoU", True, 100.0),
    ("depth", "rmse", "RMSE m", False, 1.0),
)
#: ``tag-realtime``'s Table III switches and their column labels (high-res branch, aggregation
#: layer, channel attention alpha_t, spatial attention beta).
TAG_SWITCHES = (
    ("branch", "br"),
    ("aggregation", "agg"),
    ("channel_attention", "alpha_t"),
    ("spatial_attention", "beta"),
)


def gflops(model: torch.nn.Module, image_size: tuple[int, int]) -> float:
    """GFLOPs of one forward of ``model`` at batch 1 (module docstring), on the CPU."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *image_size))
    model.train(was_training)
    return counter.get_total_flops() / 1e9


def _metrics_rows(run: Path) -> list[dict]:
    path = run / METRICS_FILE
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _median_speed(rows: list[dict]) -> float | None:
    speeds = [float(r["samples_per_s"]) for r in rows]
    speeds = speeds[1:] or speeds
    return statistics.median(speeds) if speeds else None


def _final_weights(rows: list[dict], tasks: Sequence[str]) -> dict[str, float | None]:
    """Each task's weight at the last logged step where it was labelled and applied (a task
    skipped by asynchronous backpropagation on the very last step still shows its weight)."""
    out: dict[str, float | None] = {}
    for t in tasks:
        applied = [float(r[f"weight/{t}"]) for r in rows if int(r[f"present/{t}"]) > 0 and float(r[f"weight/{t}"]) > 0]
        out[t] = applied[-1] if applied else None
    return out


def summarize_run(run: str | Path) -> dict:
    """One row of the report (module docstring).

    Raises:
        MtlDataError: not a run, no checkpoint, or an unreadable ``eval.json``.
    """
    run = Path(run)
    config, model, state = load_run(run)
    doc = {}
    if (run / EVAL_FILE).is_file():
        try:
            doc = json.loads((run / EVAL_FILE).read_text())
        except ValueError as exc:
            raise MtlDataError(f"{run / EVAL_FILE}: not readable JSON ({exc})") from None
    metrics = {}
    for name, task in model.tasks.items():
        values = (doc.get("metrics") or {}).get(name, {})
        metrics[name] = {
            "metric": task.headline,
            "value": values.get(task.headline),
            "higher_is_better": task.higher_is_better,
        }
    rows = _metrics_rows(run)
    frequencies = config.weighting.options.get("frequencies", {})
    evaluated = doc.get("metrics") or {}
    return {
        "run": str(run),
        "mode": config.mode,
        "model": config.model,
        "steps": int(state["step"]),
        "weighting": config.weighting.name,
        "split": doc.get("split"),
        "metrics": metrics,
        "delta_t": doc.get("delta_t"),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflops": gflops(model, tuple(config.loader.image_size)),
        "samples_per_s": _median_speed(rows),
        "weights": _final_weights(rows, list(model.tasks)),
        "frequencies": {t: int(frequencies.get(t, 1)) for t in model.tasks},
        # every task's summary metrics (not the per-class ones): the tag layouts need depth RMSE
        "values": {t: {k: evaluated.get(t, {}).get(k) for k in task.metric_keys} for t, task in model.tasks.items()},
        "stl_runs": {t: rec.get("run") for t, rec in (doc.get("stl") or {}).items()},
        "image_size": list(config.loader.image_size),
        "model_options": dict(config.model_options),
        "speed": read_speed(run),
    }


def summarize_runs(runs: Sequence[str | Path]) -> list[dict]:
    """``summarize_run`` of each run, in the order given."""
    return [summarize_run(r) for r in runs]


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render_report(rows: Sequence[dict]) -> str:
    """The rows as an aligned text table; task columns are ``<task> <metric> (up|down)``."""
    columns: dict[str, str] = {}
    for row in rows:
        for task, m in row["metrics"].items():
            columns.setdefault(task, f"{task} {m['metric']} {'(up)' if m['higher_is_better'] else '(down)'}")
    header = ["run", "mode", "model", "steps", *columns.values(), "Delta_T %", "params M", "GFLOPs", "samples/s"]
    table = [header]
    for row in rows:
        cells = [Path(row["run"]).name, row["mode"], row["model"], str(row["steps"])]
        cells += [_cell(row["metrics"][t]["value"]) if t in row["metrics"] else "" for t in columns]
        cells += [_cell(row["delta_t"]), f"{row['params_m']:.2f}", f"{row['gflops']:.2f}", _cell(row["samples_per_s"])]
        table.append(cells)
    return _align(table)


def render_leang(rows: Sequence[dict]) -> str:
    """The runs as Leang et al.'s (2020) tables: Table II, one column per run (its weighting
    strategy), rows the tasks' headline metrics and their geometric mean (``search.fitness``:
    a lower-is-better metric enters as the first run's value over its own); Table I, the
    weights (at the last step each task was applied) and asynchronous frequencies each run
    ended with."""
    from mtl_data.train.search import fitness

    names = [f"{Path(r['run']).name} ({r['weighting']})" for r in rows]
    tasks = list(dict.fromkeys(t for r in rows for t in r["metrics"]))
    metric = {t: next(r["metrics"][t] for r in rows if t in r["metrics"]) for t in tasks}
    reference = {
        t: next(
            (r["metrics"][t]["value"] for r in rows if t in r["metrics"] and _cell(r["metrics"][t]["value"]) != "-"),
            None,
        )
        for t in tasks
    }
    table2 = [["Table II", *names]]
    for t in tasks:
        arrow = "up" if metric[t]["higher_is_better"] else "down"
        table2.append(
            [
                f"{t} {metric[t]['metric']} ({arrow})",
                *(_cell(r["metrics"][t]["value"]) if t in r["metrics"] else "" for r in rows),
            ]
        )
    # Over the tasks every run has a value of (a task without labels in the split has none), so
    # the columns compare like with like.
    common = [t for t in tasks if all(t in r["metrics"] and _cell(r["metrics"][t]["value"]) != "-" for r in rows)]
    means = []
    for r in rows:
        values = {t: r["metrics"][t]["value"] for t in common}
        try:
            means.append(_cell(fitness(values, {t: metric[t]["higher_is_better"] for t in common}, reference)))
        except MtlDataError:
            means.append("-")
    table2.append(["geometric mean", *means])
    table2.append([f"  (over {', '.join(common) or 'no task'})", *([""] * len(rows))])
    table1 = [["Table I", *names]]
    for t in tasks:
        table1.append([f"weight {t}", *(_cell(r["weights"].get(t)) for r in rows)])
    for t in tasks:
        table1.append([f"frequency {t}", *(str(r["frequencies"].get(t, "")) for r in rows)])
    return _align(table2) + "\n\n" + _align(table1)


# ---- Choi et al.'s (2024) tables -------------------------------------------------------------------


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _value(row: dict, task: str, metric: str) -> float | None:
    value = (row.get("values") or {}).get(task, {}).get(metric)
    return float(value) if _finite(value) else None


def _change(value: float | None, base: float | None, higher: bool) -> float | None:
    """The relative change in percent, + = better (module docstring); None when undefined."""
    if value is None or base is None or base == 0:
        return None
    return (1.0 if higher else -1.0) * (value - base) / base * 100.0


def _number(value: float) -> str:
    """Parameters and GFLOPs as the paper prints them (one decimal), small ones to 3 digits."""
    return f"{value:.1f}" if abs(value) >= 1 else f"{value:.3g}"


def _eval_value(run: str, task: str, metric: str) -> float | None:
    """``metric`` of ``task`` in ``RUN/eval.json``; None when the file or the value is missing."""
    try:
        doc = json.loads((Path(run) / EVAL_FILE).read_text())
        value = doc["metrics"][task][metric]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if _finite(value) else None


class _TagTable:
    """What both of Choi et al.'s layouts share: each task's single-task baseline, the relative
    changes and Delta_T of a row, and the FPS cells with their footnotes (module docstring)."""

    def __init__(self, rows: Sequence[dict]):
        self.rows = rows
        # task -> the first STL run of that task among the rows: the baseline its row shows
        self.stl_rows: dict[str, dict] = {}
        for row in rows:
            if row["mode"] == "stl":
                self.stl_rows.setdefault(next(iter(row["metrics"])), row)
        self.notes: list[str] = []
        self.fps_groups: dict[tuple, int] = {}
        for row in rows:
            if row.get("speed"):
                self.fps_groups.setdefault(self._fps_key(row["speed"]), len(self.fps_groups) + 1)

    def baseline(self, row: dict, task: str, metric: str) -> float | None:
        """The matching single-task value: an STL row of the table, else the run ``eval.json``
        compared the row with (named in a footnote)."""
        if task in self.stl_rows:
            return _value(self.stl_rows[task], task, metric)
        run = (row.get("stl_runs") or {}).get(task)
        if run is None:
            return None
        value = _eval_value(run, task, metric)
        if value is not None:
            note = f"{Path(row['run']).name}: {task} against {run} (the STL run of its eval.json)"
            if note not in self.notes:
                self.notes.append(note)
        return value

    def is_baseline(self, row: dict, task: str) -> bool:
        return self.stl_rows.get(task) is row

    def changes(self, row: dict) -> dict[str, float]:
        """Task -> relative change (%) of the row's value against its baseline (0 for the
        baseline itself), for the tasks of ``TAG_METRICS`` where both exist."""
        out = {}
        for task, metric, _, higher, _ in TAG_METRICS:
            if task not in row["metrics"] or _value(row, task, metric) is None:
                continue
            if self.is_baseline(row, task):
                out[task] = 0.0
                continue
            change = _change(_value(row, task, metric), self.baseline(row, task, metric), higher)
            if change is not None:
                out[task] = change
        return out

    def delta_t(self, row: dict) -> str:
        """Eq. 6 over the row's tasks with a change; ``*`` when some task of the row has none."""
        changes = self.changes(row)
        if not changes:
            return "-"
        if all(self.is_baseline(row, t) for t in changes):
            return "0.00"  # the baseline against itself, as the paper prints its STL rows
        mine = [t for t, *_ in TAG_METRICS if t in row["metrics"]]
        cell = f"{sum(changes.values()) / len(changes):+.2f}"
        if len(changes) < len(mine):
            cell += "*"
            missing = ", ".join(t for t in mine if t not in changes)
            self.notes.append(
                f"* {Path(row['run']).name}: Delta_T over {', '.join(changes)} only ({missing}: no value or no STL run)"
            )
        return cell

    def metric_cell(self, row: dict, task: str, metric: str, higher: bool, scale: float, relative: bool) -> str:
        value = _value(row, task, metric)
        if task not in row["metrics"] or value is None:
            return "-"
        cell = f"{value * scale:.2f}"
        if relative and not self.is_baseline(row, task):
            change = _change(value, self.baseline(row, task, metric), higher)
            cell += " (-)" if change is None else f" ({change:+.2f}%)"
        return cell

    @staticmethod
    def _fps_key(speed: dict) -> tuple:
        h, w = speed["image_size"]
        return (speed["device"], speed.get("threads"), speed["precision"], h, w, bool(speed.get("compiled")))

    def fps(self, row: dict) -> str:
        speed = row.get("speed")
        if not speed:
            return "-"
        mark = f" [{self.fps_groups[self._fps_key(speed)]}]" if len(self.fps_groups) > 1 else ""
        return f"{speed['fps']:.1f}{mark}"

    def fps_range(self, rows: Sequence[dict]) -> str:
        """Table III's STL cell: the range over the baselines' measurements ("17.4~17.8")."""
        measured = [r for r in rows if r.get("speed")]
        if not measured:
            return "-"
        low, high = min(r["speed"]["fps"] for r in measured), max(r["speed"]["fps"] for r in measured)
        marks = sorted({self.fps_groups[self._fps_key(r["speed"])] for r in measured})
        mark = f" [{','.join(map(str, marks))}]" if len(self.fps_groups) > 1 else ""
        return (f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}~{high:.1f}") + mark

    def footnotes(self) -> list[str]:
        lines = []
        for (device, threads, precision, h, w, compiled), number in self.fps_groups.items():
            where = device + (f", {threads} CPU thread{'s' if threads != 1 else ''}" if threads else "")
            setting = f"batch 1, {h}x{w}, {precision}{', torch.compile' if compiled else ''}, on {where}"
            label = f"[{number}] " if len(self.fps_groups) > 1 else ""
            lines.append(f"FPS {label}(mtl-train speed): {setting}")
        if not self.fps_groups:
            lines.append("FPS: not measured (mtl-train speed RUN writes RUN/speed.json)")
        stl = ", ".join(f"{t} {Path(r['run']).name}" for t, r in self.stl_rows.items())
        lines.append(f"STL baselines: {stl or 'none among the runs'}")
        return lines + list(dict.fromkeys(self.notes))


def _splits(rows: Sequence[dict]) -> str:
    return ", ".join(dict.fromkeys(str(r.get("split") or "-") for r in rows))


def render_tag(rows: Sequence[dict]) -> str:
    """The runs as Choi et al.'s (2024) Table II (module docstring): a row per run, STL and MTL;
    DS, mIoU and depth RMSE each with its relative change to the matching STL run (+ = better),
    Delta_T (eq. 6 on those metrics), FPS (``speed.json``), GFLOPs and parameters."""
    table = _TagTable(rows)
    header = [
        "run",
        "method",
        "model",
        *(f"{label} ({'up' if higher else 'down'})" for _, _, label, higher, _ in TAG_METRICS),
        "Delta_T % (up)",
        "FPS (up)",
        "GFLOPs (down)",
        "params M (down)",
    ]
    lines = [header]
    for row in rows:
        lines.append(
            [
                Path(row["run"]).name,
                "STL" if row["mode"] == "stl" else "MTL",
                row["model"],
                *(table.metric_cell(row, t, m, hi, sc, relative=True) for t, m, _, hi, sc in TAG_METRICS),
                table.delta_t(row),
                table.fps(row),
                _number(row["gflops"]),
                _number(row["params_m"]),
            ]
        )
    sizes = ", ".join(dict.fromkeys(f"{h}x{w}" for h, w in (r["image_size"] for r in rows)))
    notes = [
        f"split {_splits(rows)}; DS and mIoU in %, RMSE in m; (change to the STL run, + = better)",
        f"GFLOPs: one forward at batch 1 at the run's training size ({sizes}), 2 FLOPs per multiply-add "
        "(the paper's GFLOPs match multiply-add counts: half these; docs/training.md)",
        *table.footnotes(),
    ]
    return "Table II (Choi et al. 2024)\n" + _align(lines) + "\n\n" + "\n".join(notes)


def _switches(row: dict) -> dict[str, bool] | None:
    """``tag-realtime``'s switches of a run (its resolved ``model_options`` over the model's
    defaults); None for another model."""
    if row["model"] != "tag-realtime":
        return None
    from mtl_data.train.models.tag import TAGConfig  # the defaults, from the model itself

    defaults = TAGConfig()
    options = row.get("model_options") or {}
    return {name: bool(options.get(name, getattr(defaults, name))) for name, _ in TAG_SWITCHES}


def render_tag_ablation(rows: Sequence[dict]) -> str:
    """The runs as Choi et al.'s (2024) Table III (module docstring): the single-task baselines
    in one row (each task's value from its STL run, FPS as their range), then one row per other
    run with ``tag-realtime``'s four switches (on / off; blank for another model), DS, mIoU,
    RMSE, FPS and Delta_T."""
    table = _TagTable(rows)
    header = ["run", *(label for _, label in TAG_SWITCHES), *(label for *_, label, _, _ in TAG_METRICS)]
    header += ["FPS", "Delta_T %"]
    lines = [header]
    stl = {id(r) for r in table.stl_rows.values()}  # the baselines; another STL run of a task is a row
    stl_rows = [r for r in rows if id(r) in stl]
    if stl_rows:
        models = ", ".join(dict.fromkeys(r["model"] for r in stl_rows))
        values = []
        for task, metric, _, _, scale in TAG_METRICS:
            value = _value(table.stl_rows[task], task, metric) if task in table.stl_rows else None
            values.append("-" if value is None else f"{value * scale:.2f}")
        lines.append([f"STL ({models})", *([""] * len(TAG_SWITCHES)), *values, table.fps_range(stl_rows), "0.00"])
    for row in rows:
        if id(row) in stl:
            continue
        switches = _switches(row)
        cells = ["on" if switches[n] else "off" for n, _ in TAG_SWITCHES] if switches else [""] * len(TAG_SWITCHES)
        lines.append(
            [
                Path(row["run"]).name,
                *cells,
                *(table.metric_cell(row, t, m, hi, sc, relative=False) for t, m, _, hi, sc in TAG_METRICS),
                table.fps(row),
                table.delta_t(row),
            ]
        )
    notes = [
        f"split {_splits(rows)}; DS and mIoU in %, RMSE in m",
        "br: high-resolution branch; agg: aggregation layers (off: pyramid pooling); alpha_t: task channel "
        "attention; beta: spatial attention (tag-realtime's model_options)",
        *table.footnotes(),
    ]
    return "Table III (Choi et al. 2024)\n" + _align(lines) + "\n\n" + "\n".join(notes)


def _align(table: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table)

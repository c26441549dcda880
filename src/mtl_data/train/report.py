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


def gflops(model: torch.nn.Module, image_size: tuple[int, int]) -> float:
    """GFLOPs of one forward of ``model`` at batch 1 (module docstring), on the CPU."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *image_size))
    model.train(was_training)
    return counter.get_total_flops() / 1e9


def _median_speed(run: Path) -> float | None:
    path = run / METRICS_FILE
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        speeds = [float(r["samples_per_s"]) for r in csv.DictReader(f)]
    speeds = speeds[1:] or speeds
    return statistics.median(speeds) if speeds else None


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
        metrics[name] = {"metric": task.headline, "value": values.get(task.headline),
                         "higher_is_better": task.higher_is_better}
    return {"run": str(run), "mode": config.mode, "model": config.model, "steps": int(state["step"]),
            "split": doc.get("split"), "metrics": metrics, "delta_t": doc.get("delta_t"),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflops": gflops(model, tuple(config.loader.image_size)), "samples_per_s": _median_speed(run)}


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
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table)

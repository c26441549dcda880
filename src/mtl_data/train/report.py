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


def _align(table: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table)

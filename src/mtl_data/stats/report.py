"""The imbalance report: every count, histogram, recommendation and warning, as plain data.

``summarize`` turns the manifests into the dict that ``--json`` writes and the terminal and
plot renderers draw. Its layout is a public, versioned contract (``REPORT_VERSION``; add
keys, never rename; documented in docs/conventions.md, "Stats report"):

    {"version", "root", "split", "samples",
     "sources": {source: {"samples", "share", "labelled", "splits": {split: n}, "tasks": {task: n},
                          "split_tasks": {split: {task: n}}}},
     "tasks": {task: {"labelled", "share", "ratio_to_largest", "by_source": {source: n},
                      "by_split": {split: n}, ...task-specific: "classes" | "depth" | "steering" | "lanes"}},
     "recommendations": {"basis": {...}, "beta", "task_weights": {rule: {task: w}},
                         "mix": {str(alpha): {source: p}}},
     "warnings": [{"code", "message", ...}]}

Counts cover the report's split (``split=None``: every split); the split-relation warnings
(no validation samples, a class absent from a split, a sequence in train and val) always look
at every split, since that is what they are about.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl

from mtl_data.schema.sample import IGNORE_INDEX, TASKS
from mtl_data.shards.reader import labels_any
from mtl_data.stats.formulas import WEIGHT_RULES, effective_number, imbalance_ratio, task_weights, temperature_mix
from mtl_data.stats.load import Manifests, split_order

REPORT_VERSION = 1

#: tasks whose labels are classes, the manifest column holding them, and what one count is.
CLASS_TASKS: dict[str, tuple[str, str]] = {
    "det2d": ("det2d_classes", "instances"),
    "det3d": ("det3d_classes", "instances"),
    "seg": ("seg_classes", "pixels"),
    "sign": ("sign_class", "samples"),
}


@dataclass(frozen=True)
class StatsOptions:
    """What a report is computed with (each is a `mtl-data stats` option)."""

    split: str | None = None  # count only this split; None: every split
    rare_share: float = 0.01  # a class under this share of its task's count is "rare"
    beta: float = 0.9999  # effective-number parameter (Cui et al. 2019)
    alphas: tuple[float, ...] = (0.0, 0.5, 1.0)  # temperatures of the source mix
    steer_bin_deg: float = 10.0  # steering histogram bin width, steering-wheel degrees
    straight_deg: float = 5.0  # |angle| at or under this is "near straight"
    examples: int = 5  # names quoted in a warning before "and N more"


def summarize(manifests: Manifests, options: StatsOptions = StatsOptions()) -> dict:
    """The report of ``manifests`` (see the module docstring for its layout)."""
    full = manifests.frame
    scope = full if options.split is None else full.filter(pl.col("split") == options.split)
    total = scope.height
    class_counts = {task: _class_counts(full, task) for task in CLASS_TASKS}
    per_split = _labelled_per_split(full)
    report = {
        "version": REPORT_VERSION,
        "root": str(manifests.root),
        "split": options.split,
        "samples": total,
        "sources": _sources(scope),
        "tasks": _tasks(scope, manifests, class_counts, options),
    }
    report["recommendations"] = _recommendations(scope, options)
    report["warnings"] = list(_warnings(full, manifests, class_counts, per_split, options))
    return report


def _labelled_per_split(frame: pl.DataFrame) -> dict[str, dict[str, int]]:
    """split -> task -> labelled samples, in split order (one pass over the rows)."""
    per = frame.group_by("split").agg(*[pl.col(f"has_{t}").sum().alias(t) for t in TASKS])
    rows = sorted(per.iter_rows(named=True), key=lambda r: split_order(r["split"]))
    return {r.pop("split"): {t: int(r[t]) for t in TASKS} for r in rows}


# ---- share tables


def _sources(scope: pl.DataFrame) -> dict:
    """Samples per source and split, labelled samples and per-task counts (overall and per split)."""
    per = (
        scope.group_by("source", "split")
        .agg(
            pl.len().alias("samples"),
            labels_any().sum().alias("labelled"),
            *[pl.col(f"has_{t}").sum().alias(t) for t in TASKS],
        )
        .sort("source")
    )
    out: dict = {}
    for row in per.iter_rows(named=True):
        src = out.setdefault(
            row["source"],
            {
                "samples": 0,
                "share": 0.0,
                "labelled": 0,
                "splits": {},
                "tasks": dict.fromkeys(TASKS, 0),
                "split_tasks": {},
            },
        )
        src["samples"] += row["samples"]
        src["labelled"] += row["labelled"]
        src["splits"][row["split"]] = row["samples"]
        src["split_tasks"][row["split"]] = {t: row[t] for t in TASKS}
        for t in TASKS:
            src["tasks"][t] += row[t]
    for src in out.values():
        src["share"] = _share(src["samples"], scope.height)
        for key in ("splits", "split_tasks"):
            src[key] = dict(sorted(src[key].items(), key=lambda kv: split_order(kv[0])))
    return out


def _tasks(scope: pl.DataFrame, manifests: Manifests, class_counts: dict, options: StatsOptions) -> dict:
    """Labelled samples per task with their share and the task-specific summaries."""
    by_source = scope.group_by("source").agg(*[pl.col(f"has_{t}").sum().alias(t) for t in TASKS]).sort("source")
    by_split = _labelled_per_split(scope)
    labelled = {t: sum(n[t] for n in by_split.values()) for t in TASKS}
    all_labels, largest = sum(labelled.values()), max(labelled.values(), default=0)
    tasks = {}
    for t in TASKS:
        tasks[t] = {
            "labelled": labelled[t],
            "share": _share(labelled[t], all_labels),
            "ratio_to_largest": round(labelled[t] / largest, 6) if largest else 0.0,
            "by_source": {r["source"]: r[t] for r in by_source.iter_rows(named=True) if r[t]},
            "by_split": {split: n[t] for split, n in by_split.items()},
        }
    for t in CLASS_TASKS:
        counts = class_counts[t]
        if options.split is not None:
            counts = counts.filter(pl.col("split") == options.split)
        tasks[t]["classes"] = _classes(t, counts, manifests, options, tasks[t]["by_source"])
    tasks["depth"]["depth"] = _depth(scope.filter(pl.col("has_depth")))
    tasks["steer"]["steering"] = _steering(scope.filter(pl.col("has_steer")), options)
    tasks["lane"]["lanes"] = _lanes(scope.filter(pl.col("has_lane")))
    return tasks


# ---- class histograms


def _class_counts(full: pl.DataFrame, task: str) -> pl.DataFrame:
    """(source, split, class, count, frames) over every split: count in the task's unit, frames containing it."""
    column, _ = CLASS_TASKS[task]
    rows = full.filter(pl.col(f"has_{task}"))
    if task == "seg":
        rows = rows.select(
            "source", "split", pl.col("seg_classes").alias("class"), pl.col("seg_pixels").alias("count")
        ).explode("class", "count")
    elif full.schema[column] == pl.List:
        rows = (
            rows.select("source", "split", pl.col(column).alias("class")).explode("class").with_columns(count=pl.lit(1))
        )
    else:
        rows = rows.select("source", "split", pl.col(column).alias("class"), count=pl.lit(1))
    return (
        rows.drop_nulls("class")
        .group_by("source", "split", "class")
        .agg(pl.col("count").sum().cast(pl.Int64), pl.len().alias("frames"))
        .with_columns(pl.col("class").cast(pl.Int64))
    )


def class_name(manifests: Manifests, source: str, task: str, class_id: int) -> str:
    """The name of a stored class id, from the source's ``classes.json`` (``class_<id>`` if unknown)."""
    table = manifests.class_names.get(source, {}).get(task, [])
    return table[class_id] if 0 <= class_id < len(table) else f"class_{class_id}"


def _named(counts: pl.DataFrame, manifests: Manifests, task: str, value: str) -> dict[str, dict[str, int]]:
    """source -> class name -> summed ``value``; classes are merged across sources by name."""
    out: dict[str, dict[str, int]] = {}
    agg = counts.group_by("source", "class").agg(pl.col(value).sum()).sort("source", "class")
    for source, cid, n in agg.iter_rows():
        if task == "seg" and cid == IGNORE_INDEX:
            continue
        name = class_name(manifests, source, task, cid)
        out.setdefault(source, {})
        out[source][name] = out[source].get(name, 0) + int(n)
    return out


def _ordered_names(manifests: Manifests, task: str, sources: Iterable[str], seen: Iterable[str]) -> list[str]:
    """Class names in taxonomy order: each labelling source's table, then names found only in the data."""
    names: dict[str, None] = {}
    for source in sorted(sources):
        names.update(dict.fromkeys(manifests.class_names.get(source, {}).get(task, [])))
    names.update(dict.fromkeys(sorted(seen)))
    return list(names)


def _classes(
    task: str, counts: pl.DataFrame, manifests: Manifests, options: StatsOptions, labelling: dict[str, int]
) -> dict:
    """Histogram, imbalance ratio, rare and absent classes and effective numbers of one task."""
    _, unit = CLASS_TASKS[task]
    per_source = _named(counts, manifests, task, "count")
    frames_per_source = _named(counts, manifests, task, "frames")
    merged: dict[str, int] = {}
    frames: dict[str, int] = {}
    for src in per_source:
        for name, n in per_source[src].items():
            merged[name] = merged.get(name, 0) + n
        for name, n in frames_per_source[src].items():
            frames[name] = frames.get(name, 0) + n
    order = _ordered_names(manifests, task, labelling, merged)
    hist = {name: merged.get(name, 0) for name in order}
    total = sum(hist.values())
    # Pixels of one frame are not independent samples: the effective number of a seg class is
    # computed over the frames that contain it; det counts instances, sign samples.
    basis = frames if task == "seg" else hist
    out = {
        "unit": unit,
        "total": total,
        "counts": hist,
        "share": {name: _share(n, total) for name, n in hist.items()},
        "imbalance_ratio": _round(imbalance_ratio(hist)),
        "rare_share": options.rare_share,
        "rare": [name for name, n in hist.items() if 0 < n < options.rare_share * total],
        "absent": [name for name, n in hist.items() if n == 0],
        "effective_number_basis": "frames" if task == "seg" else unit,
        "effective_number": {name: _round(effective_number(basis.get(name, 0), options.beta)) for name in order},
        "by_source": {
            src: {name: per_source[src].get(name, 0) for name in order if per_source[src].get(name, 0)}
            for src in sorted(per_source)
        },
    }
    if task == "seg":
        out["frames"] = {name: frames.get(name, 0) for name in order}
        ignore = counts.filter(pl.col("class") == IGNORE_INDEX)["count"].sum()
        out["ignore_pixels"] = int(ignore or 0)
        out["ignore_share"] = _share(out["ignore_pixels"], total + out["ignore_pixels"])
    return out


# ---- depth, steering, lanes


def _describe(values: np.ndarray, digits: int = 6) -> dict:
    """mean, median, p5, p95, min, max of ``values`` (None each when empty)."""
    if values.size == 0:
        return dict.fromkeys(("mean", "median", "p5", "p95", "min", "max"))
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    return {
        k: round(float(v), digits)
        for k, v in (
            ("mean", values.mean()),
            ("median", median),
            ("p5", p5),
            ("p95", p95),
            ("min", values.min()),
            ("max", values.max()),
        )
    }


def _depth(rows: pl.DataFrame) -> dict:
    """Points per frame, pixel coverage (points / pixels of the stored image) and range."""
    pts = rows["depth_points"].fill_null(0).to_numpy().astype(np.float64)
    pixels = (rows["height"].cast(pl.Int64) * rows["width"].cast(pl.Int64)).to_numpy()
    coverage = pts / np.maximum(pixels, 1)
    per = (
        rows.with_columns(coverage=pl.col("depth_points") / (pl.col("height").cast(pl.Int64) * pl.col("width")))
        .group_by("source")
        .agg(pl.len().alias("frames"), pl.col("depth_points").mean().alias("points"), pl.col("coverage").mean())
        .sort("source")
    )
    return {
        "frames": rows.height,
        "points_per_frame": _describe(pts, 1),
        "coverage": _describe(coverage),
        "range_m": [_round(rows["depth_min_m"].min()), _round(rows["depth_max_m"].max())],
        "by_source": {
            r["source"]: {
                "frames": r["frames"],
                "points_per_frame": round(r["points"], 1),
                "coverage": round(r["coverage"], 6),
            }
            for r in per.iter_rows(named=True)
        },
    }


def _steering(rows: pl.DataFrame, options: StatsOptions) -> dict:
    """Histogram of the steering-wheel angle (degrees, positive left) and the near-straight share."""
    angles = rows["steer_angle_deg"].drop_nulls().to_numpy()
    speeds = rows["steer_speed_kmh"].drop_nulls().to_numpy()
    width = options.steer_bin_deg
    if angles.size:
        # Edges on multiples of the bin width, so histograms of different datasets line up.
        lo, hi = np.floor(angles.min() / width) * width, np.ceil(angles.max() / width) * width
        edges = np.arange(lo, max(hi, lo + width) + width / 2, width)
        counts, _ = np.histogram(angles, edges)
    else:
        edges, counts = np.zeros(0), np.zeros(0, dtype=np.int64)
    straight = int((np.abs(angles) <= options.straight_deg).sum())
    return {
        "frames": int(angles.size),
        "angle_deg": _describe(angles, 3),
        "abs_angle_deg": _describe(np.abs(angles), 3),
        "bin_deg": width,
        "edges_deg": [round(float(e), 6) for e in edges],
        "counts": [int(c) for c in counts],
        "near_straight_deg": options.straight_deg,
        "near_straight": straight,
        "near_straight_share": _share(straight, angles.size),
        "left_share": _share(int((angles > options.straight_deg).sum()), angles.size),
        "right_share": _share(int((angles < -options.straight_deg).sum()), angles.size),
        "speed_kmh": _describe(speeds, 3),
    }


def _lanes(rows: pl.DataFrame) -> dict:
    """How many lanes a labelled frame has."""
    counts = rows["lane_count"].fill_null(0).value_counts().sort("lane_count")
    per = {str(n): int(c) for n, c in counts.iter_rows()}
    values = rows["lane_count"].fill_null(0).to_numpy()
    return {
        "frames": rows.height,
        "lanes_per_frame": per,
        "mean": round(float(values.mean()), 6) if values.size else None,
    }


# ---- recommendations


def _recommendations(scope: pl.DataFrame, options: StatsOptions) -> dict:
    """Task loss weights and source sampling ratios, from the samples a trainer would see.

    The basis is the ``train`` split when the report's scope holds one (weights and mixes are
    for training), else the whole scope; only samples that label at least one task count.
    """
    train = scope.filter(pl.col("split") == "train")
    basis = (train if train.height else scope).filter(labels_any())
    labelled = {t: int(basis[f"has_{t}"].sum()) for t in TASKS}
    per_source = dict(sorted(basis.group_by("source").len().iter_rows()))
    return {
        "basis": {
            "split": "train" if train.height else options.split,
            "samples": basis.height,
            "labelled": labelled,
            "sources": per_source,
        },
        "beta": options.beta,
        "task_weights": {
            rule: {t: round(w, 6) for t, w in task_weights(labelled, rule, options.beta).items()}
            for rule in WEIGHT_RULES
        },
        "mix": {
            str(float(a)): {s: round(p, 6) for s, p in temperature_mix(per_source, a).items()} for a in options.alphas
        },
    }


# ---- warnings


def _warnings(
    full: pl.DataFrame, manifests: Manifests, class_counts: dict, per_split: dict, options: StatsOptions
) -> Iterable[dict]:
    """Problems a user should fix or know before training, most serious first."""
    if options.split is not None and not (full["split"] == options.split).any():
        splits = ", ".join(sorted(set(full["split"]), key=split_order)) or "none"
        yield {
            "code": "empty_split",
            "split": options.split,
            "message": f"no sample in split {options.split!r} (the shards have: {splits})",
        }
    yield from _unlabelled_sources(full)
    yield from _leaks(full, options)
    yield from _no_validation(per_split)
    yield from _absent_from_split(per_split, manifests, class_counts, options)


def _listed(names: list[str], limit: int) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _unlabelled_sources(full: pl.DataFrame) -> Iterable[dict]:
    per = (
        full.group_by("source", "split")
        .agg(pl.len().alias("n"), labels_any().sum().alias("labelled"))
        .sort("source", "split")
    )
    for source in sorted(set(per["source"])):
        rows = per.filter(pl.col("source") == source)
        if rows["labelled"].sum() == 0:
            yield {
                "code": "unlabelled_source",
                "source": source,
                "split": None,
                "message": f"{source}: none of its {rows['n'].sum()} samples labels any task; "
                "it only costs loading time in training",
            }
            continue
        for _, split, n, lab in rows.iter_rows():
            if split in ("train", "val") and lab == 0:
                yield {
                    "code": "unlabelled_source",
                    "source": source,
                    "split": split,
                    "message": f"{source}/{split}: none of its {n} samples labels any task",
                }


def _leaks(full: pl.DataFrame, options: StatsOptions) -> Iterable[dict]:
    both = (
        full.filter(pl.col("split").is_in(["train", "val"]) & pl.col("sequence").is_not_null())
        .group_by("source", "sequence")
        .agg(pl.col("split").n_unique().alias("splits"))
        .filter(pl.col("splits") > 1)
        .sort("source", "sequence")
    )
    for source in sorted(set(both["source"])):
        seqs = both.filter(pl.col("source") == source)["sequence"].to_list()
        yield {
            "code": "sequence_leak",
            "source": source,
            "sequences": seqs,
            "message": f"{source}: {len(seqs)} sequence(s) in both train and val ({_listed(seqs, options.examples)}); "
            "validation scores will be optimistic: re-ingest with a grouped --val-fraction",
        }


def _no_validation(per_split: dict) -> Iterable[dict]:
    for t in TASKS:
        train, val = per_split.get("train", {}).get(t, 0), per_split.get("val", {}).get(t, 0)
        if train and not val:
            yield {
                "code": "no_validation",
                "task": t,
                "message": f"{t}: {train} training samples, none in val; it cannot be evaluated "
                "(ingest with --val-fraction or add a val split)",
            }


def _absent_from_split(
    per_split: dict, manifests: Manifests, class_counts: dict, options: StatsOptions
) -> Iterable[dict]:
    """Classes that occur in one of train/val but not in the other, where both label the task."""
    for task, counts in class_counts.items():
        names = {s: set() for s in ("train", "val")}
        for s in names:
            for per in _named(counts.filter(pl.col("split") == s), manifests, task, "count").values():
                names[s].update(name for name, n in per.items() if n > 0)
        labelled = {s: per_split.get(s, {}).get(task, 0) for s in names}
        for split, other in (("train", "val"), ("val", "train")):
            if not labelled[split] or not labelled[other]:
                continue
            missing = sorted(names[other] - names[split])
            if missing:
                yield {
                    "code": "class_absent",
                    "task": task,
                    "split": split,
                    "classes": missing,
                    "message": f"{task}: {len(missing)} class(es) in {other} but absent from {split} "
                    f"({_listed(missing, options.examples)})",
                }


# ---- numbers


def _share(n: float, total: float) -> float:
    return round(n / total, 6) if total else 0.0


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)

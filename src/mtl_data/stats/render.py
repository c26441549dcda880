"""The report as terminal text: aligned tables with units, no line longer than ``WIDTH``.

Pure functions from the report dict (``report.summarize``) to lines; the CLI echoes them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence

from mtl_data.schema.sample import TASKS
from mtl_data.stats.formulas import WEIGHT_RULES

#: no line of the report is longer, so an 100-column terminal never wraps it.
WIDTH = 100
BAR = 24  # characters of the longest histogram bar


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], width: int = WIDTH) -> list[str]:
    """Rows under headers, text left-aligned and numbers right-aligned, two spaces apart.

    The last column is cut with "..." where a line would exceed ``width``.
    """
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [
        all(_is_number(r[i]) for r in cells if r[i] != "") and any(r[i] != "" for r in cells)
        for i in range(len(headers))
    ]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *cells]:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(row, widths, numeric)]
        line = "  ".join(parts).rstrip()
        lines.append(line if len(line) <= width else line[: width - 3] + "...")
    return lines


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _is_number(text: str) -> bool:
    return (
        text.replace(",", "").replace(".", "").replace("-", "").replace("%", "").replace("x", "").isdigit()
        or text == "-"
    )


def pct(share: float) -> str:
    return f"{100 * share:.1f}%" if share >= 0.001 or share == 0 else f"{100 * share:.2f}%"


def bar(n: float, largest: float) -> str:
    return "#" * max(1, round(BAR * n / largest)) if n > 0 and largest > 0 else ""


def wrapped(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ", break_on_hyphens=False)


def render(report: dict, by: str = "task") -> list[str]:
    """The whole report; ``by="source"`` repeats each class histogram per source."""
    scope = report["split"] or "all splits"
    lines = wrapped(
        f"mtl-data stats: {report['root']} ({len(report['sources'])} sources, {report['samples']:,} samples, {scope})"
    ) + [""]
    for section in (_sources, _tasks, _classes, _depth, _steering, _lanes, _recommendations, _warnings):
        block = section(report, by)
        if block:
            lines += block + [""]
    return lines[:-1]


def _sources(report: dict, by: str) -> list[str]:
    rows = []
    for name, src in report["sources"].items():
        for split, n in src["splits"].items():
            # the tasks this split labels (KITTI's test split has no boxes), from its has_<task> counts
            tasks = src.get("split_tasks", {}).get(split, src["tasks"])
            rows.append(
                (name, split, n, pct(n / report["samples"]), ", ".join(t for t in TASKS if tasks[t]) or "(none)")
            )
    rows.append(("total", "", report["samples"], pct(1.0 if report["samples"] else 0.0), ""))
    return ["Samples per source and split", *table(("source", "split", "samples", "share", "labels"), rows)]


def _tasks(report: dict, by: str) -> list[str]:
    rows = [
        (
            t,
            d["labelled"],
            pct(d["share"]),
            f"{d['ratio_to_largest']:.3f}",
            ", ".join(f"{s} {n:,}" for s, n in d["by_source"].items()) or "-",
        )
        for t, d in report["tasks"].items()
    ]
    return [
        "Labelled samples per task (share of all labels; ratio to the most labelled task)",
        *table(("task", "labelled", "share", "vs largest", "from"), rows),
    ]


def _classes(report: dict, by: str) -> list[str]:
    lines: list[str] = []
    for task, data in report["tasks"].items():
        classes = data.get("classes")
        if not classes or not classes["total"]:
            continue
        if by == "source":  # effective numbers are of the merged counts: not shown per source
            for src, counts in classes["by_source"].items():
                lines += _histogram(f"{task}, {src}", classes, counts, None)
        else:
            lines += _histogram(task, classes, classes["counts"], classes["effective_number"])
        ratio = classes["imbalance_ratio"]
        lines += wrapped(f"imbalance (max/min of present classes): {ratio:,.1f}x" if ratio else "imbalance: -", "  ")
        if classes["rare"]:
            lines += wrapped(
                f"rare (under {pct(classes['rare_share'])} of the {classes['unit']}): {_listed(classes['rare'])}", "  "
            )
        if classes["absent"]:
            lines += wrapped(f"absent ({len(classes['absent'])} classes): {_listed(classes['absent'])}", "  ")
        if "ignore_pixels" in classes:
            lines.append(
                f"  ignore (255) pixels: {classes['ignore_pixels']:,} "
                f"({pct(classes['ignore_share'])} of labelled pixels)"
            )
        lines.append("")
    return lines[:-1]


def _listed(names: list[str], limit: int = 12) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _histogram(title: str, classes: dict, counts: dict, effective: dict | None) -> list[str]:
    """One class histogram (present classes only), with effective numbers where given."""
    total = sum(counts.values())
    largest = max(counts.values(), default=0)
    unit = classes["unit"]
    headers = ("class", unit, "share", f"eff. n ({classes['effective_number_basis']})", "")
    rows = [
        (name[:34], n, pct(n / total), effective[name] if effective else None, bar(n, largest))
        for name, n in counts.items()
        if n
    ]
    if effective is None:
        headers, rows = headers[:3] + headers[4:], [r[:3] + r[4:] for r in rows]
    return [f"{title}: {unit} per class ({total:,} {unit})", *table(headers, rows)]


def _depth(report: dict, by: str) -> list[str]:
    depth = report["tasks"]["depth"]["depth"]
    if not depth["frames"]:
        return []
    pts, cov = depth["points_per_frame"], depth["coverage"]
    rows = [
        (
            "all",
            depth["frames"],
            pts["mean"],
            pts["median"],
            pts["min"],
            pts["max"],
            pct(cov["mean"]),
            pct(cov["median"]),
        )
    ]
    rows += [
        (s, d["frames"], d["points_per_frame"], None, None, None, pct(d["coverage"]), None)
        for s, d in depth["by_source"].items()
    ]
    lo, hi = depth["range_m"]
    return [
        f"depth: points per frame and pixel coverage (range {lo:.1f} .. {hi:.1f} m)",
        *table(("source", "frames", "mean pts", "median", "min", "max", "coverage", "median cov."), rows),
    ]


def _steering(report: dict, by: str) -> list[str]:
    steer = report["tasks"]["steer"]["steering"]
    if not steer["frames"]:
        return []
    edges, counts = steer["edges_deg"], steer["counts"]
    largest = max(counts)
    rows = [
        (f"{lo:+.0f} .. {hi:+.0f}", n, pct(n / steer["frames"]), bar(n, largest))
        for lo, hi, n in zip(edges[:-1], edges[1:], counts)
        if n
    ]
    a = steer["abs_angle_deg"]
    return [
        f"steer: steering-wheel angle, degrees (+ = left), {steer['frames']:,} frames",
        *table(("angle deg", "frames", "share", ""), rows),
        f"  near straight (|angle| <= {steer['near_straight_deg']:g} deg): {pct(steer['near_straight_share'])}; "
        f"left {pct(steer['left_share'])}, right {pct(steer['right_share'])}; "
        f"|angle| median {a['median']:.1f}, p95 {a['p95']:.1f} deg",
    ]


def _lanes(report: dict, by: str) -> list[str]:
    lanes = report["tasks"]["lane"]["lanes"]
    if not lanes["frames"]:
        return []
    rows = [(n, c, pct(c / lanes["frames"])) for n, c in lanes["lanes_per_frame"].items()]
    return [f"lane: lanes per frame (mean {lanes['mean']:.2f})", *table(("lanes", "frames", "share"), rows)]


def _recommendations(report: dict, by: str) -> list[str]:
    rec = report["recommendations"]
    basis = rec["basis"]
    weights = rec["task_weights"]
    tasks = [t for t in TASKS if any(t in w for w in weights.values())]
    if not tasks:
        return []
    lines = wrapped(
        f"Recommended task loss weights, mean 1 (from {basis['samples']:,} labelled samples, "
        f"{basis['split'] or 'all splits'}; JSON: recommendations.task_weights)"
    )
    lines += table(("rule", *tasks), [(rule, *[weights[rule].get(t) for t in tasks]) for rule in weights])
    for rule in weights:
        lines += wrapped(
            f"{rule}: {WEIGHT_RULES[rule].explain}"
            + (f" (beta {rec['beta']:g})" if rule == "effective_number" else ""),
            "  ",
        )
    sources = list(basis["sources"])
    lines += ["", "Recommended source sampling ratios p ~ n^alpha (JSON: recommendations.mix[alpha])"]
    lines += table(("alpha", *sources), [(alpha, *[pct(mix[s]) for s in sources]) for alpha, mix in rec["mix"].items()])
    lines += wrapped(
        "alpha 1 samples in proportion to size (the largest source dominates), alpha 0 uniformly "
        "over sources; 0.5 is a common compromise",
        "  ",
    )
    return lines


def _warnings(report: dict, by: str) -> list[str]:
    lines = [f"Warnings ({len(report['warnings'])})"] if report["warnings"] else []
    for warning in report["warnings"]:
        lines += wrapped(f"warning: {warning['message']}", "  ")
    return lines

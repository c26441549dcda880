"""PNG charts of a report, for a person to look at (``mtl-data stats --plots DIR``).

matplotlib is an optional extra (``pip install mtl-data[plots]``); it is imported here only,
with the non-interactive Agg backend, so the report itself never needs it. Files are written
to a temporary name and renamed.
"""

from __future__ import annotations

import io
from pathlib import Path

from mtl_data.errors import MtlDataError
from mtl_data.files import make_dirs, write_atomic
from mtl_data.schema.sample import TASKS


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MtlDataError("--plots needs matplotlib: pip install 'mtl-data[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(report: dict, out_dir: Path) -> list[Path]:
    """Write the charts of ``report`` into ``out_dir``; returns the files written, sorted.

    ``shares.png``: labelled samples per task, stacked by source, and samples per source;
    ``classes_<task>.png``: the class histogram of each class task with labels (log scale);
    ``steering.png``: the steering-angle histogram, where steering is labelled.
    """
    plt = _pyplot()
    out_dir = make_dirs(out_dir)  # OutputError naming it when it cannot be made
    written = [_save(plt, _shares(plt, report), out_dir / "shares.png")]
    for task, data in report["tasks"].items():
        if data.get("classes", {}).get("total"):
            written.append(_save(plt, _classes(plt, task, data["classes"]), out_dir / f"classes_{task}.png"))
    if report["tasks"]["steer"]["steering"]["frames"]:
        written.append(_save(plt, _steering(plt, report["tasks"]["steer"]["steering"]), out_dir / "steering.png"))
    return sorted(written)


def _save(plt, fig, path: Path) -> Path:
    buffer = io.BytesIO()
    # A fixed Software tag and no date keep the files the same for the same report.
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": "mtl-data"})
    plt.close(fig)
    return write_atomic(path, buffer.getvalue())


def _shares(plt, report: dict):
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=(2, 1))
    sources = list(report["sources"])
    bottom = [0] * len(TASKS)
    for source in sources:
        counts = [report["tasks"][t]["by_source"].get(source, 0) for t in TASKS]
        left.bar(TASKS, counts, bottom=bottom, label=source)
        bottom = [b + c for b, c in zip(bottom, counts)]
    for i, t in enumerate(TASKS):
        left.annotate(f"{100 * report['tasks'][t]['share']:.1f}%", (i, bottom[i]), ha="center", va="bottom", fontsize=8)
    left.set_ylim(0, max(bottom + [1]) * 1.12)  # room for the share labels
    left.set_title("labelled samples per task (share of all labels)")
    left.set_ylabel("samples")
    left.legend(fontsize=8)
    right.bar(sources, [report["sources"][s]["samples"] for s in sources], color="grey")
    for i, s in enumerate(sources):
        right.annotate(
            f"{100 * report['sources'][s]['share']:.1f}%",
            (i, report["sources"][s]["samples"]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    right.set_ylim(0, max([report["sources"][s]["samples"] for s in sources] + [1]) * 1.12)
    right.set_title("samples per source")
    right.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    return fig


def _classes(plt, task: str, classes: dict):
    names = list(classes["counts"])
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.22 * len(names) + 1)))
    ax.barh(names, [classes["counts"][n] for n in names])
    ax.invert_yaxis()
    ax.set_xscale("symlog")
    ratio = classes["imbalance_ratio"]
    ax.set_title(
        f"{task}: {classes['unit']} per class (imbalance {ratio:,.1f}x)"
        if ratio
        else f"{task}: {classes['unit']} per class"
    )
    ax.set_xlabel(f"{classes['unit']} (log scale)")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


def _steering(plt, steer: dict):
    fig, ax = plt.subplots(figsize=(8, 4))
    edges = steer["edges_deg"]
    ax.stairs(steer["counts"], edges, fill=True)
    ax.set_title(
        f"steering-wheel angle, {steer['frames']} frames "
        f"({100 * steer['near_straight_share']:.1f}% within +-{steer['near_straight_deg']:g} deg)"
    )
    ax.set_xlabel("degrees (+ = left)")
    ax.set_ylabel("frames")
    fig.tight_layout()
    return fig

"""The imbalance report over manifests (polars; never opens a tar, never imports torch).

``load_manifests`` reads and checks ``shards/*/manifest.parquet``; ``summarize`` computes the
report dict (the JSON of ``mtl-data stats --json``, with the ``recommendations`` the trainer
reads); ``render`` turns it into terminal tables and ``write_plots`` into PNG charts.
"""

from mtl_data.stats.load import Manifests, load_manifests
from mtl_data.stats.render import render
from mtl_data.stats.report import REPORT_VERSION, StatsOptions, summarize


def write_plots(report: dict, out_dir):
    """PNG charts of ``report`` (imports matplotlib, an optional extra, only when called)."""
    from mtl_data.stats.plots import write_plots as write

    return write(report, out_dir)


__all__ = ["REPORT_VERSION", "Manifests", "StatsOptions", "load_manifests", "render", "summarize", "write_plots"]

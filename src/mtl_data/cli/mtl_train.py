"""``mtl-train``: the training side's command line (thin Click commands over ``mtl_data.train``).

Today: ``mtl-train score``, which checks any model's exported predictions against the shards
with this project's metrics (each checked against its benchmark's official tool in the tests).
Training, evaluation, prediction and reports arrive as further commands of this group.
"""

from __future__ import annotations

from pathlib import Path

import click

from mtl_data import __version__
from mtl_data.cli.runner import run
from mtl_data.errors import MtlDataError
from mtl_data.files import write_atomic


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mtl-train")
def cli() -> None:
    """Train and evaluate multi-task networks on mtl-data shards (needs the 'train' extra)."""


@cli.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", default="val", show_default=True, help="the split the predictions are for")
@click.option("--predictions", "pred_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="a predictions folder: seg/, depth/, det3d/ (one file per sample), det2d.json, lane.json, "
                   "steer.csv, sign.csv")
@click.option("--task", "tasks", multiple=True, help="score only this task (repeatable); default: every task found")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write the result as JSON here ('-' for stdout only)")
def score(shards: Path, split: str, pred_dir: Path, tasks: tuple[str, ...], json_path: Path | None) -> None:
    """Score the predictions in --predictions against the SHARDS' labels of --split.

    Prints one line per task and, with --json, writes {"split", "metrics": {task: {...}}} (the
    keys: seg miou, pixel_acc; depth abs_rel, rmse, delta1; det2d map50, map; det3d ds; steer
    mae_deg; sign top1; lane accuracy, fp, fn, iou; plus per-class values).
    """
    from mtl_data.train.score import render, score as run_score, to_json

    result = run_score(shards, split, pred_dir, tasks=tasks or None)
    text = to_json(result)
    if json_path is not None and str(json_path) == "-":
        click.echo(text, nl=False)
        return
    click.echo(render(result))
    if json_path is not None:
        try:
            write_atomic(json_path, text)
        except OSError as exc:
            raise MtlDataError(f"{json_path}: cannot write the result ({exc.strerror or exc})") from None
        click.echo(f"-> {json_path}")


def main(argv: list[str] | None = None) -> None:
    """Run the ``mtl-train`` CLI; user errors become one line on stderr and a non-zero exit."""
    try:
        import torch  # noqa: F401  (the training side needs it: say so in one line, not a traceback)
    except ImportError as exc:
        click.echo(f"error: mtl-train needs torch ({exc}): pip install 'mtl-data[train]'", err=True)
        raise SystemExit(1) from None
    run(cli, argv, "mtl-train")

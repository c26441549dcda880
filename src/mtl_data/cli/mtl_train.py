"""``mtl-train``: the training side's command line (thin Click commands over ``mtl_data.train``).

Today: ``mtl-train score`` checks any model's exported predictions against the shards with this
project's metrics (each checked against its benchmark's official tool in the tests);
``mtl-train predict`` writes a freshly built model's predictions (benchmark files and pictures);
``mtl-train models`` lists what can be built. Training, evaluation and reports arrive as
further commands of this group.
"""

from __future__ import annotations

from pathlib import Path

import click

from mtl_data import __version__
from mtl_data.cli.runner import image_size_option, run
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


@cli.command()
@click.option("--shards", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="the shards root to predict")
@click.option("--model", "model_name", default="resnet18-fpn", show_default=True,
              help="a registered model (see `mtl-train models`)")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="encoder ImageNet weights: a torchvision state dict file you have")
@click.option("--split", default="val", show_default=True)
@click.option("--tasks", default=None, help="comma-separated; default: every task the split labels")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="the predictions folder to write")
@click.option("--image-size", callback=image_size_option, default="256x512", show_default=True, help="HxW")
@click.option("--letterbox/--stretch", default=True, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="seeds the initialisation")
@click.option("--overlays/--no-overlays", default=True, show_default=True, help="also draw overlays/<key>.jpg")
@click.option("--overwrite", is_flag=True, help="replace an existing --out")
def predict(shards: Path, model_name: str, weights: Path | None, split: str, tasks: str | None, out_dir: Path,
            image_size: tuple[int, int], letterbox: bool, batch_size: int, workers: int, seed: int, overlays: bool,
            overwrite: bool) -> None:
    """Write a freshly built model's predictions of a split in the benchmarks' formats.

    Until training lands the network is untrained (its encoder from --weights if given): this
    checks the pipeline from shards to the benchmark files, pictures and `mtl-train score`;
    it is not a result.
    """
    import torch

    from mtl_data.train.data import build_loader
    from mtl_data.train.models import create_model
    from mtl_data.train.predict import write_predictions

    loader = build_loader(shards, split=split, tasks=None if tasks is None else tasks.split(","), infinite=False,
                          batch_size=batch_size, image_size=image_size, letterbox=letterbox, workers=workers)
    torch.manual_seed(seed)
    model = create_model(model_name, tasks=list(loader.tasks), classes=loader.classes, weights=weights)
    counts = write_predictions(model, model.tasks, loader, shards, out_dir, overwrite=overwrite, overlays=overlays)
    click.echo(f"{model_name} on {split}: " + ", ".join(f"{t} {n}" for t, n in counts.items()) + f" -> {out_dir}")


@cli.command()
def models() -> None:
    """List the registered models and tasks."""
    from mtl_data.train.models import list_models
    from mtl_data.train.tasks import list_tasks

    click.echo("models: " + ", ".join(list_models()))
    click.echo("tasks:  " + ", ".join(list_tasks()))


def main(argv: list[str] | None = None) -> None:
    """Run the ``mtl-train`` CLI; user errors become one line on stderr and a non-zero exit."""
    try:
        import torch  # noqa: F401  (the training side needs it: say so in one line, not a traceback)
    except ImportError as exc:
        click.echo(f"error: mtl-train needs torch ({exc}): pip install 'mtl-data[train]'", err=True)
        raise SystemExit(1) from None
    run(cli, argv, "mtl-train")

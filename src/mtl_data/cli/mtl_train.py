"""``mtl-train``: the training side's command line (thin Click commands over ``mtl_data.train``).

``mtl-train --shards S --out RUN ...`` (no command) trains; ``mtl-train --resume RUN``
continues a run; ``eval RUN`` evaluates a run (metrics, Delta_T against single-task runs);
``predict RUN`` writes its predictions in the benchmarks' formats with pictures; ``report RUN
...`` compares runs in one table; ``speed RUN ...`` measures inference frames/s into
``RUN/speed.json``; ``search`` looks for task weights and asynchronous
frequencies (Leang et al.'s evolutionary meta-learning); ``score`` checks any predictions folder
against the shards; ``models`` lists what can be built. Under ``torchrun`` every process runs
the same command.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import click

from mtl_data import __version__
from mtl_data.cli.runner import image_size_option, run
from mtl_data.files import write_atomic
from mtl_data.train.presets import PRESETS

#: training options -> the config key each sets (``config`` module); None values are not given.
TRAIN_OPTIONS = {
    "shards": "shards",
    "out": "out",
    "tasks": "tasks",
    "mode": "mode",
    "model": "model",
    "weighting": "weighting.name",
    "mix": "loader.mix",
    "stats": "stats",
    "image_size": "loader.image_size",
    "batch_size": "loader.batch_size",
    "frames": "loader.frames",
    "letterbox": "loader.letterbox",
    "steps": "steps",
    "seed": "seed",
    "workers": "loader.workers",
    "device": "device",
    "precision": "precision",
    "compile": "compile",
    "eval_every": "eval.every",
    "save_every": "save_every",
    "log_every": "log_every",
    "weights": "weights",
    "lr": "optim.lr",
}


def _mix(ctx, param, value: str | None):
    """``--mix``: ``proportional``, ``STATS.json#ALPHA`` or ``kitti=0.3,a2d2=0.7``."""
    if value is None or "=" not in value:
        return value
    try:
        return {name: float(ratio) for name, ratio in (part.split("=") for part in value.split(","))}
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected source=ratio pairs separated by commas") from None


def _tasks(ctx, param, value: str | None):
    return None if value is None else tuple(t.strip() for t in value.split(",") if t.strip())


def _model_and_input_options(command):
    """The model and input options that ``train`` and ``search`` share (one definition, one help)."""
    for option in reversed(
        [
            click.option("--model", default=None, help="a registered model (mtl-train models); default resnet18-fpn"),
            click.option("--mix", callback=_mix, default=None, help="proportional, STATS.json#ALPHA or src=ratio,..."),
            click.option(
                "--stats",
                type=click.Path(exists=True, dir_okay=False),
                default=None,
                help="a mtl-data stats --json report: the default mix is its recommendation",
            ),
            click.option(
                "--image-size",
                callback=lambda c, p, v: None if v is None else image_size_option(c, p, v),
                default=None,
                help="HxW, default 256x512",
            ),
            click.option("--letterbox/--stretch", default=None),
            click.option("--batch-size", type=click.IntRange(min=1), default=None),
            click.option(
                "--frames",
                type=click.IntRange(min=1, max=4),
                default=None,
                help="frames per sample: 1 (default) = frame t; N + 1 adds its N previous frames (shards "
                "ingested with --prev-frames N) through the shared encoder, fused by frame_fusion "
                "(--set frame_fusion=sum|conv1x1; MultiNet++)",
            ),
        ]
    ):
        command = option(command)
    return command


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mtl-train")
@click.option("--shards", type=click.Path(exists=True, file_okay=False), help="the shards root to train on")
@click.option("--out", type=click.Path(file_okay=False), help="the run folder to create")
@click.option(
    "--resume",
    "resume_run",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="continue this run from its last checkpoint (only --steps may change)",
)
@click.option(
    "--stop-at",
    type=click.IntRange(min=1),
    default=None,
    help="stop after this step with a checkpoint; --resume continues exactly",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="a TOML training config (options and --set override it)",
)
@click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="any config key, e.g. optim.lr=3e-4 (repeatable)"
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default=None,
    help="a named starting point (thesis: the asymmetric A2D2 configuration of the reference thesis)",
)
@click.option("--tasks", callback=_tasks, help="comma-separated; default: every task the train split labels")
@click.option(
    "--mode",
    type=click.Choice(["symmetric", "asymmetric", "stl"]),
    default=None,
    help="default symmetric; asymmetric: one optimizer per part, each stepping every asymmetric.k labelled samples",
)
@click.option("--weighting", default=None, help="task weighting strategy; default equal")
@_model_and_input_options
@click.option("--steps", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=click.FloatRange(min=0.0), default=None, help="base learning rate (optim.lr)")
@click.option("--seed", type=click.IntRange(min=0), default=None)
@click.option("--workers", type=click.IntRange(min=0), default=None, help="loader worker processes per rank")
@click.option("--device", default=None, help="auto (default), cpu, cuda, cuda:1")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None)
@click.option("--compile/--no-compile", default=None, help="torch.compile the model")
@click.option(
    "--eval-every", type=click.IntRange(min=0), default=None, help="steps between evaluations (0: at the end)"
)
@click.option("--save-every", type=click.IntRange(min=0), default=None, help="steps between checkpoints")
@click.option("--log-every", type=click.IntRange(min=1), default=None)
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="encoder ImageNet weights: a torchvision state dict file you have",
)
@click.pass_context
def cli(ctx, resume_run, stop_at, config_file, sets, preset, **options) -> None:
    """Train and evaluate multi-task networks on mtl-data shards (needs the 'train' extra).

    Without a command: train (--shards and --out, or --resume RUN).
    """
    given = {TRAIN_OPTIONS[k]: v for k, v in options.items() if v is not None}
    if ctx.invoked_subcommand is not None:
        if given or resume_run or stop_at or config_file or sets or preset:
            raise click.UsageError("training options go without a command (mtl-train --shards ... --out ...)")
        return
    if not (given.get("shards") or resume_run or config_file):
        click.echo(ctx.get_help())
        return
    from mtl_data.train.config import resolve
    from mtl_data.train.loop import train

    if resume_run is not None:
        if "out" in given and Path(given["out"]) != Path(resume_run):
            raise click.UsageError("--resume RUN continues RUN: leave out --out")
        config_file = config_file or str(Path(resume_run) / "config.toml")
        given["out"] = str(resume_run)
    if preset is not None and resume_run is not None:
        raise click.UsageError("--resume RUN continues RUN with its own config: leave out --preset")
    config = resolve(
        None if config_file is None else Path(config_file),
        given,
        list(sets),
        preset=None if preset is None else (preset, PRESETS[preset]),
    )
    if not config.shards or not config.out:
        raise click.UsageError("training needs --shards and --out (or --resume RUN, or a --config that sets them)")
    with _log_to_stderr():
        result = train(config, resume=resume_run is not None, progress=True, stop_at=stop_at)
    doc = result["eval"]
    if doc is None:
        click.echo(
            f"{result['run']}: stopped at step {result['step']} of {config.steps}; continue with "
            f"mtl-train --resume {result['run']}"
        )
        return
    click.echo(f"{result['run']}: step {result['step']}, {doc['split']}: " + _headlines(doc))


class _EchoHandler(logging.Handler):
    """Library log records as plain lines on the current stderr (looked up at each record, so
    in-process runs and tests that swap stderr see them)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


@contextlib.contextmanager
def _log_to_stderr() -> Iterator[None]:
    """While training, the library's logs (start-up summary, warnings) go to stderr, one line each."""
    root = logging.getLogger("mtl_data")
    handler, level = _EchoHandler(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _headlines(doc: dict) -> str:
    parts = []
    for task, values in doc["metrics"].items():
        key = next(iter(values))
        parts.append(f"{task} {key} {values[key]:.4f}" if isinstance(values[key], float) else f"{task} {key} -")
    delta = doc.get("delta_t")
    return ", ".join(parts) + ("" if delta is None else f"; Delta_T {delta:+.2f} %")


@cli.command("eval")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", default=None, help="default: the run's eval split")
@click.option(
    "--stl",
    "stl_runs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="a single-task run to compare with (repeatable): Delta_T",
)
@click.option("--checkpoint", "which", type=click.Choice(["last", "best"]), default="last", show_default=True)
@click.option(
    "--predictions",
    "pred_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="also write the predictions (benchmark files and pictures) there",
)
@click.option("--device", default="auto", show_default=True)
def eval_command(
    run_dir: Path, split: str | None, stl_runs: tuple[Path, ...], which: str, pred_dir: Path | None, device: str
) -> None:
    """Evaluate RUN on a split: the scorer's metrics and Delta_T against --stl runs."""
    from mtl_data.train.runs import evaluate_run

    doc = evaluate_run(run_dir, split=split, stl=stl_runs, which=which, predictions=pred_dir, device=device)
    from mtl_data.train.score import render

    click.echo(render(doc))
    if doc.get("delta_t") is not None:
        click.echo(
            f"Delta_T {doc['delta_t']:+.2f} % against "
            + ", ".join(f"{t} {v['metric']} {v['value']:.4f} ({v['run']})" for t, v in doc["stl"].items())
        )
    click.echo(f"-> {doc['path']}")


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", default=None, help="default: the run's eval split")
@click.option(
    "--video",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="predict the frames of a video file or a folder of images (sorted by name) instead of a split, "
    "streamed: a multi-frame run reuses the previous frames' encoder features",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="the predictions folder to write",
)
@click.option("--checkpoint", "which", type=click.Choice(["last", "best"]), default="last", show_default=True)
@click.option("--overlays/--no-overlays", default=True, show_default=True, help="also draw overlays/<key>.png")
@click.option("--overwrite", is_flag=True, help="replace an existing --out")
@click.option("--device", default="auto", show_default=True)
def predict(
    run_dir: Path,
    split: str | None,
    video: Path | None,
    out_dir: Path,
    which: str,
    overlays: bool,
    overwrite: bool,
    device: str,
) -> None:
    """Write RUN's predictions of a split (or of a --video's frames) in the benchmarks' formats
    (and pictures)."""
    from mtl_data.train.runs import predict_run, predict_video

    if video is not None:
        if split is not None:
            raise click.UsageError("--video predicts the video's frames: leave out --split")
        counts = predict_video(
            run_dir, video, out_dir, which=which, overlays=overlays, overwrite=overwrite, device=device
        )
    else:
        counts = predict_run(
            run_dir, out_dir, split=split, which=which, overlays=overlays, overwrite=overwrite, device=device
        )
    click.echo(f"{run_dir}: " + ", ".join(f"{t} {n}" for t, n in counts.items()) + f" -> {out_dir}")


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--layout",
    type=click.Choice(["runs", "leang", "tag", "tag-ablation"]),
    default="runs",
    show_default=True,
    help="runs: one row per run; leang: Leang et al.'s Tables II and I (a column per strategy, metrics "
    "and their geometric mean; the weights and frequencies each ended with); tag: Choi et al.'s Table II "
    "(DS, mIoU, depth RMSE with their change to the STL runs, Delta_T, FPS from mtl-train speed, GFLOPs, "
    "params); tag-ablation: their Table III (tag-realtime's four switches per run)",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="also write the table as JSON",
)
def report(runs: tuple[Path, ...], layout: str, json_path: Path | None) -> None:
    """One table of runs: headline metrics, Delta_T, parameters, GFLOPs, samples/s (or --layout)."""
    from mtl_data.train.report import render_leang, render_report, render_tag, render_tag_ablation, summarize_runs

    rows = summarize_runs(runs)
    renderers = {"runs": render_report, "leang": render_leang, "tag": render_tag, "tag-ablation": render_tag_ablation}
    click.echo(renderers[layout](rows))
    if json_path is not None:
        import json

        write_atomic(json_path, json.dumps(rows, indent=1) + "\n")  # an OutputError names the path


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--image-size",
    callback=lambda c, p, v: None if v is None else image_size_option(c, p, v),
    default=None,
    help="HxW; default: each run's training size",
)
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
@click.option("--compile/--no-compile", "compiled", default=False, show_default=True, help="torch.compile the model")
@click.option(
    "--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="untimed forwards before timing"
)
@click.option("--iters", type=click.IntRange(min=1), default=50, show_default=True, help="forwards per timed window")
@click.option(
    "--repeats", type=click.IntRange(min=1), default=5, show_default=True, help="timed windows; FPS is their median"
)
@click.option("--device", default="auto", show_default=True)
def speed(
    runs: tuple[Path, ...],
    image_size: tuple[int, int] | None,
    precision: str,
    compiled: bool,
    warmup: int,
    iters: int,
    repeats: int,
    device: str,
) -> None:
    """Measure each RUN's inference frames/s at batch 1 and write RUN/speed.json (read by report).

    The model's forward on one image on the device, synchronised on CUDA, the median over
    --repeats windows of --iters forwards after --warmup untimed ones.
    """
    from mtl_data.train.speed import measure_run

    for run_dir in runs:
        doc = measure_run(
            run_dir,
            image_size=image_size,
            precision=precision,
            compile=compiled,
            warmup=warmup,
            iters=iters,
            repeats=repeats,
            device=device,
        )
        h, w = doc["image_size"]
        click.echo(
            f"{run_dir}: {doc['fps']:.1f} frames/s ({doc['ms_per_frame']:.2f} ms/frame, median of {repeats} x "
            f"{iters}), {doc['device']}, {h}x{w}, {precision}{', compiled' if compiled else ''} -> {doc['path']}"
        )


@cli.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", default="val", show_default=True, help="the split the predictions are for")
@click.option(
    "--predictions",
    "pred_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="a predictions folder: seg/, depth/, det3d/ (one file per sample), det2d.json, lane.json, steer.csv, sign.csv",
)
@click.option("--task", "tasks", multiple=True, help="score only this task (repeatable); default: every task found")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="also write the result as JSON here ('-' for stdout only)",
)
def score(shards: Path, split: str, pred_dir: Path, tasks: tuple[str, ...], json_path: Path | None) -> None:
    """Score the predictions in --predictions against the SHARDS' labels of --split.

    Prints one line per task and, with --json, writes {"split", "metrics": {task: {...}}} (the
    keys: seg miou, pixel_acc; depth abs_rel, rmse, delta1; det2d map50, map; det3d ds; steer
    mae_deg; sign top1; lane accuracy, fp, fn, iou; plus per-class values).
    """
    from mtl_data.train.score import render, to_json
    from mtl_data.train.score import score as run_score

    result = run_score(shards, split, pred_dir, tasks=tasks or None)
    text = to_json(result)
    if json_path is not None and str(json_path) == "-":
        click.echo(text, nl=False)
        return
    click.echo(render(result))
    if json_path is not None:
        write_atomic(json_path, text)
        click.echo(f"-> {json_path}")


@cli.command()
def models() -> None:
    """List the registered models, tasks, weighting strategies and frame fusions (--frames > 1)."""
    from mtl_data.train.models import list_models
    from mtl_data.train.models.multiframe import list_fusions
    from mtl_data.train.tasks import list_tasks
    from mtl_data.train.weighting import list_weightings

    click.echo("models:     " + ", ".join(list_models()))
    click.echo("tasks:      " + ", ".join(list_tasks()))
    click.echo("weightings: " + ", ".join(list_weightings()))
    click.echo("fusions:    " + ", ".join(list_fusions()) + " (frame_fusion, with --frames > 1)")


def _weight_ranges(ctx, param, values: tuple[str, ...]):
    """``--weight-range MIN,MAX`` (every task) or ``TASK=MIN,MAX`` (one task), repeatable -> the
    search's ``weight_range`` (None when not given)."""
    if not values:
        return None
    table: dict[str, tuple[float, float]] = {}
    for value in values:
        task, sep, pair = value.rpartition("=")
        try:
            low, high = (float(v) for v in pair.split(","))
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected MIN,MAX or TASK=MIN,MAX, e.g. 0.01,100") from None
        table[task.strip() if sep else "*"] = (low, high)
    return table["*"] if list(table) == ["*"] else table


def _ray_search_engine(**options):
    from mtl_data.train.search_ray import RayEngine

    return RayEngine(**options)


def _in_process_search_engine():
    from mtl_data.train.search import in_process

    return contextlib.nullcontext(in_process)


#: ``search --engine``: name -> a context manager that yields the search's ``Engine``
SEARCH_ENGINES = {"local": _in_process_search_engine, "ray": _ray_search_engine}


@cli.command("search")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="the search folder: trials.csv, best.toml, trials/NNN/",
)
@click.option("--trials", type=click.IntRange(min=1), default=None, help="trials in all (a --resume may raise it)")
@click.option("--steps-per-trial", type=click.IntRange(min=1), default=None, help="optimizer steps of each trial")
@click.option("--population", type=click.IntRange(min=1), default=None, help="initial population and elite [4]")
@click.option("--offspring", type=click.IntRange(min=1), default=None, help="new configurations per generation [4]")
@click.option("--parents", type=click.IntRange(min=1), default=None, help="parents per configuration [2]")
@click.option(
    "--weight-range",
    "weight_range",
    multiple=True,
    callback=_weight_ranges,
    metavar="[TASK=]MIN,MAX",
    help="range of the raw task weights, log scale [0.01,100]; TASK= for one task (repeatable)",
)
@click.option(
    "--max-frequency",
    type=click.IntRange(min=1),
    default=None,
    help="largest asynchronous frequency: a task's loss every 1..N steps [10]",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=None,
    help="seeds the search's draws [0] (the training seed: --set seed=N)",
)
@click.option("--resume", is_flag=True, help="continue the search in --out (options left out keep the search's)")
@click.option("--shards", type=click.Path(exists=True, file_okay=False), help="the shards root to train on")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="a TOML training config for the trials (options and --set override it)",
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="any training config key (repeatable)")
@click.option("--tasks", callback=_tasks, help="comma-separated; default: every task the train split labels")
@_model_and_input_options
@click.option("--lr", type=click.FloatRange(min=0.0), default=None, help="base learning rate (optim.lr)")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="loader worker processes")
@click.option("--device", default=None, help="auto (default), cpu, cuda, cuda:1")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None)
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="encoder ImageNet weights: a torchvision state dict file you have",
)
@click.option(
    "--engine",
    "engine_name",
    type=click.Choice(sorted(SEARCH_ENGINES)),
    default="local",
    show_default=True,
    help="local: trials one after another here; ray: a generation's trials in parallel as Ray tasks "
    "(pip install 'mtl-data[ray]')",
)
@click.option(
    "--address",
    default=None,
    help="--engine ray: the Ray cluster (ray://HOST:10001, HOST:6379, auto); default: a local Ray instance",
)
@click.option(
    "--cpus-per-trial",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="--engine ray: CPUs reserved for each trial [1]",
)
@click.option(
    "--gpus-per-trial",
    type=click.FloatRange(min=0),
    default=None,
    help="--engine ray: GPUs per trial [1 where the cluster has GPUs, else 0]",
)
def search_command(
    out_dir: Path,
    resume: bool,
    config_file: str | None,
    sets: tuple[str, ...],
    engine_name: str,
    address: str | None,
    cpus_per_trial: float | None,
    gpus_per_trial: float | None,
    **options,
) -> None:
    """Search task weights and asynchronous frequencies (Leang et al. 2020): an evolution
    strategy over short trainings, each continuing from the best model so far."""
    from mtl_data.train.config import apply_overrides, apply_sets, resolve
    from mtl_data.train.search import BEST_FILE, read_search, search

    names = ("trials", "steps_per_trial", "population", "offspring", "parents", "weight_range", "max_frequency", "seed")
    chosen = {k: options.pop(k) for k in names if options.get(k) is not None}
    for k in names:
        options.pop(k, None)
    given = {TRAIN_OPTIONS[k]: v for k, v in options.items() if v is not None}
    if resume:
        if config_file is not None:
            raise click.UsageError("--resume continues with the search's own config: leave out --config")
        base, saved = read_search(out_dir)
        base = apply_sets(apply_overrides(base, given), list(sets))  # a change is refused by the search
        settings = {**saved, **chosen}
    else:
        base = resolve(None if config_file is None else Path(config_file), given, list(sets))
        if not base.shards:
            raise click.UsageError("a search needs --shards (or a --config that sets them)")
        if "trials" not in chosen or "steps_per_trial" not in chosen:
            raise click.UsageError("a search needs --trials and --steps-per-trial")
        settings = chosen
    ray_options = {"address": address, "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial}
    ray_options = {k: v for k, v in ray_options.items() if v is not None}
    if ray_options and engine_name != "ray":
        raise click.UsageError(f"--{next(iter(ray_options)).replace('_', '-')} is an option of --engine ray")
    # Ray is started (or found missing: one line) before the search writes anything
    with _log_to_stderr(), SEARCH_ENGINES[engine_name](**ray_options) as engine:
        result = search(
            base, out_dir, resume=resume, engine=engine, on_trial=lambda line, record: click.echo(line), **settings
        )
    best = result.best
    if best is None:
        click.echo(f"{out_dir}: no trial succeeded (their errors are in trials.csv)")
        return
    click.echo(f"best: trial {best.trial:03d}, fitness {best.fitness:.4g} -> {out_dir / BEST_FILE}")


def main(argv: list[str] | None = None) -> None:
    """Run the ``mtl-train`` CLI; user errors become one line on stderr and a non-zero exit."""
    try:
        import torch  # noqa: F401  (the training side needs it: say so in one line, not a traceback)
    except ImportError as exc:
        click.echo(f"error: mtl-train needs torch ({exc}): pip install 'mtl-data[train]'", err=True)
        raise SystemExit(1) from None
    run(cli, argv, "mtl-train")

"""``mtl-data``: thin Click commands over the library (ingest, merge, reshard, inspect, validate, stats,
batches, synth).

User errors (bad data, bad options, existing outputs, an output that cannot be written) print
one ``error: ...`` line on stderr and exit 1 (2 for a bad command line); a traceback means a
bug in this project. Help texts are plain text: docstrings used as help carry no reST markup
(``_plain_help`` strips it from the converters' docstrings).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import re
import shutil
import sys
import textwrap
import typing
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from mtl_data import __version__
from mtl_data.cli.runner import image_size_option, run
from mtl_data.errors import MtlDataError, OutputError
from mtl_data.files import make_dirs, write_atomic
from mtl_data.ingest import CONVERTERS, Converter
from mtl_data.ingest.engine import (
    EXECUTORS,
    ON_ERROR,
    PARTITIONS_DIR,
    IngestOptions,
    ShardSize,
    ingest_lock,
    merge_if_complete,
    merge_partitions,
    partition_dir,
    plan_ingest,
    run_ingest,
)
from mtl_data.ingest.reshard import ReshardConverter, check_out_root, master_folders
from mtl_data.procs import tune_worker_process, usable_cpus
from mtl_data.raysession import ray_session
from mtl_data.schema.sample import MAX_PREV_FRAMES
from mtl_data.schema.taxonomy import TAXONOMY_MODES, read_taxonomy_file
from mtl_data.schema.validate import SPLITS
from mtl_data.shards.codec import IMAGE_FORMATS
from mtl_data.shards.reader import ShardSet, check_shards
from mtl_data.stats import StatsOptions, load_manifests, render, summarize, write_plots
from mtl_data.synth import SYNTHESIZERS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="mtl-data")
def cli() -> None:
    """Convert driving datasets into one sharded multi-task schema, and inspect the result."""


@contextlib.contextmanager
def _writes_to(option: str, path: Path | None = None):
    """Name ``option`` in the advice of an ``OutputError`` raised inside the block; with ``path``,
    an ``OSError`` raised inside becomes one about ``path`` (outputs only inside the block)."""
    try:
        yield
    except OutputError as exc:
        exc.option = exc.option or option
        raise
    except OSError as exc:
        if path is None:
            raise
        raise OutputError(path, exc, option) from exc


# ---- ingest -----------------------------------------------------------------------------------


@cli.group()
def ingest() -> None:
    """Convert a raw dataset folder into shards under --to (one sub-folder per dataset)."""


def _parse_shard_size(ctx, param, value: str) -> ShardSize:
    try:
        return ShardSize.parse(value)
    except MtlDataError:
        raise click.BadParameter(f"{value!r}: expected a sample count (1000) or a size (256MB, 1GB, 512MiB)") from None


def _parse_partition(ctx, param, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not m or not int(m.group(1)) < int(m.group(2)):
        raise click.BadParameter(f"{value!r}: expected I/N with 0 <= I < N, e.g. 0/8 ($SLURM_ARRAY_TASK_ID/8)")
    return int(m.group(1)), int(m.group(2))


def _taxonomy(ctx, param, value: str) -> str:
    if value not in TAXONOMY_MODES and not Path(value).is_file():
        raise click.BadParameter(f"{value!r} is not one of {', '.join(TAXONOMY_MODES)} nor an existing JSON file")
    if value not in TAXONOMY_MODES:
        try:  # checked whole here, also for sources that have no class table (gtsrb, tusimple)
            read_taxonomy_file(Path(value))
        except MtlDataError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


ENGINE_OPTIONS = [
    click.Option(
        ["--engine"],
        type=click.Choice(sorted(EXECUTORS)),
        default="local",
        show_default=True,
        help="where frames are converted: local worker processes, or Ray tasks (pip install 'mtl-data[ray]')",
    ),
    click.Option(
        ["--address"],
        default=None,
        help="--engine ray: the Ray cluster to run on (ray://HOST:10001, HOST:6379, auto); default: a local "
        "Ray instance of --workers CPUs",
    ),
]

COMMON_OPTIONS = [
    click.Option(
        ["--to", "out_root"],
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="shards root; the dataset's shards go to TO/<dataset>/",
    ),
    click.Option(
        ["--split", "splits"],
        multiple=True,
        type=click.Choice(SPLITS),
        help="convert only this output split (repeatable); default: every split present",
    ),
    click.Option(["--workers"], type=click.IntRange(min=1), default=None, help="worker processes (default: all cores)"),
    *ENGINE_OPTIONS,
    click.Option(["--limit"], type=click.IntRange(min=1), default=None, help="at most N frames per split"),
    click.Option(
        ["--image-format"],
        type=click.Choice(IMAGE_FORMATS),
        default="jpg",
        show_default=True,
        help="png keeps the image lossless",
    ),
    click.Option(["--jpeg-quality"], type=click.IntRange(1, 100), default=95, show_default=True),
    click.Option(
        ["--max-side"],
        type=click.IntRange(min=16),
        default=None,
        help="downscale so the longer side is at most N px (labels, depth and K follow)",
    ),
    click.Option(
        ["--prev-frames"],
        type=click.IntRange(0, MAX_PREV_FRAMES),
        default=0,
        show_default=True,
        help="also store up to N frames before each labelled one (members prev1..prevN: t-1 first, the "
        "image's size and format; a missing frame ends them) where the source has them",
    ),
    click.Option(
        ["--shard-size"],
        default="256MB",
        show_default=True,
        callback=_parse_shard_size,
        help="samples per shard (1000) or bytes per shard (256MB, 1GB)",
    ),
    click.Option(
        ["--on-error"],
        type=click.Choice(ON_ERROR),
        default="fail",
        show_default=True,
        help="skip: record bad frames in rejects.jsonl and convert the rest",
    ),
    click.Option(["--overwrite"], is_flag=True, help="rebuild the requested splits even if complete"),
    click.Option(
        ["--partition"],
        default=None,
        callback=_parse_partition,
        help="I/N: an array job converting the I-th of N frame ranges into TO/<dataset>/.partitions/; "
        "the job that completes the last one merges (or: mtl-data merge)",
    ),
    click.Option(
        ["--taxonomy"],
        default="unified",
        show_default=True,
        callback=_taxonomy,
        help="unified, native (each source's own class ids) or a JSON override file",
    ),
]


def _converter_options(options_cls: type) -> list[click.Option]:
    """Click options generated from the fields of a converter's ``Options`` dataclass."""
    hints = typing.get_type_hints(options_cls)
    out = []
    for f in dataclasses.fields(options_cls):
        kind = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        help_ = _plain_text(f.metadata.get("help", ""))
        if "range" in f.metadata:  # (min, max), max excluded
            low, high = f.metadata["range"]
            kind = click.FloatRange(low, high, max_open=True) if kind is float else click.IntRange(low, high - 1)
        if kind is bool:
            out.append(click.Option([flag], is_flag=True, default=f.default, help=help_))
        elif typing.get_origin(kind) is tuple:
            out.append(click.Option([flag], multiple=True, default=f.default, help=help_, show_default=True))
        else:
            out.append(click.Option([flag], type=kind, default=f.default, help=help_, show_default=True))
    return out


def _engine_session(options: IngestOptions) -> contextlib.AbstractContextManager:
    """What the run's engine needs running for the whole run: for ``--engine ray``, Ray started
    or its cluster joined (``raysession.ray_session``) *before* anything is locked or written, so
    Ray missing or a cluster it cannot reach is one line that leaves nothing behind."""
    if options.address is not None and options.engine != "ray":
        raise click.UsageError("--address names a Ray cluster: it needs --engine ray")
    return ray_session(options.address, options.workers) if options.engine == "ray" else contextlib.nullcontext()


def _convert(converter: Converter, out_root: Path, options: IngestOptions) -> None:
    """Run the engine over ``converter`` into ``out_root/<name>``, with a progress bar and a summary."""
    with _engine_session(options):
        _convert_in_session(converter, out_root, options)


def _convert_in_session(converter: Converter, out_root: Path, options: IngestOptions) -> None:
    name = converter.name
    # One run at a time per source folder (per partition folder for array jobs): a second one
    # says who holds it and exits.
    held = out_root / name if options.partition is None else partition_dir(out_root / name, *options.partition)
    with _writes_to("--to"), ingest_lock(held):
        plan = plan_ingest(converter, out_root, options)
        tune_worker_process()  # with --workers 1 this process converts the frames itself
        complete = [sp.split for sp in plan.splits if sp.status == "complete"]
        if complete:
            click.echo(
                f"{name}: {', '.join(complete)} already complete in {plan.out_dir}; left alone "
                f"(pass --overwrite to rebuild)",
                err=True,
            )
        for sp in plan.splits:
            if sp.damage:
                click.echo(f"{name}: {sp.split}: {sp.damage}; rebuilding the split", err=True)
        with tqdm(
            total=plan.remaining,
            unit="frame",
            desc=name,
            disable=plan.remaining == 0,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        ) as bar:
            report = run_ingest(plan, progress=bar.update)
    part = ""
    if options.partition is not None and plan.out_dir != out_root / name:
        index, count = options.partition
        with _writes_to("--to"):
            merged = merge_if_complete(out_root / name, count)
        if merged is None:
            part = f" (partition {index}/{count})"
            click.echo(
                f"{name}: partition {index}/{count} complete; the job that completes the last of the {count} "
                f"merges them, or run: mtl-data merge {out_root / name}",
                err=True,
            )
        else:
            report, plan.out_dir = merged, out_root / name
    if options.prev_frames and converter.no_previous_frames is not None:
        click.echo(f"{name}: no previous frames ({converter.no_previous_frames})")  # once, not per frame
    for split, info in report["splits"].items():
        tasks = ", ".join(f"{t} {n}" for t, n in info["tasks"].items() if n)
        prev = info.get("prev_frames")
        prev = "; previous frames: " + ", ".join(f"{k} x{n}" for k, n in prev.items()) if prev else ""
        click.echo(
            f"{name}/{split}{part}: {info['samples']} samples in {info['shards']} shards, "
            f"{info['rejects']} rejected; labels: {tasks or 'none'}{prev}"
        )
    click.echo(f"-> {plan.out_dir}")


def _ingest_command(name: str) -> click.Command:
    cls = CONVERTERS[name]
    option_names = [f.name for f in dataclasses.fields(cls.Options)]

    def run(root: Path, out_root: Path, taxonomy: str, workers: int | None, **kwargs) -> None:
        try:
            converter = cls(root, cls.Options(**{k: kwargs.pop(k) for k in option_names}), taxonomy)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        options = IngestOptions(splits=tuple(kwargs.pop("splits")) or None, workers=workers or usable_cpus(), **kwargs)
        _convert(converter, out_root, options)

    doc = (cls.__doc__ or "").strip()
    return click.Command(
        name,
        callback=run,
        help=_plain_help(doc),
        params=[
            click.Argument(["root"], type=click.Path(exists=True, file_okay=False, path_type=Path)),
            *COMMON_OPTIONS,
            *_converter_options(cls.Options),
        ],
    )


_RST_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")  # :func:`name`, :py:class:`~a.B`
_RST_LITERAL = re.compile(r"``([^`]+)``")
_RST_QUOTED = re.compile(r"`([^`]+)`_?")


def _plain_text(text: str) -> str:
    """``text`` without reST markup: roles, ``literals``, `quotes` and the ``::`` of literal blocks."""
    text = _RST_ROLE.sub(r"\1", text)
    text = _RST_LITERAL.sub(r"\1", text)
    text = _RST_QUOTED.sub(r"\1", text)
    return re.sub(r"\s*::$", ":", text, flags=re.MULTILINE)


def _plain_help(doc: str) -> str:
    """A docstring as Click help: plain text, and paragraphs with indented lines (layout trees,
    lists) marked so Click does not re-wrap them."""
    paragraphs = _plain_text(doc).split("\n\n")
    return "\n\n".join("\b\n" + p if any(ln.startswith((" ", "*")) for ln in p.splitlines()) else p for p in paragraphs)


for _name in sorted(CONVERTERS):
    ingest.add_command(_ingest_command(_name))


@cli.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False, path_type=Path))
def merge(shards: Path) -> None:
    """Merge the partitions of array jobs (ingest --partition I/N) into the final shards.

    SHARDS is a source folder (TO/<dataset>) or a shards root (each source with partitions).
    The result is byte for byte what one ingest with the same options writes; the partitions
    are removed afterwards.
    """
    folders = (
        [shards]
        if (shards / PARTITIONS_DIR).is_dir()
        else sorted(p.parent for p in shards.glob(f"*/{PARTITIONS_DIR}") if p.is_dir())
    )
    if not folders:
        raise MtlDataError(
            f"{shards}: no partitions to merge (no {PARTITIONS_DIR}/ folder in it or its sub-folders); "
            f"run mtl-data ingest SOURCE RAW --to OUT --partition I/N for each I first"
        )
    for folder in folders:
        with _writes_to("SHARDS"), ingest_lock(folder):
            report = merge_partitions(folder)
        for split, info in report["splits"].items():
            click.echo(
                f"{folder.name}/{split}: {info['samples']} samples in {info['shards']} shards, "
                f"{info['rejects']} rejected"
            )
        click.echo(f"-> {folder}")


# ---- reshard ----------------------------------------------------------------------------------


def _with_params(params: list[click.Parameter]):
    """Add ready-made click options (shared with the ingest commands) to a decorated command."""

    def decorate(fn):
        fn.__click_params__ = [*getattr(fn, "__click_params__", []), *reversed(params)]
        return fn

    return decorate


def _parse_optional_shard_size(ctx, param, value: str | None) -> ShardSize | None:
    return None if value is None else _parse_shard_size(ctx, param, value)


@cli.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--max-side",
    type=click.IntRange(min=16),
    required=True,
    help="downscale so the longer side is at most N px (labels, depth and K follow, as at ingest)",
)
@click.option(
    "--to",
    "out_root",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="shards root of the copies (outside SHARDS); each source goes to TO/<source>/",
)
@click.option("--source", "sources", multiple=True, help="reshard only this source of SHARDS (repeatable)")
@click.option(
    "--split",
    "splits",
    multiple=True,
    type=click.Choice(SPLITS),
    help="reshard only this split (repeatable); default: every split of the master",
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="worker processes (default: all cores)")
@_with_params(ENGINE_OPTIONS)
@click.option(
    "--image-format", type=click.Choice(IMAGE_FORMATS), default=None, help="default: the master's (its ingest.json)"
)
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=None, help="default: the master's")
@click.option(
    "--shard-size",
    default=None,
    callback=_parse_optional_shard_size,
    help="samples per shard (1000) or bytes per shard (256MB); default: the master's",
)
@click.option("--overwrite", is_flag=True, help="rebuild the requested splits even if complete")
def reshard(
    shards: Path,
    max_side: int,
    out_root: Path,
    sources: tuple[str, ...],
    splits: tuple[str, ...],
    workers: int | None,
    engine: str,
    address: str | None,
    overwrite: bool,
    **chosen,
) -> None:
    """Training-resolution copies of existing shards, without the raw data.

    SHARDS is a shards root (every source, or those named by --source) or one source folder;
    each source goes to TO/<source>/. A copy holds what ingesting the raw data with --max-side N
    gives: labels, meta and manifest byte-identical; the image too from a PNG master, one more
    JPEG generation from a JPEG master. Samples already at or below N keep their size. Re-runs
    resume and skip complete splits, as ingest does.
    """
    masters = master_folders(shards, sources)
    converters = [ReshardConverter(master) for master in masters]
    check_out_root(out_root, shards, masters, [c.name for c in converters])
    for converter in converters:
        recorded = converter.recorded_options()
        options = IngestOptions(
            splits=splits or None,
            max_side=max_side,
            overwrite=overwrite,
            workers=workers or usable_cpus(),
            engine=engine,
            address=address,
            **{k: recorded[k] if chosen.get(k) is None else chosen[k] for k in recorded},
        )
        master_side = converter.recorded_max_side()
        if master_side is not None and master_side <= max_side:
            click.echo(
                f"{converter.name}: the master was ingested with --max-side {master_side}, at most {max_side}: "
                "its samples keep their size",
                err=True,
            )
        _convert(converter, out_root, options)


# ---- inspect / validate -----------------------------------------------------------------------

SHARDS_ARG = click.argument("shards", type=click.Path(exists=True, file_okay=False, path_type=Path))
#: SHARDS, ./shards when not given (as for stats); a missing folder is ShardSet.open's one-line error
DEFAULT_SHARDS_ARG = click.argument("shards", type=click.Path(file_okay=False, path_type=Path), default=Path("shards"))


@cli.command()
@DEFAULT_SHARDS_ARG
@click.option("--key", default=None, help="show one sample's members and decoded labels")
@click.option(
    "--pictures",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="with --key: write its image and labels as pictures to this folder (depth as a 16-bit PNG and in colour)",
)
def inspect(shards: Path, key: str | None, pictures: Path | None) -> None:
    """Counts per source, split and task of SHARDS (default ./shards); or one sample in detail (--key)."""
    ss = ShardSet.open(shards)
    if key is None:
        if pictures is not None:
            raise MtlDataError("--pictures draws one sample: give its --key too")
        click.echo(_table(ss.counts()))
        return
    members = ss.read_members(key)
    row = ss.row(key)
    click.echo(f"{key}  ({row['shard']} #{row['position']}, offset {row['offset']})")
    for ext, data in members.items():
        click.echo(f"  {key}.{ext:<12} {len(data):>9,} B")
    sample = ss.read_sample(key, strict=True)
    names = ss.class_tables(sample.source)
    click.echo(
        f"  image {sample.size[1]}x{sample.size[0]} (orig {sample.orig_size[1]}x{sample.orig_size[0]}), "
        f"tasks: {', '.join(sample.tasks) or 'none'}"
    )
    if sample.prev:
        click.echo(f"  previous frames: {len(sample.prev)} (prev1 = t-1 .. prev{len(sample.prev)})")
    if sample.K is not None:
        k = sample.K
        click.echo(f"  K: fx {k[0, 0]:.2f} fy {k[1, 1]:.2f} cx {k[0, 2]:.2f} cy {k[1, 2]:.2f}")
    for line in _label_lines(sample, names):
        click.echo("  " + line)
    if pictures is not None:
        for path in _write_pictures(sample, pictures):
            click.echo(f"  wrote {path}")


def _write_pictures(sample, folder: Path) -> list[Path]:
    """The sample's image and dense labels as pictures any viewer opens: ``KEY.jpg``,
    ``KEY.depth.png`` (16-bit ``round(m * 256)``, the schema-1 member, bit for bit),
    ``KEY.depth_colour.png`` (log depth in TURBO colours, black = no measurement, nearest
    points dilated so that sparse LiDAR stays visible), ``KEY.seg.png`` / ``KEY.lane.png``
    (ids as stored, 8-bit). Returns the paths written."""
    import cv2

    from mtl_data.schema.geometry import MAX_DEPTH_M
    from mtl_data.shards.codec import LABEL_PNG_PARAMS, depth_to_uint16, encode_image
    from mtl_data.train.draw import colorize_depth  # numpy + OpenCV only, no torch

    def png(array: np.ndarray, params=()) -> bytes:
        return cv2.imencode(".png", array, list(params))[1].tobytes()

    out = {f"{sample.key}.jpg": encode_image(sample.image, "jpg", 95)}
    if sample.depth is not None:
        out[f"{sample.key}.depth.png"] = png(depth_to_uint16(sample.depth), LABEL_PNG_PARAMS)
        valid = sample.depth[sample.depth > 0]
        far = float(min(MAX_DEPTH_M, max(2.0, valid.max()))) if valid.size else 100.0
        # one LiDAR point is one pixel: grey-scale erosion spreads each to 5x5, nearest first
        empty = np.finfo(np.float32).max  # what erode pads the border with too
        spread = np.where(sample.depth > 0, sample.depth, empty).astype(np.float32)
        spread = cv2.erode(spread, np.ones((5, 5), np.uint8))
        spread[spread == empty] = 0
        colour = colorize_depth(spread, far, min_m=min(1.0, far / 2))
        out[f"{sample.key}.depth_colour.png"] = png(cv2.cvtColor(colour, cv2.COLOR_RGB2BGR))
    for task in ("seg", "lane"):
        label = getattr(sample, task)
        array = None if label is None else (label if task == "seg" else label.mask)
        if array is not None:
            out[f"{sample.key}.{task}.png"] = png(np.asarray(array, np.uint8), LABEL_PNG_PARAMS)
    return [write_atomic(folder / name, data) for name, data in out.items()]


def _table(df) -> str:
    cols = df.columns
    rows = [[str(v) for v in r] for r in df.iter_rows()]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    fmt = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(cols), *(fmt(r) for r in rows)])


def _label_lines(sample, names: dict[str, list[str]]) -> list[str]:
    lines = []
    for task in ("det2d", "det3d"):
        det = getattr(sample, task)
        if det is None:
            continue
        table = names.get(task, [])
        lines.append(
            f"{task}: {det.boxes.shape[0]} boxes"
            + (f", {det.ignore.shape[0]} ignore regions" if task == "det2d" else "")
        )
        for box, cls in zip(det.boxes, det.classes):
            label = table[cls] if cls < len(table) else str(cls)
            lines.append(f"  {label:<14} [{', '.join(f'{v:.2f}' for v in box)}]")
    if sample.depth is not None:
        valid = sample.depth[sample.depth > 0]
        rng = f", {valid.min():.2f}..{valid.max():.2f} m" if valid.size else ""
        lines.append(f"depth: {valid.size:,} points ({valid.size / sample.depth.size:.1%} of pixels){rng}")
    if sample.seg is not None:
        table = names.get("seg", [])
        ids, counts = np.unique(sample.seg, return_counts=True)
        parts = [
            f"{table[i] if i < len(table) else ('ignore' if i == 255 else i)} {c / sample.seg.size:.0%}"
            for i, c in zip(ids.tolist(), counts.tolist())
        ]
        lines.append(f"seg: {', '.join(parts)}")
    if sample.steer is not None:
        speed = "unknown" if sample.steer.speed_kmh is None else f"{sample.steer.speed_kmh:.1f} km/h"
        lines.append(
            f"steer: {sample.steer.angle_deg:+.2f} deg (+ = left), speed {speed}, bus gap {sample.steer.gap_ms:.1f} ms"
        )
    if sample.notes:
        lines.append(f"notes: {sample.notes}")
    if sample.sign is not None:
        lines.append(f"sign: class {sample.sign.class_id}")
    if sample.lane is not None:
        lines.append(f"lane: {sample.lane.xs.shape[0]} lanes")
    return lines


@cli.command("validate")
@DEFAULT_SHARDS_ARG
def validate_cmd(shards: Path) -> None:
    """Decode every sample of SHARDS (default ./shards), check it against the schema and the manifest.

    Every image is decoded fully: corrupt JPEG data is a problem, not a warning on the terminal.
    Prints one line per problem and exits 1 on any; a progress bar on stderr when it is a terminal.
    """
    ss = ShardSet.open(shards)
    n = ss.manifest.height
    problems = 0
    # miniters=1: tqdm's monitor thread never redraws the bar itself, so nothing but the decoder
    # writes to stderr while check_shards captures it around a decode
    with tqdm(
        total=n,
        unit="sample",
        desc="validate",
        disable=not _is_tty(sys.stderr),
        file=sys.stderr,
        leave=False,
        miniters=1,
    ) as bar:
        for problem in check_shards(ss, progress=bar.update):
            problems += 1
            if bar.disable:
                click.echo(problem)
            else:
                tqdm.write(problem, file=sys.stdout)  # clears and redraws the bar around the line
    if problems:
        raise MtlDataError(f"{shards}: {problems} problem(s) in {n} samples")
    click.echo(f"{shards}: {n} samples OK")


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


# ---- stats ------------------------------------------------------------------------------------


@cli.command()
@click.argument("shards", type=click.Path(path_type=Path), default=Path("shards"))
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=None,
    help="also write the report as JSON (layout in docs/conventions.md); '-' prints only the JSON",
)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="write PNG charts into this folder (needs the 'plots' extra: matplotlib)",
)
@click.option("--split", type=click.Choice(SPLITS), default=None, help="count only this split [default: all]")
@click.option(
    "--by",
    type=click.Choice(["task", "source"]),
    default="task",
    show_default=True,
    help="class histograms over all sources, or one per source",
)
@click.option(
    "--alpha",
    "alphas",
    type=click.FloatRange(min=0),
    multiple=True,
    default=StatsOptions.alphas,
    show_default=True,
    help="temperature of a recommended source mix, p ~ n^alpha (repeatable)",
)
@click.option(
    "--beta",
    type=click.FloatRange(0, 1, max_open=True),
    default=StatsOptions.beta,
    show_default=True,
    help="effective-number parameter (Cui et al. 2019)",
)
@click.option(
    "--rare-share",
    type=click.FloatRange(0, 1),
    default=StatsOptions.rare_share,
    show_default=True,
    help="a class under this share of its task's count is listed as rare",
)
@click.option(
    "--steer-bin",
    "steer_bin_deg",
    type=click.FloatRange(min=0, min_open=True),
    default=StatsOptions.steer_bin_deg,
    show_default=True,
    help="steering histogram bin width, degrees",
)
@click.option(
    "--straight-deg",
    type=click.FloatRange(min=0),
    default=StatsOptions.straight_deg,
    show_default=True,
    help="steering |angle| counted as near straight, degrees",
)
def stats(shards: Path, json_path: Path | None, plots_dir: Path | None, by: str, **options) -> None:
    """Imbalance report of the shards under SHARDS (default ./shards), from the manifests alone.

    Samples per source and split, labelled samples per task, class histograms, depth
    coverage, steering and lane distributions; recommended task loss weights and source
    sampling ratios (the JSON key "recommendations", which mtl-train reads); warnings.
    """
    options["alphas"] = tuple(dict.fromkeys(options["alphas"]))
    report = summarize(load_manifests(shards), StatsOptions(**options))
    text = json.dumps(report, indent=1, ensure_ascii=False) + "\n"
    json_to_stdout = json_path is not None and str(json_path) == "-"
    if json_to_stdout:
        click.echo(text, nl=False)
    else:
        click.echo("\n".join(render(report, by)))
        if json_path is not None:
            with _writes_to("--json", json_path):
                write_atomic(json_path, text)
            click.echo(f"\nJSON report -> {json_path}")
    if plots_dir is not None:
        with _writes_to("--plots", plots_dir):
            paths = write_plots(report, plots_dir)
        for path in paths:
            click.echo(f"plot -> {path}", err=json_to_stdout)  # stdout holds only the JSON then


# ---- batches ----------------------------------------------------------------------------------


@cli.command()
@SHARDS_ARG
@click.option("--split", type=click.Choice(SPLITS), default="train", show_default=True)
@click.option("--tasks", default=None, help="comma-separated tasks [default: every task of the sources]")
@click.option("--mix", default=None, help="'proportional', 'kitti=0.3,a2d2=0.7' or 'STATS.json#ALPHA'")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--image-size", callback=image_size_option, default="256x512", show_default=True, help="HxW")
@click.option("--letterbox", is_flag=True, help="keep the aspect ratio and pad")
@click.option(
    "--batches",
    "count",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="batches to show (training streams are endless)",
)
@click.option("--eval", "evaluate", is_flag=True, help="one evaluation pass (every sample once) instead")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def batches(
    shards: Path,
    split: str,
    tasks: str | None,
    mix: str | None,
    batch_size: int,
    image_size: tuple[int, int],
    letterbox: bool,
    count: int,
    evaluate: bool,
    workers: int,
    seed: int,
) -> None:
    """Stream a few loader batches from SHARDS and show what they hold (needs the 'train' extra).

    The same loader a trainer gets from mtl_data.train.data.build_loader: sources mixed with
    --mix, per-task "present" masks, fixed-shape targets.
    """
    try:
        from mtl_data.train.data import build_loader
    except ImportError as exc:
        raise MtlDataError(f"the loader needs torch ({exc}): pip install 'mtl-data[train]'") from None
    if mix is not None and "=" in mix:
        try:
            mix = {name: float(ratio) for name, ratio in (part.split("=") for part in mix.split(","))}
        except ValueError:
            raise MtlDataError(f"--mix {mix!r}: expected source=ratio pairs separated by commas") from None
    loader = build_loader(
        shards,
        split=split,
        tasks=None if tasks is None else tasks.split(","),
        mix=mix,
        batch_size=batch_size,
        image_size=image_size,
        letterbox=letterbox,
        seed=seed,
        workers=workers,
        infinite=not evaluate,
    )
    click.echo(f"{'evaluation pass' if evaluate else 'training stream'} of {split}: tasks {', '.join(loader.tasks)}")
    click.echo(
        "\n".join(
            textwrap.wrap(
                "sources: " + ", ".join(f"{s} {p:.1%}" for s, p in loader.probs.items()), 100, subsequent_indent="  "
            )
        )
    )
    seen = collections.Counter()
    for i, batch in enumerate(loader):
        if i < count:
            _echo_batch(i, batch)
        seen.update(s or "(padding)" for s in batch["source"])
        if not evaluate and i + 1 == count:
            break
    click.echo(
        "samples per source: "
        + ", ".join(f"{s} {n}" for s, n in sorted(seen.items()))
        + f"; skipped (corrupt) {loader.skipped}"
    )


def _echo_batch(index: int, batch: dict) -> None:
    n = len(batch["key"])
    click.echo(f"batch {index}: {n} samples, image {tuple(batch['image'].shape)} {str(batch['image'].dtype)[6:]}")
    for task, present in batch["present"].items():
        shapes = "; ".join(
            f"{k} {'x'.join(map(str, v.shape))} {str(v.dtype)[6:]}"
            for k, v in batch.items()
            if (k == task or k.startswith(task + "_")) and hasattr(v, "shape")
        )
        text = f"{task:<6} present {int(present.sum())}/{n}: {shapes}"
        click.echo("\n".join(textwrap.wrap(text, 100, initial_indent="  ", subsequent_indent=" " * 10)))


# ---- synth ------------------------------------------------------------------------------------


@cli.command()
@click.argument("dataset", type=click.Choice(sorted(SYNTHESIZERS)))
@click.option(
    "--to",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="folder to write the raw dataset into",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="replace an existing non-empty --to folder")
def synth(dataset: str, out_dir: Path, seed: int, overwrite: bool) -> None:
    """Write a tiny synthetic dataset in DATASET's native layout (for demos and tests).

    It is written into TO.part beside TO and renamed when complete: a failed or interrupted run
    leaves nothing (TO.part is removed, or replaced by the next run).
    """
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise MtlDataError(f"{out_dir}: folder is not empty (pass --overwrite to replace it)")
    partial = out_dir.with_name(out_dir.name + ".part")
    try:
        with _writes_to("--to", partial):
            shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted run
            make_dirs(partial)
            SYNTHESIZERS[dataset](partial, seed=seed)
            if out_dir.exists():
                shutil.rmtree(out_dir)  # empty, or --overwrite
            partial.rename(out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    files = sum(1 for p in out_dir.rglob("*") if p.is_file())
    click.echo(f"{dataset}: wrote {files} files in the native layout -> {out_dir}")


# ---- entry point ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the ``mtl-data`` CLI; user errors become one line on stderr and a non-zero exit."""
    run(cli, argv, "mtl-data")

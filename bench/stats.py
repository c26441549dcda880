"""`mtl-data stats` on a 1,000,000-row manifest, against reading the same columns, one core.

What is compared, and why: design.md section 7 sets "a 1,000,000-row manifest summarized in
<= 3 s" (issue 5: on one core). The manifest is replicated from real ingests: the KITTI, A2D2,
TuSimple and GTSRB fixtures are ingested as they are (A2D2: its semantic part, the bbox frame
has no camera image), and Cityscapes from the real-size frame
that ``bench/ingest_cityscapes.py`` builds from its fixtures. Their rows are repeated with
fresh keys and sequence ids (one sequence per 20 rows) into the mix of the reference report
that motivated the project: GTSRB 78%, KITTI 12%, A2D2 6%, Cityscapes 3.2%, TuSimple 0.8%.
The A2D2 fixture has no bus data, so its replicated rows get steering angles drawn from
N(0, 60) degrees: without them the steering histogram would cost nothing. Rows go to
``<tmp>/shards/<source>/manifest.parquet`` written as the ingest writes them.

Floor: reading the columns the report uses from those files into memory (``pl.read_parquet``),
the physical minimum of any report. Measured: ``load_manifests`` + ``summarize`` (what
``mtl-data stats`` does before printing), and the whole CLI in-process with its terminal output
discarded. polars runs on one thread (``POLARS_MAX_THREADS=1``, set before it is imported) and
the process is pinned to one core. Times and the ratio are CPU time of the process
(``bench/common.py``; the target's 3 s is read on it), wall time is printed for information.
Best of ``--repeats``; prints, never asserts.

Run: ``.venv/bin/python bench/stats.py --rows 1000000 --repeats 3``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ["POLARS_MAX_THREADS"] = "1"  # before polars is imported anywhere
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import ingest_cityscapes  # noqa: E402

from mtl_data.cli.main import main as cli_main  # noqa: E402
from mtl_data.ingest import create_converter  # noqa: E402
from mtl_data.ingest.a2d2 import A2D2Options  # noqa: E402
from mtl_data.ingest.engine import IngestOptions, plan_ingest, run_ingest  # noqa: E402
from mtl_data.shards.manifest import MANIFEST_NAME, SCHEMA, write_table  # noqa: E402
from mtl_data.stats import load_manifests, summarize  # noqa: E402
from mtl_data.stats.load import COLUMNS  # noqa: E402

#: share of the rows per source: the reference report's mix (GTSRB 78%, KITTI 12%, TuSimple 0.8%)
MIX = {"gtsrb": 0.78, "kitti": 0.12, "a2d2": 0.06, "cityscapes": 0.032, "tusimple": 0.008}
#: fixture roots ingested as they are, relative to the fixtures folder
ROOTS = {"kitti": "kitti/object", "a2d2": "a2d2", "tusimple": "tusimple/train_set", "gtsrb": "gtsrb/official"}


def real_ingests(fixtures: Path, out: Path, tmp: Path) -> None:
    """Ingest the fixtures (Cityscapes: 4 copies of the real-size frame) into ``out``."""
    roots = {name: fixtures / rel for name, rel in ROOTS.items()}
    frame = ingest_cityscapes.build_frame(ingest_cityscapes.fixture_paths(fixtures), tmp / "cs_frame", 0.5, 0.002)
    roots["cityscapes"] = ingest_cityscapes.build_raw(frame, tmp / "cs_raw", 4)
    # the A2D2 fixture's bbox frame has no camera image (an input error): its semantic part alone
    options = {"a2d2": A2D2Options(parts=("camera_lidar_semantic",))}
    for name, root in roots.items():
        run_ingest(plan_ingest(create_converter(name, root, options.get(name)), out, IngestOptions(workers=1)))


def replicate(real: Path, out: Path, rows: int, seed: int = 0) -> None:
    """Write ``rows`` manifest rows under ``out``, repeating each source's real rows in the ``MIX``."""
    rng = np.random.default_rng(seed)
    for source, share in MIX.items():
        base = pl.read_parquet(real / source / MANIFEST_NAME)
        n = max(1, round(rows * share))
        idx = np.arange(n) % base.height
        df = base[idx].with_columns(
            key=pl.format("{}_{}", pl.col("key"), pl.Series(np.arange(n))),
            sequence=pl.format("{}_{}", pl.col("source"), pl.Series(np.arange(n) // 20)),
            split=pl.Series(np.where(rng.random(n) < 0.9, "train", "val")),
        )
        if source == "a2d2":
            df = df.with_columns(
                has_steer=pl.lit(True),
                steer_angle_deg=pl.Series(rng.normal(0, 60, n)),
                steer_speed_kmh=pl.Series(rng.uniform(0, 120, n)),
            )
        (out / source).mkdir(parents=True)
        write_table(
            pa.Table.from_batches(df.to_arrow().cast(SCHEMA).to_batches(), schema=SCHEMA), out / source / MANIFEST_NAME
        )
        shutil.copy(real / source / "classes.json", out / source / "classes.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fixtures", type=Path, default=common.default_fixtures())
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        real_ingests(args.fixtures, tmp / "real", tmp)
        shards = tmp / "shards"
        replicate(tmp / "real", shards, args.rows)
        paths = sorted(shards.glob(f"*/{MANIFEST_NAME}"))
        n = sum(pl.scan_parquet(p).select(pl.len()).collect().item() for p in paths)
        size = sum(p.stat().st_size for p in paths)
        floor = common.best_of(args.repeats, lambda: [pl.read_parquet(p, columns=list(COLUMNS)) for p in paths])
        report = common.best_of(args.repeats, lambda: summarize(load_manifests(shards)))

        def whole_cli():
            with contextlib.redirect_stdout(io.StringIO()):
                cli_main(["stats", str(shards), "--json", str(tmp / "report.json")])

        cli = common.best_of(args.repeats, whole_cli)
    print(
        f"manifest: {n:,} rows in {len(paths)} files, {size / 2**20:.1f} MiB; polars {pl.__version__}, 1 thread, 1 core"
    )
    print(f"{'CPU s':>46}{'wall s (info)':>15}")
    print(f"floor (read the report's columns):     {floor.cpu:7.3f}{floor.wall:15.3f}")
    print(
        f"load_manifests + summarize:            {report.cpu:7.3f}{report.wall:15.3f}  "
        f"floor / this = {common.ratio(floor, report):.2f} (CPU time)"
    )
    print(f"mtl-data stats (tables + --json):      {cli.cpu:7.3f}{cli.wall:15.3f}  (target <= 3 s CPU)")
    print(f"command: {common.command_line()}")


if __name__ == "__main__":
    main()

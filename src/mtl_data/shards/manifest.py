"""The manifest: one Parquet row per sample, with what the stats need without opening a tar.

One ``manifest.parquet`` per source folder; read them together with a glob
(``polars.read_parquet("shards/*/manifest.parquet")``, DuckDB, pyarrow). Every file has the
same explicit Arrow schema, so sources that lack a task still concatenate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mtl_data.errors import MtlDataError
from mtl_data.files import open_output, remove_quietly, writing
from mtl_data.schema.sample import TASKS, Sample

MANIFEST_NAME = "manifest.parquet"

#: version of the manifest's columns, stored in the Parquet schema metadata under
#: ``VERSION_KEY``. Bump it when a column is renamed or changes meaning (adding one is fine);
#: readers refuse other versions with a "re-ingest" hint instead of misreading them.
MANIFEST_VERSION = 1
VERSION_KEY = b"mtl_data.manifest_version"

SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("id", pa.string()),
        ("shard", pa.string()),  # path of the tar relative to the shards root
        ("position", pa.int32()),  # index of the sample inside its shard
        ("offset", pa.int64()),  # byte offset of the sample's first tar header
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("orig_height", pa.int32()),
        ("orig_width", pa.int32()),
        ("sequence", pa.string()),
        ("timestamp_us", pa.int64()),
        *[(f"has_{t}", pa.bool_()) for t in TASKS],
        ("det2d_count", pa.int32()),
        ("det2d_classes", pa.list_(pa.int16())),
        ("det2d_ignore_count", pa.int32()),
        ("det3d_count", pa.int32()),
        ("det3d_classes", pa.list_(pa.int16())),
        ("seg_classes", pa.list_(pa.uint8())),  # class ids present ...
        ("seg_pixels", pa.list_(pa.int64())),  # ... and their pixel counts (ignore included)
        ("depth_points", pa.int64()),
        ("depth_min_m", pa.float32()),
        ("depth_max_m", pa.float32()),
        ("steer_angle_deg", pa.float64()),
        ("steer_speed_kmh", pa.float64()),
        ("sign_class", pa.int16()),
        ("lane_count", pa.int16()),
        ("prev_frames", pa.uint8()),  # previous frames stored with the sample: members prev1 .. prevK
    ],
    metadata={VERSION_KEY: str(MANIFEST_VERSION).encode()},
)


#: columns added after manifests were first written, and the value a manifest without one
#: holds in every row: such a manifest is read as if it had the column (``read_manifest``).
COLUMN_DEFAULTS = {"prev_frames": 0}


def sample_row(sample: Sample) -> dict:
    """The manifest row of a sample, without the writer's columns (shard, position, offset)."""
    h, w = sample.size
    row = {
        "key": sample.key,
        "source": sample.source,
        "split": sample.split,
        "id": sample.id,
        "height": h,
        "width": w,
        "orig_height": int(sample.orig_size[0]),
        "orig_width": int(sample.orig_size[1]),
        "sequence": sample.sequence,
        "timestamp_us": sample.timestamp_us,
    }
    for t in TASKS:
        row[f"has_{t}"] = getattr(sample, t) is not None
    if sample.det2d is not None:
        row["det2d_count"] = int(sample.det2d.boxes.shape[0])
        row["det2d_classes"] = sample.det2d.classes.tolist()
        row["det2d_ignore_count"] = int(sample.det2d.ignore.shape[0])
    if sample.det3d is not None:
        row["det3d_count"] = int(sample.det3d.boxes.shape[0])
        row["det3d_classes"] = sample.det3d.classes.tolist()
    if sample.seg is not None:
        counts = np.bincount(sample.seg.ravel(), minlength=256)
        present = np.flatnonzero(counts)
        row["seg_classes"] = present.tolist()
        row["seg_pixels"] = counts[present].tolist()
    if sample.depth is not None:
        valid = sample.depth[sample.depth > 0]
        row["depth_points"] = int(valid.size)
        row["depth_min_m"] = float(valid.min()) if valid.size else None
        row["depth_max_m"] = float(valid.max()) if valid.size else None
    if sample.steer is not None:
        row["steer_angle_deg"] = float(sample.steer.angle_deg)
        row["steer_speed_kmh"] = sample.steer.speed_kmh
    if sample.sign is not None:
        row["sign_class"] = int(sample.sign.class_id)
    if sample.lane is not None:
        row["lane_count"] = int(sample.lane.xs.shape[0])
    row["prev_frames"] = len(sample.prev)
    return row


def rows_to_table(rows: list[dict]) -> pa.Table:
    """An Arrow table with the manifest schema (missing columns become nulls)."""
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write_table(table: pa.Table, path: Path) -> None:
    """Write a Parquet file atomically (temporary name, then rename) and reproducibly.

    Raises:
        OutputError: it cannot be written (disk full, read-only folder); the ``.part`` file is
            removed first.
    """
    tmp = path.with_name(path.name + ".part")
    try:
        with writing(tmp), open_output(tmp) as f:
            pq.write_table(table, f, compression="zstd")
        with writing(path):
            tmp.replace(path)
    except BaseException:
        remove_quietly(tmp)
        raise


def manifest_paths(root: Path) -> list[Path]:
    """The manifest of a source folder, or every ``*/manifest.parquet`` of a shards root, sorted.

    Raises:
        FileNotFoundError: no manifest was found.
    """
    root = Path(root)
    paths = [root / MANIFEST_NAME] if (root / MANIFEST_NAME).exists() else sorted(root.glob(f"*/{MANIFEST_NAME}"))
    if not paths:
        raise FileNotFoundError(root)
    return paths


def check_manifest(path: Path) -> None:
    """Check that ``path`` is a readable manifest of this tool's version (reads the footer only).

    Raises:
        MtlDataError: corrupt or not Parquet, written by another manifest version, or lacking
            columns; the message names the file and says how to fix it.
    """
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise MtlDataError(
            f"{path}: not a readable Parquet manifest ({exc}); re-run the ingest with --overwrite to rebuild it"
        ) from None
    found = (schema.metadata or {}).get(VERSION_KEY)
    if found != str(MANIFEST_VERSION).encode():
        what = f"version {found.decode()}" if found else "an older layout without a version"
        raise MtlDataError(
            f"{path}: manifest has {what}, this tool reads version {MANIFEST_VERSION}; "
            "re-run the ingest with --overwrite to rebuild it"
        )
    missing = [name for name in SCHEMA.names if name not in schema.names and name not in COLUMN_DEFAULTS]
    if missing:
        raise MtlDataError(
            f"{path}: manifest lacks columns {', '.join(missing)}; re-run the ingest with --overwrite to rebuild it"
        )


def no_manifest_error(path: Path) -> MtlDataError:
    """The error for a folder without a manifest where one was expected, saying what to do: merge
    the partitions of array jobs (``ingest --partition``), resume an unfinished ingest, or ingest."""
    path = Path(path)
    if any(path.glob("**/.partitions")):
        hint = (
            "it holds the partitions of array jobs, not merged yet: once every job has finished, "
            f"`mtl-data merge {path}` (it names a partition still missing)"
        )
    elif any(path.glob("**/.ingest")):
        hint = "an ingest is unfinished there: re-run the same ingest command to resume it"
    else:
        hint = f"run `mtl-data ingest DATASET RAW --to {path}` first"
    return MtlDataError(f"{path}: no {MANIFEST_NAME} found ({hint})")


def read_manifests(root: Path) -> pa.Table:
    """Every manifest under a shards root (``root/*/manifest.parquet``) or of one source folder.

    Raises:
        FileNotFoundError: no manifest was found.
        MtlDataError: a manifest is corrupt or of another version (see ``check_manifest``).
    """
    paths = manifest_paths(root)
    for path in paths:
        check_manifest(path)
    return pa.concat_tables([read_manifest(p) for p in paths])


def read_manifest(path: Path) -> pa.Table:
    """One manifest file with the ``SCHEMA`` columns; a column it predates (``COLUMN_DEFAULTS``)
    holds its default in every row, so old manifests read as they always meant (no previous
    frames), never as nulls."""
    table = pq.read_table(path, schema=SCHEMA)
    present = set(pq.read_schema(path).names)
    for name, value in COLUMN_DEFAULTS.items():
        if name not in present:
            index = table.schema.get_field_index(name)
            column = pa.array(np.full(table.num_rows, value), SCHEMA.field(name).type)
            table = table.set_column(index, SCHEMA.field(name), column)
    return table

"""Reading the manifests for the stats: lazily, only the columns needed, never a tar.

Every ``*/manifest.parquet`` under a shards root is checked (footer only: version and
columns) and scanned with polars; the frame handed to the summaries holds one row per sample
of the requested split, with the per-task numbers the ingest wrote (see
``mtl_data.shards.manifest``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mtl_data.errors import MtlDataError
from mtl_data.schema.sample import TASKS
from mtl_data.schema.validate import SPLITS
from mtl_data.shards.manifest import check_manifest, manifest_paths, no_manifest_error
from mtl_data.shards.reader import read_class_tables

#: the manifest columns the summaries read; nothing else is loaded.
COLUMNS: tuple[str, ...] = (
    "source",
    "split",
    "sequence",
    "height",
    "width",
    *[f"has_{t}" for t in TASKS],
    "det2d_classes",
    "det2d_ignore_count",
    "det3d_classes",
    "seg_classes",
    "seg_pixels",
    "depth_points",
    "depth_min_m",
    "depth_max_m",
    "steer_angle_deg",
    "steer_speed_kmh",
    "sign_class",
    "lane_count",
)


@dataclass(frozen=True)
class Manifests:
    """What the summaries read: the rows and each source's class names.

    Attributes:
        root: the shards root that was read.
        paths: the manifest files, sorted.
        frame: one row per sample, ``COLUMNS`` only, every split (the split filter of a report
            is applied by the summaries, because the split-relation warnings need all splits).
        class_names: source -> task -> class names indexed by the stored class id (each
            source's ``classes.json``); empty where a source has none.
    """

    root: Path
    paths: tuple[Path, ...]
    frame: pl.DataFrame
    class_names: dict[str, dict[str, list[str]]]


def load_manifests(root: Path) -> Manifests:
    """Check and read every manifest under ``root`` (a shards root or one source folder).

    Raises:
        MtlDataError: ``root`` missing, no manifest under it, a manifest corrupt or of another
            version, or a ``classes.json`` that is not JSON; each names the file.
    """
    root = Path(root)
    if not root.is_dir():
        raise MtlDataError(f"{root}: no such folder (expected a shards root written by `mtl-data ingest`)")
    try:
        paths = manifest_paths(root)
    except FileNotFoundError:
        raise no_manifest_error(root) from None
    for path in paths:
        check_manifest(path)
    try:
        frame = pl.concat([pl.scan_parquet(p).select(COLUMNS) for p in paths]).collect()
    except pl.exceptions.PolarsError as exc:  # a footer that reads but a body that does not
        raise MtlDataError(
            f"{root}: a manifest could not be read ({exc}); re-run its ingest with --overwrite"
        ) from None
    return Manifests(root, tuple(paths), frame, _class_names(paths))


def _class_names(paths: list[Path]) -> dict[str, dict[str, list[str]]]:
    """Each source's ``classes.json``, written by the ingest into the source's folder (named after it)."""
    return {
        path.parent.name: read_class_tables(path.parent) for path in paths if (path.parent / "classes.json").exists()
    }


def split_order(split: str) -> int:
    """Sort key putting the schema's splits first, in their order (train, val, test)."""
    return SPLITS.index(split) if split in SPLITS else len(SPLITS)

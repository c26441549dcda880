"""Reading shards back: locate a sample, summarize counts, check everything against the schema.

Paths in the manifest's ``shard`` column are relative to the shards root (the folder holding
one sub-folder per source), so a root or a single source folder both work as input.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mtl_data.errors import MtlDataError
from mtl_data.schema.sample import TASKS, Sample
from mtl_data.schema.validate import validate, validate_meta
from mtl_data.shards.codec import DecodeError, decode_sample
from mtl_data.shards.manifest import MANIFEST_NAME, read_manifests, sample_row
from mtl_data.shards.tario import iter_tar_samples


def labels_any(tasks: Iterable[str] = TASKS) -> pl.Expr:
    """Polars expression over manifest rows: True where the sample labels at least one of ``tasks``."""
    return pl.any_horizontal([pl.col(f"has_{t}") for t in tasks])


def read_class_tables(source_dir: Path) -> dict[str, list[str]]:
    """The ``classes.json`` of a source folder (task -> class names by id); {} when it has none.

    Raises:
        MtlDataError: the file is not readable JSON (naming it).
    """
    path = Path(source_dir) / "classes.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MtlDataError(f"{path}: not readable JSON ({exc}); re-run the ingest with --overwrite") from None


@dataclass(frozen=True)
class ShardSet:
    """The shards under a root: the root itself and its manifest rows."""

    root: Path
    manifest: pl.DataFrame

    @classmethod
    def open(cls, path: Path) -> ShardSet:
        """Open a shards root (``shards/``) or one source folder (``shards/kitti``).

        Raises:
            MtlDataError: no manifest below ``path`` (nothing ingested, or an ingest unfinished).
        """
        path = Path(path)
        try:
            table = read_manifests(path)
        except FileNotFoundError:
            hint = (
                " (an ingest is unfinished there: re-run the same ingest command to resume it)"
                if any(path.glob("**/.ingest"))
                else " (run `mtl-data ingest DATASET RAW --to DIR` first)"
            )
            raise MtlDataError(f"{path}: no {MANIFEST_NAME} found{hint}") from None
        root = path.parent if (path / MANIFEST_NAME).exists() else path
        return cls(root, pl.from_arrow(table))

    def sources(self) -> list[str]:
        return sorted(self.manifest["source"].unique().to_list())

    def class_tables(self, source: str) -> dict[str, list[str]]:
        """``read_class_tables`` of the source's folder."""
        return read_class_tables(self.root / source)

    def counts(self) -> pl.DataFrame:
        """Samples, shards and labelled samples per task, per source and split."""
        return (
            self.manifest.group_by("source", "split", maintain_order=True)
            .agg(
                pl.len().alias("samples"),
                pl.col("shard").n_unique().alias("shards"),
                *[pl.col(f"has_{t}").sum().alias(t) for t in TASKS],
            )
            .sort("source", pl.col("split").replace_strict({"train": 0, "val": 1, "test": 2}, default=3))
        )

    def row(self, key: str) -> dict:
        """The manifest row of ``key``; MtlDataError if absent."""
        hit = self.manifest.filter(pl.col("key") == key)
        if hit.height == 0:
            raise MtlDataError(f"{self.root}: no sample with key {key!r} in the manifest")
        return hit.row(0, named=True)

    def read_members(self, key: str) -> dict[str, bytes]:
        """The raw members of one sample, read from its shard at the manifest's byte offset."""
        row = self.row(key)
        got_key, members = next(iter_tar_samples(self.root / row["shard"], offset=row["offset"]))
        if got_key != key:
            raise MtlDataError(f"{row['shard']}: offset {row['offset']} holds {got_key!r}, not {key!r}")
        return members

    def read_sample(self, key: str) -> Sample:
        return decode_sample(key, self.read_members(key))


def check_shards(shards: ShardSet) -> Iterator[str]:
    """Decode every sample of every shard and yield each problem found, as one line.

    Checks: every tar sample decodes, validates against the schema, and matches its manifest
    row (shard, position, offset, and every derived column); every manifest row is found in its
    shard; keys are unique; no stray shard lies next to a manifest.
    """
    m = shards.manifest
    dupes = m.filter(pl.col("key").is_duplicated())["key"].unique().to_list()
    for key in sorted(dupes):
        yield f"manifest: key {key!r} appears more than once"
    expected = {r["key"]: r for r in m.iter_rows(named=True)}
    seen: set[str] = set()
    listed = set(m["shard"].unique().to_list())
    on_disk = {f"{p.parent.name}/{p.name}" for s in shards.sources() for p in (shards.root / s).glob("*.tar")}
    for stray in sorted(on_disk - listed):
        yield f"{stray}: shard on disk but no manifest row points into it"
    for shard in sorted(listed):
        path = shards.root / shard
        if not path.exists():
            yield f"{shard}: listed in the manifest but missing"
            continue
        source = shard.split("/")[0]
        num_det = len(shards.class_tables(source).get("det2d", [])) or None
        yield from _check_shard(path, shard, expected, seen, num_det)
    for key in sorted(set(expected) - seen):
        row = expected[key]
        if (shards.root / row["shard"]).exists():
            yield f"{row['shard']}: {key}: in the manifest but not in the shard"


def _check_shard(path: Path, shard: str, expected: dict, seen: set, num_det: int | None) -> Iterator[str]:
    offsets = _member_offsets(path)
    try:
        for position, (key, members) in enumerate(iter_tar_samples(path)):
            where = f"{shard}: {key}"
            if key in seen:
                yield f"{where}: key appears in more than one place"
            seen.add(key)
            row = expected.get(key)
            if row is None:
                yield f"{where}: not in the manifest"
                continue
            try:
                meta = json.loads(members["meta.json"]) if "meta.json" in members else {}
                sample = decode_sample(key, members)
            except (DecodeError, KeyError, ValueError, TypeError) as exc:
                yield f"{where}: does not decode: {exc}"
                continue
            for problem in validate_meta(meta) + validate(sample, num_det):
                yield f"{where}: {problem}"
            actual = sample_row(sample)
            actual.update(shard=shard, position=position, offset=offsets.get(key))
            for col, want in actual.items():
                if not _same(row.get(col), want):
                    yield f"{where}: manifest {col}={row.get(col)!r} but the shard gives {want!r}"
    except Exception as exc:  # a truncated or corrupt tar stops the walk; report, do not crash
        yield f"{shard}: unreadable tar: {exc}"


def _member_offsets(path: Path) -> dict[str, int]:
    """Byte offset of the first header of each key in a tar."""
    offsets: dict[str, int] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                offsets.setdefault(info.name.partition(".")[0], info.offset)
    except tarfile.TarError:
        pass
    return offsets


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and bool(np.isclose(a, b, rtol=1e-6, atol=1e-6))
    return a == b

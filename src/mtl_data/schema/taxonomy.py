"""Unified class taxonomies and the per-source mapping tables, as data.

Every native class of every source maps to a unified class name or to ``IGNORE`` (the object
becomes an ignore region: a detector is neither rewarded nor punished there). The tables are
checked for completeness by the tests. A user overrides a mapping without touching code with a
taxonomy file (``--taxonomy FILE.json``)::

    {"det": {"kitti": {"Person_sitting": "ignore", "Misc": "van"}}}

or keeps each source's own classes with ``--taxonomy native``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mtl_data.errors import MtlDataError

IGNORE = "ignore"

#: unified detection classes (2D and 3D share them); the id is the position.
DET_CLASSES: tuple[str, ...] = (
    "car", "van", "truck", "bus", "pedestrian", "cyclist", "motorcycle", "bicycle",
    "tram_train", "other_vehicle", "animal",
)

#: native detection class -> unified name, per source. Choices (docs/taxonomy.md):
#: KITTI ``Person_sitting`` is a pedestrian; ``Misc`` (trailers, segways, ...) is an other
#: vehicle; ``DontCare`` marks regions with unlabelled objects, so it becomes an ignore region.
DET_TABLES: dict[str, dict[str, str]] = {
    "kitti": {
        "Car": "car",
        "Van": "van",
        "Truck": "truck",
        "Pedestrian": "pedestrian",
        "Person_sitting": "pedestrian",
        "Cyclist": "cyclist",
        "Tram": "tram_train",
        "Misc": "other_vehicle",
        "DontCare": IGNORE,
    },
}

TAXONOMY_MODES = ("unified", "native")


@dataclass(frozen=True)
class ClassMap:
    """Resolved mapping for one source and task.

    Attributes:
        names: class names of the output ids (``names[id]``).
        ids: native class -> output id, or None for an ignore region.
        mode: ``unified``, ``native`` or the path of the taxonomy file.
    """

    names: tuple[str, ...]
    ids: dict[str, int | None]
    mode: str

    def lookup(self, native: str) -> int | None:
        """Output id of a native class (None = ignore region); KeyError if unknown."""
        return self.ids[native]


def det_class_map(source: str, taxonomy: str = "unified") -> ClassMap:
    """Resolve the detection class map of ``source`` for a ``--taxonomy`` value.

    Args:
        source: a key of ``DET_TABLES``.
        taxonomy: ``unified``, ``native``, or the path of a JSON override file.

    Raises:
        MtlDataError: the taxonomy file is unreadable or maps to an unknown class.
    """
    table = dict(DET_TABLES[source])
    if taxonomy == "native":
        names = tuple(n for n, u in table.items() if u != IGNORE)
        ids = {n: (names.index(n) if u != IGNORE else None) for n, u in table.items()}
        return ClassMap(names, ids, "native")
    if taxonomy != "unified":
        table.update(_read_override(Path(taxonomy), "det", source, table))
    ids = {n: (None if u == IGNORE else DET_CLASSES.index(u)) for n, u in table.items()}
    return ClassMap(DET_CLASSES, ids, taxonomy)


def _read_override(path: Path, task: str, source: str, table: dict[str, str]) -> dict[str, str]:
    """The ``{task: {source: {native: unified}}}`` entries of a taxonomy file for one source."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise MtlDataError(f"{path}: taxonomy file not found (expected 'unified', 'native' or a JSON file)") from None
    except (OSError, ValueError) as exc:
        raise MtlDataError(f"{path}: cannot read taxonomy file as JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MtlDataError(f'{path}: expected an object like {{"det": {{"{source}": {{"Misc": "van"}}}}}}')
    entries = doc.get(task, {}).get(source, {})
    allowed = set(DET_CLASSES) | {IGNORE}
    for native, unified in entries.items():
        if native not in table:
            raise MtlDataError(f"{path}: {task}.{source}: unknown native class {native!r} "
                               f"(known: {', '.join(table)})")
        if unified not in allowed:
            raise MtlDataError(f"{path}: {task}.{source}.{native}: unknown class {unified!r} "
                               f"(allowed: {', '.join(sorted(allowed))})")
    return entries

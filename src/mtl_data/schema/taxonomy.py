"""Unified class taxonomies and the per-source mapping tables, as data.

Every native class of every source maps to a unified class name or to ``IGNORE`` (the object
becomes an ignore region: a detector is neither rewarded nor punished there). The tables are
checked for completeness by the tests. A user overrides a mapping without touching code with a
taxonomy file (``--taxonomy FILE.json``)::

    {"det": {"kitti": {"Person_sitting": "ignore", "Misc": "van"}},
     "seg": {"a2d2": {"Sidebars": "fence"}}}

or keeps each source's own classes with ``--taxonomy native``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mtl_data.errors import MtlDataError
from mtl_data.files import read_json_document

IGNORE = "ignore"

#: unified detection classes (2D and 3D share them); the id is the position.
DET_CLASSES: tuple[str, ...] = (
    "car",
    "van",
    "truck",
    "bus",
    "pedestrian",
    "cyclist",
    "motorcycle",
    "bicycle",
    "tram_train",
    "other_vehicle",
    "animal",
)

#: native detection class -> unified name, per source. Choices (docs/conventions.md, "Taxonomy"):
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

#: A2D2 label3D classes (the 14 of the dataset description). VanSUV -> van (KITTI's Van);
#: MotorBiker (rider on a motorcycle) and Motorcycle -> motorcycle; UtilityVehicle,
#: EmergencyVehicle and Trailer -> other_vehicle; CaravanTransporter (car transporter) -> truck.
DET_TABLES["a2d2"] = {
    "Car": "car",
    "VanSUV": "van",
    "Truck": "truck",
    "Bus": "bus",
    "Pedestrian": "pedestrian",
    "Cyclist": "cyclist",
    "MotorBiker": "motorcycle",
    "Motorcycle": "motorcycle",
    "Bicycle": "bicycle",
    "UtilityVehicle": "other_vehicle",
    "EmergencyVehicle": "other_vehicle",
    "Trailer": "other_vehicle",
    "CaravanTransporter": "truck",
    "Animal": "animal",
}

#: unified semantic classes: the 19 Cityscapes train classes, id = position; 255 = ignore.
SEG_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

#: native segmentation class -> unified name, per source. A2D2 keys are the class NAMES of
#: class_list.json (its colours come from that file at run time). Choices follow Cityscapes'
#: own definitions (docs/conventions.md, "Taxonomy"): lane markings, zebra crossings, painted instructions,
#: speed bumps and restricted/slow/cobblestone driving areas are road; the curb is sidewalk
#: (as Cityscapes labels it); classes Cityscapes leaves void (guard rails = Sidebars, parking,
#: non-drivable ground, obstacles, road blocks, traffic guide objects, animals, tractors) and
#: sensor artefacts (Ego car, Blurred area, Rain dirt) are ignored.
SEG_TABLES: dict[str, dict[str, str]] = {
    "a2d2": {
        "Car 1": "car",
        "Car 2": "car",
        "Car 3": "car",
        "Car 4": "car",
        "Bicycle 1": "bicycle",
        "Bicycle 2": "bicycle",
        "Bicycle 3": "bicycle",
        "Bicycle 4": "bicycle",
        "Pedestrian 1": "person",
        "Pedestrian 2": "person",
        "Pedestrian 3": "person",
        "Truck 1": "truck",
        "Truck 2": "truck",
        "Truck 3": "truck",
        "Small vehicles 1": "motorcycle",
        "Small vehicles 2": "motorcycle",
        "Small vehicles 3": "motorcycle",
        "Traffic signal 1": "traffic light",
        "Traffic signal 2": "traffic light",
        "Traffic signal 3": "traffic light",
        "Traffic sign 1": "traffic sign",
        "Traffic sign 2": "traffic sign",
        "Traffic sign 3": "traffic sign",
        "Utility vehicle 1": "truck",
        "Utility vehicle 2": "truck",
        "Sidebars": IGNORE,
        "Speed bumper": "road",
        "Curbstone": "sidewalk",
        "Solid line": "road",
        "Irrelevant signs": "traffic sign",
        "Road blocks": IGNORE,
        "Tractor": IGNORE,
        "Non-drivable street": IGNORE,
        "Zebra crossing": "road",
        "Obstacles / trash": IGNORE,
        "Poles": "pole",
        "RD restricted area": "road",
        "Animals": IGNORE,
        "Grid structure": "fence",
        "Signal corpus": "pole",
        "Drivable cobblestone": "road",
        "Electronic traffic": "traffic sign",
        "Slow drive area": "road",
        "Nature object": "vegetation",
        "Parking area": IGNORE,
        "Sidewalk": "sidewalk",
        "Ego car": IGNORE,
        "Painted driv. instr.": "road",
        "Traffic guide obj.": IGNORE,
        "Dashed line": "road",
        "RD normal street": "road",
        "Sky": "sky",
        "Buildings": "building",
        "Blurred area": IGNORE,
        "Rain dirt": IGNORE,
    },
}

#: GTSRB's 43 traffic-sign classes (id = position), names as in the dataset's signnames.csv.
SIGN_CLASSES: tuple[str, ...] = (
    "Speed limit (20km/h)",
    "Speed limit (30km/h)",
    "Speed limit (50km/h)",
    "Speed limit (60km/h)",
    "Speed limit (70km/h)",
    "Speed limit (80km/h)",
    "End of speed limit (80km/h)",
    "Speed limit (100km/h)",
    "Speed limit (120km/h)",
    "No passing",
    "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection",
    "Priority road",
    "Yield",
    "Stop",
    "No vehicles",
    "Vehicles over 3.5 metric tons prohibited",
    "No entry",
    "General caution",
    "Dangerous curve to the left",
    "Dangerous curve to the right",
    "Double curve",
    "Bumpy road",
    "Slippery road",
    "Road narrows on the right",
    "Road work",
    "Traffic signals",
    "Pedestrians",
    "Children crossing",
    "Bicycles crossing",
    "Beware of ice/snow",
    "Wild animals crossing",
    "End of all speed and passing limits",
    "Turn right ahead",
    "Turn left ahead",
    "Ahead only",
    "Go straight or right",
    "Go straight or left",
    "Keep right",
    "Keep left",
    "Roundabout mandatory",
    "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
)

#: Cityscapes label ids (``_labelIds.png`` values 0..33) -> label names, from the official
#: ``cityscapesscripts/helpers/labels.py`` (raw-formats 5.3); ``license plate`` (-1) is never written.
CITYSCAPES_LABEL_IDS: dict[int, str] = {
    0: "unlabeled",
    1: "ego vehicle",
    2: "rectification border",
    3: "out of roi",
    4: "static",
    5: "dynamic",
    6: "ground",
    7: "road",
    8: "sidewalk",
    9: "parking",
    10: "rail track",
    11: "building",
    12: "wall",
    13: "fence",
    14: "guard rail",
    15: "bridge",
    16: "tunnel",
    17: "pole",
    18: "polegroup",
    19: "traffic light",
    20: "traffic sign",
    21: "vegetation",
    22: "terrain",
    23: "sky",
    24: "person",
    25: "rider",
    26: "car",
    27: "truck",
    28: "bus",
    29: "caravan",
    30: "trailer",
    31: "train",
    32: "motorcycle",
    33: "bicycle",
}

#: Cityscapes' own train-id mapping: the 19 train classes keep their name, the rest are ignored.
SEG_TABLES["cityscapes"] = {
    "unlabeled": IGNORE,
    "ego vehicle": IGNORE,
    "rectification border": IGNORE,
    "out of roi": IGNORE,
    "static": IGNORE,
    "dynamic": IGNORE,
    "ground": IGNORE,
    "road": "road",
    "sidewalk": "sidewalk",
    "parking": IGNORE,
    "rail track": IGNORE,
    "building": "building",
    "wall": "wall",
    "fence": "fence",
    "guard rail": IGNORE,
    "bridge": IGNORE,
    "tunnel": IGNORE,
    "pole": "pole",
    "polegroup": IGNORE,
    "traffic light": "traffic light",
    "traffic sign": "traffic sign",
    "vegetation": "vegetation",
    "terrain": "terrain",
    "sky": "sky",
    "person": "person",
    "rider": "rider",
    "car": "car",
    "truck": "truck",
    "bus": "bus",
    "caravan": IGNORE,
    "trailer": IGNORE,
    "train": "train",
    "motorcycle": "motorcycle",
    "bicycle": "bicycle",
}

#: Cityscapes-3D box labels: the six evaluated vehicle classes; caravan and trailer (void in
#: Cityscapes' segmentation) are other vehicles.
DET_TABLES["cityscapes"] = {
    "car": "car",
    "truck": "truck",
    "bus": "bus",
    "train": "tram_train",
    "motorcycle": "motorcycle",
    "bicycle": "bicycle",
    "caravan": "other_vehicle",
    "trailer": "other_vehicle",
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


_TASK_TABLES = {"det": (DET_TABLES, DET_CLASSES), "seg": (SEG_TABLES, SEG_CLASSES)}


def class_map(task: str, source: str, taxonomy: str = "unified") -> ClassMap:
    """Resolve the class map of ``source`` for ``task`` (``det`` or ``seg``) and a ``--taxonomy``.

    Args:
        task: ``det`` (2D and 3D boxes share it) or ``seg``.
        source: a key of the task's table.
        taxonomy: ``unified``, ``native``, or the path of a JSON override file.

    Raises:
        MtlDataError: the taxonomy file is unreadable or maps to an unknown class.
    """
    tables, unified = _TASK_TABLES[task]
    table = dict(tables[source])
    if taxonomy == "native":
        names = tuple(n for n, u in table.items() if u != IGNORE)
        ids = {n: (names.index(n) if u != IGNORE else None) for n, u in table.items()}
        return ClassMap(names, ids, "native")
    if taxonomy != "unified":
        table.update(_read_override(Path(taxonomy), task, source, table, unified))
    ids = {n: (None if u == IGNORE else unified.index(u)) for n, u in table.items()}
    return ClassMap(unified, ids, taxonomy)


def det_class_map(source: str, taxonomy: str = "unified") -> ClassMap:
    """``class_map("det", source, taxonomy)``."""
    return class_map("det", source, taxonomy)


def _read_override(
    path: Path, task: str, source: str, table: dict[str, str], unified: tuple[str, ...]
) -> dict[str, str]:
    """The ``{task: {source: {native: unified}}}`` entries of a taxonomy file for one source."""
    return read_taxonomy_file(path).get(task, {}).get(source, {})


def read_taxonomy_file(path: Path) -> dict[str, dict[str, dict[str, str]]]:
    """A ``--taxonomy FILE.json`` override file, every key checked, whatever sources are converted.

    The file is ``{task: {source: {native class: unified class or "ignore"}}}`` with ``task`` in
    ``det``, ``seg``, ``source`` a source of that task's tables, the native class one of that
    source's table and the unified class one of the task's classes. A key that is none of these
    (a typo: ``"dett"``, ``"kiti"``, ``"Pedestrain"``) is an error, never silently unused.

    Raises:
        MtlDataError: naming the file, the key (``det.kitti.Misc``) and the allowed values.
    """
    doc = read_json_document(path, f"{path}: taxonomy file not found (expected 'unified', 'native' or a JSON file)")
    if not isinstance(doc, dict):
        raise MtlDataError(f'{path}: expected an object like {{"det": {{"kitti": {{"Misc": "van"}}}}}}')
    for task, sources in doc.items():
        if task not in _TASK_TABLES:
            raise MtlDataError(f"{path}: unknown task {task!r} (allowed: {', '.join(_TASK_TABLES)})")
        tables, unified = _TASK_TABLES[task]
        if not isinstance(sources, dict):
            raise MtlDataError(f'{path}: "{task}" must be an object of source -> {{native class: unified class}}')
        for source, entries in sources.items():
            if source not in tables:
                raise MtlDataError(f"{path}: {task}: unknown source {source!r} (allowed: {', '.join(tables)})")
            if not isinstance(entries, dict):
                raise MtlDataError(f'{path}: "{task}.{source}" must be an object of native -> unified class names')
            allowed = (*unified, IGNORE)
            for native, target in entries.items():
                if native not in tables[source]:
                    raise MtlDataError(
                        f"{path}: {task}.{source}: unknown native class {native!r} (known: {', '.join(tables[source])})"
                    )
                if not isinstance(target, str) or target not in allowed:
                    raise MtlDataError(
                        f"{path}: {task}.{source}.{native}: unknown class {repr(target)[:60]} "
                        f"(allowed: {', '.join(sorted(allowed))})"
                    )
    return doc

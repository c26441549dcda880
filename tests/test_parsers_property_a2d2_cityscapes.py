"""Property tests of the A2D2 and Cityscapes JSON readers: whatever a JSON file holds, the reader
gives a parsed result or an ``InputError``, never another exception (nor a warning: the test
configuration turns warnings into errors, so a NaN made by the geometry fails here too).

Inputs are arbitrary JSON values (``hypothesis.strategies.recursive``), mutations of a valid
document (a real fixture where there is one: a value replaced by any JSON value, a key removed,
a list shortened or lengthened) and arbitrary bytes in a file. When a document parses, what
comes out is finite: the checks let nothing through that the geometry turns into NaN or inf.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import BOX_SAMPLE, CAMERA_SAMPLE, fixture_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtl_data.errors import InputError
from mtl_data.ingest.a2d2 import A2D2Converter, parse_label3d
from mtl_data.ingest.a2d2_bus import parse_bus_document, read_bus_file, steering_at
from mtl_data.ingest.cityscapes import CityscapesConverter, parse_camera_json, parse_gtbbox3d

SETTINGS = settings(deadline=None, derandomize=True, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
#: the tests that change one or two fields of a valid document: cheap examples, rare bad values
FIELD_SETTINGS = settings(SETTINGS, max_examples=400)
LABEL3D = (
    "a2d2",
    "camera_lidar_semantic_bboxes",
    "20180810_142822",
    "label3D",
    "cam_front_center",
    "20180810142822_label3D_frontcenter_000015196.json",
)
CITYSCAPES_SIZE = (1024, 2048)  # imgHeight, imgWidth of the real gtBbox3d sample
T0 = 1_533_904_617_000_000

# ---- strategies ----------------------------------------------------------------------------------

#: the numbers a reader trips on: zeros (a zero axis), the largest doubles (their sum overflows),
#: integers past int64 and past any double, NaN and inf
EXTREMES = st.sampled_from(
    [0, 0.0, -0.0, 1e308, -1e308, 1.7976931348623157e308, 5e-324, 1e10, 2**63, -(2**63) - 1, 10**400, T0]
    + [float("nan"), float("inf"), -float("inf")]
)
NUMBERS = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True), EXTREMES)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=6))
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5),
    max_leaves=25,
)


def vectors(n: int):
    """Lists of ``n`` numbers (the shape a reader expects, so the values reach its arithmetic):
    any numbers, plain ones (negative sizes, reversed boxes), often all one extreme value
    (``[0, 0, 0]``, ``[1e308, 1e308]``), now and then anything."""
    plain = st.integers(-100, 100) | st.floats(-100, 100)
    same = EXTREMES.map(lambda x: [x] * n)
    return st.one_of(*(st.lists(x, min_size=n, max_size=n) for x in (NUMBERS, plain)), same, same, JSON)


@st.composite
def changed(draw, valid, places: dict):
    """``valid`` with one or two of ``places`` (key paths) set to a value of their strategy; the
    rest stays valid, so that the drawn values get past the other checks and are used."""
    doc = copy.deepcopy(valid)
    for at in draw(st.lists(st.sampled_from(sorted(places, key=str)), min_size=1, max_size=2, unique=True)):
        _parent(doc, at)[at[-1]] = draw(places[at])
    return doc


def _paths(doc, at: tuple = ()):
    """Every place in a JSON document, as a tuple of keys and indexes (the root is ``()``)."""
    yield at
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield from _paths(value, (*at, key))


def _parent(doc, at: tuple):
    for key in at[:-1]:
        doc = doc[key]
    return doc


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@st.composite
def mutated(draw, valid):
    """``valid`` with one to three changes: a value replaced by any JSON value, a key or item removed,
    a list cut short or grown by a copy of an item, or numbers replaced by awkward numbers of the
    same shape (one number, every item of a list, or all items by one value: ``[0, 0, 0]``), so
    that the change passes the shape checks and reaches the arithmetic."""
    doc = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.sampled_from(list(_paths(doc))))
        if not at:
            doc = draw(JSON)
            continue
        parent, key = _parent(doc, at), at[-1]
        value = parent[key]
        how = draw(st.sampled_from(["replace", "remove", "resize", "renumber", "renumber"]))
        if how == "replace":
            parent[key] = draw(JSON)
        elif how == "remove":
            del parent[key]
        elif how == "resize" and isinstance(value, list) and value:
            parent[key] = value[:-1] if draw(st.booleans()) else [*value, copy.deepcopy(value[0])]
        elif isinstance(value, list) and value and all(_is_number(v) for v in value):
            same = draw(NUMBERS)
            parent[key] = [same] * len(value) if draw(st.booleans()) else [draw(NUMBERS) for _ in value]
        else:
            parent[key] = draw(NUMBERS)
    return doc


def check_boxes(det2d, det3d) -> None:
    """What a parsed document promises: finite, ordered 2D boxes and finite 3D boxes of positive size
    (what ``validate`` would otherwise reject, naming no field)."""
    for boxes in (det2d.boxes, det2d.ignore):
        assert np.isfinite(boxes).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert np.isfinite(det3d.boxes).all() and (det3d.boxes[:, 3:6] > 0).all()


def parsed_or_input_error(parse, *args):
    """``parse(*args)``, or None when it raised InputError (any other exception fails the test)."""
    try:
        return parse(*args)
    except InputError as exc:
        assert exc.path == str(args[0]) and "\n" not in str(exc), str(exc)  # names the file, on one line
        return None


# ---- valid documents -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def label3d_doc() -> dict:
    """The real label3D file (4 boxes: Truck, 2 Cyclist, Car)."""
    return json.loads(fixture_path(*LABEL3D).read_text())


@pytest.fixture(scope="module")
def gtbbox3d_doc() -> dict:
    """The real Cityscapes-3D sample, with an ignore region added (the reader reads that list too)."""
    doc = json.loads(fixture_path(*BOX_SAMPLE).read_text())
    return {**doc, "ignore": [{"2d": [10, 20, 30, 40], "label": "car", "instanceId": 1}]}


@pytest.fixture(scope="module")
def camera_doc() -> dict:
    return json.loads(fixture_path(*CAMERA_SAMPLE).read_text())


def fusion_bus_doc() -> dict:
    times = [T0 + k * 10_000 for k in range(5)]
    return {
        "steering_angle_calculated": {
            "unit": "Unit_DegreOfArc",
            "values": [[t, 10.0 + k] for k, t in enumerate(times)],
        },
        "steering_angle_calculated_sign": {"unit": None, "values": [[t, 0] for t in times]},
        "vehicle_speed": {"unit": "Unit_KiloMeterPerHour", "values": [[t, 50.0] for t in times]},
    }


def semantic_bus_doc() -> list:
    return [
        {
            "frame_name": f"20180807145028_camera_frontcenter_{k:09d}.json",
            "timestamp": T0 + k * 33_333,
            "flexray": {
                "steering_angle_calculated": {"unit": "Unit_DegreOfArc", "values": [5.0, 5.5]},
                "steering_angle_calculated_sign": {"unit": None, "values": [0]},
                "vehicle_speed": {"unit": "Unit_KiloMeterPerHour", "values": [30.0]},
            },
        }
        for k in range(3)
    ]


@pytest.fixture(scope="module")
def a2d2() -> A2D2Converter:
    return A2D2Converter(Path("a2d2_root_not_read"))


@pytest.fixture(scope="module")
def cityscapes() -> CityscapesConverter:
    return CityscapesConverter(Path("cityscapes_root_not_read"))


@pytest.fixture(scope="module")
def scratch():
    """A folder for the byte-level tests (hypothesis runs many examples per test function)."""
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


# ---- A2D2 label3D ----------------------------------------------------------------------------------

PATH = Path("raw/x_label3D_frontcenter_000000001.json")


def check_label3d(a2d2: A2D2Converter, doc) -> None:
    result = parsed_or_input_error(a2d2.label3d_to_boxes, PATH, doc)
    if result is not None:
        check_boxes(*result)


def test_the_valid_label3d_file_parses(a2d2, label3d_doc):
    det2d, det3d = a2d2.label3d_to_boxes(PATH, label3d_doc)
    assert len(det3d.boxes) == len(det2d.boxes) == 4
    assert [b["name"] for b in parse_label3d(PATH, label3d_doc)] == ["box_0", "box_1", "box_2", "box_3"]


@SETTINGS
@given(doc=JSON)
def test_label3d_any_json_parses_or_is_an_input_error(a2d2, doc):
    check_label3d(a2d2, doc)


@SETTINGS
@given(data=st.data())
def test_label3d_mutated_real_file_parses_or_is_an_input_error(a2d2, label3d_doc, data):
    check_label3d(a2d2, data.draw(mutated(label3d_doc)))


LABEL3D_PLACES = {
    ("box_0", "class"): st.sampled_from(["Car", "Truck", "Spaceship"]) | JSON,
    ("box_0", "center"): vectors(3),
    ("box_0", "size"): vectors(3),
    ("box_0", "axis"): vectors(3),
    ("box_0", "rot_angle"): NUMBERS | JSON,
    ("box_0", "3d_points"): st.lists(vectors(3), min_size=8, max_size=8) | JSON,
    ("box_0", "2d_bbox"): vectors(4),
    ("box_0", "truncation"): NUMBERS | JSON,
}


@FIELD_SETTINGS
@given(data=st.data())
def test_label3d_fields_of_any_values_parse_or_are_an_input_error(a2d2, label3d_doc, data):
    check_label3d(a2d2, data.draw(changed(label3d_doc, LABEL3D_PLACES)))


# ---- A2D2 bus signals ------------------------------------------------------------------------------


def check_bus(doc) -> None:
    bus = parsed_or_input_error(parse_bus_document, Path("raw/bus/x_bus_signals.json"), doc)
    if bus is not None:
        for signal in bus.signals.values():
            assert signal.t_us.dtype == np.int64 and np.isfinite(signal.values).all()
            assert (np.diff(signal.t_us) > 0).all()
        for t in (T0 - 10**6, T0, T0 + 12_345, T0 + 10**7):
            steering_at(bus, t)


def test_the_valid_bus_documents_parse():
    assert steering_at(parse_bus_document(Path("b.json"), fusion_bus_doc()), T0 + 5_000).angle_deg == 10.5
    assert steering_at(parse_bus_document(Path("b.json"), semantic_bus_doc()), T0).angle_deg == 5.25


@SETTINGS
@given(doc=JSON)
def test_bus_any_json_parses_or_is_an_input_error(doc):
    check_bus(doc)


@SETTINGS
@given(data=st.data())
def test_bus_mutated_sensor_fusion_file_parses_or_is_an_input_error(data):
    check_bus(data.draw(mutated(fusion_bus_doc())))


@SETTINGS
@given(data=st.data())
def test_bus_mutated_semantic_subset_file_parses_or_is_an_input_error(data):
    check_bus(data.draw(mutated(semantic_bus_doc())))


@SETTINGS
@given(windows=st.lists(st.lists(NUMBERS, max_size=4) | EXTREMES.map(lambda x: [x, x]), min_size=1, max_size=3))
def test_bus_semantic_windows_of_any_numbers_parse_or_are_an_input_error(windows):
    doc = semantic_bus_doc()
    for entry, window in zip(doc, windows):
        entry["flexray"]["vehicle_speed"]["values"] = window
    check_bus(doc)


@SETTINGS
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_bus_file_of_any_bytes_parses_or_is_an_input_error(scratch, data):
    path = scratch / "x_bus_signals.json"
    path.write_bytes(data)
    parsed_or_input_error(read_bus_file, path)


# ---- Cityscapes gtBbox3d and camera json -----------------------------------------------------------

BOXES = Path("raw/gtBbox3d/val/lindau/lindau_000000_000019_gtBbox3d.json")
CAMERA = Path("raw/camera/val/lindau/lindau_000000_000019_camera.json")


def check_gtbbox3d(cityscapes: CityscapesConverter, doc) -> None:
    parsed = parsed_or_input_error(parse_gtbbox3d, BOXES, doc, CITYSCAPES_SIZE)
    if parsed is not None:
        result = parsed_or_input_error(cityscapes._boxes, BOXES, parsed)  # the taxonomy lookup
        if result is not None:
            det2d, det3d = result
            check_boxes(det2d, det3d)


def check_camera(doc) -> None:
    for need_baseline in (False, True):
        camera = parsed_or_input_error(parse_camera_json, CAMERA, doc, need_baseline)
        if camera is not None:
            assert np.isfinite(camera["K"]).all()
            assert camera["sensor_T"] is None or np.isfinite(camera["sensor_T"]).all()
            assert not need_baseline or camera["baseline"] > 0


def test_the_valid_cityscapes_documents_parse(cityscapes, gtbbox3d_doc, camera_doc):
    det2d, det3d = cityscapes._boxes(BOXES, parse_gtbbox3d(BOXES, gtbbox3d_doc, CITYSCAPES_SIZE))
    assert len(det3d.boxes) == 1 and det2d.ignore.shape == (1, 4)
    assert parse_camera_json(CAMERA, camera_doc, need_baseline=True)["baseline"] == pytest.approx(0.209313)


@SETTINGS
@given(doc=JSON)
def test_gtbbox3d_any_json_parses_or_is_an_input_error(cityscapes, doc):
    check_gtbbox3d(cityscapes, doc)


@SETTINGS
@given(data=st.data())
def test_gtbbox3d_mutated_real_sample_parses_or_is_an_input_error(cityscapes, gtbbox3d_doc, data):
    check_gtbbox3d(cityscapes, data.draw(mutated(gtbbox3d_doc)))


GTBBOX3D_PLACES = {
    ("objects", 0, "2d", "modal"): vectors(4),
    ("objects", 0, "2d", "amodal"): vectors(4),
    ("objects", 0, "3d", "center"): vectors(3),
    ("objects", 0, "3d", "dimensions"): vectors(3),
    ("objects", 0, "3d", "rotation"): vectors(4),
    ("objects", 0, "truncation"): NUMBERS | JSON,
    ("sensor", "sensor_T_ISO_8855"): st.lists(vectors(4), min_size=3, max_size=3) | JSON,
    ("sensor", "fx"): NUMBERS | JSON,
    ("ignore",): st.lists(st.fixed_dictionaries({"2d": vectors(4)}), max_size=2) | JSON,
}


@FIELD_SETTINGS
@given(data=st.data())
def test_gtbbox3d_fields_of_any_values_parse_or_are_an_input_error(cityscapes, gtbbox3d_doc, data):
    check_gtbbox3d(cityscapes, data.draw(changed(gtbbox3d_doc, GTBBOX3D_PLACES)))


@SETTINGS
@given(doc=JSON)
def test_camera_json_any_json_parses_or_is_an_input_error(doc):
    check_camera(doc)


@SETTINGS
@given(data=st.data())
def test_camera_json_mutated_real_sample_parses_or_is_an_input_error(camera_doc, data):
    check_camera(data.draw(mutated(camera_doc)))


CAMERA_PLACES = {
    **{("intrinsic", k): NUMBERS | JSON for k in ("fx", "fy", "u0", "v0")},
    **{("extrinsic", k): NUMBERS | JSON for k in ("baseline", "x", "y", "z", "yaw", "pitch", "roll")},
}


@FIELD_SETTINGS
@given(data=st.data())
def test_camera_json_fields_of_any_values_parse_or_are_an_input_error(camera_doc, data):
    check_camera(data.draw(changed(camera_doc, CAMERA_PLACES)))

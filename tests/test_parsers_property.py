"""Property tests of the native-text parsers: whatever the bytes, a parsed result or an
``InputError`` (a ``MtlDataError``), never another exception.

The inputs mix pure noise (any text, any bytes) with near-valid files built from the real
formats' pieces (known keys, the right field counts, numbers that are huge, not finite or not
numbers at all), so the checks behind the first line are reached too. A parsed result is held to
what the converter does next with it (a calib's ``P2`` is split into ``K`` and ``t``; lanes are
ordered and drawn), so "parsed" means usable. Deterministic (``derandomize``) and small.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mtl_data.errors import InputError, MtlDataError
from mtl_data.ingest.gtsrb import GtsrbConverter
from mtl_data.ingest.kitti import LABEL_FIELDS, parse_kitti_label
from mtl_data.ingest.tusimple import _peek_raw_file, normalize_lanes, order_left_to_right, parse_label, read_label_line
from mtl_data.schema.kitti_calib import parse_kitti_calib, split_projection, velo_to_optical
from mtl_data.schema.lanes import rasterize_lanes
from mtl_data.schema.taxonomy import DET_TABLES

SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

#: tokens a numeric field may hold: numbers, edge cases of float(), and text
NUMBER_TOKENS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda v: f"{v:g}"),
    st.integers(-2000, 2000).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "-0", "1_000", "0x10", "", "abc", "1,5", "１２", "\u0660"]),
    st.text(max_size=6),
)
SPACE = st.sampled_from([" ", "  ", "\t", " \u00a0", "\u2003"])


def _joined(tokens: list[str], seps: list[str]) -> str:
    return "".join(t + s for t, s in zip(tokens, seps))


@st.composite
def lines_of(draw, first: st.SearchStrategy[str], count: st.SearchStrategy[int]) -> str:
    """A line: ``first`` then ``count`` number tokens, with mixed whitespace."""
    n = draw(count)
    tokens = [draw(first)] + draw(st.lists(NUMBER_TOKENS, min_size=n, max_size=n))
    seps = draw(st.lists(SPACE, min_size=len(tokens), max_size=len(tokens)))
    return _joined(tokens, seps).rstrip()


def files_of(line: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Near-valid files of ``line``s (any line endings, blank lines), or any text at all."""
    structured = st.lists(st.one_of(line, st.just(""), st.text(max_size=30)), max_size=6).flatmap(
        lambda ls: st.sampled_from(["\n", "\r\n", "\r", "\x0b", "\u2028"]).map(lambda end: end.join(ls))
    )
    return st.one_of(structured, st.text(max_size=200))


# ---- KITTI label_2 ------------------------------------------------------------------------------

LABEL_TYPES = st.one_of(st.sampled_from(list(DET_TABLES["kitti"])), st.text(max_size=8))
LABEL_LINE = lines_of(LABEL_TYPES, st.sampled_from([13, 14, 14, 14, 15, 16]))


@SETTINGS
@given(text=files_of(LABEL_LINE))
@example(text="Car 0 0 0 0 0 1e999 0 0 0 0 0 0 0 0")
@example(text="Car 0 0 0 nan 0 10 10 1 1 1 0 0 5 0")
def test_kitti_label_parses_or_is_an_input_error(text):
    try:
        labels = parse_kitti_label(text, "label.txt")
    except InputError as exc:
        assert exc.path == "label.txt" and exc.line is not None
        return
    assert labels.values.shape == (len(labels.types), len(LABEL_FIELDS) - 1)
    assert np.isfinite(labels.values).all()
    assert all(t in DET_TABLES["kitti"] for t in labels.types)


# ---- KITTI calib -------------------------------------------------------------------------------

CALIB_KEYS = st.one_of(
    st.sampled_from(["P0:", "P1:", "P2:", "P3:", "R0_rect:", "R_rect", "Tr_velo_to_cam:", "Tr_imu_to_velo:"]),
    st.text(max_size=8),
)
CALIB_LINE = lines_of(CALIB_KEYS, st.sampled_from([8, 9, 9, 11, 12, 12, 12, 13]))
VALID_CALIB = (
    "P2: 721.5 0 609.5 44.9 0 721.5 172.8 0.2 0 0 1 0.003\n"
    "R0_rect: 1 0 0 0 1 0 0 0 1\n"
    "Tr_velo_to_cam: 0 -1 0 0 0 0 -1 0 1 0 0 0\n"
)


@SETTINGS
@given(text=st.one_of(files_of(CALIB_LINE), files_of(CALIB_LINE).map(lambda t: VALID_CALIB + t)))
@example(text=VALID_CALIB.replace("721.5", "0"))  # K singular: no camera
@example(text=VALID_CALIB.replace("609.5", "nan"))
@example(text=VALID_CALIB.replace("44.9", "1e999"))
def test_kitti_calib_parses_to_a_usable_projection_or_is_an_input_error(text):
    try:
        calib = parse_kitti_calib(text, "calib.txt")
    except InputError as exc:
        assert exc.path == "calib.txt"
        return
    K, t = split_projection(calib.P2)  # what the converter does next: it must work
    assert np.isfinite(K).all() and np.isfinite(t).all()
    if calib.Tr_velo_to_cam is not None:
        assert np.isfinite(velo_to_optical(calib)).all()


# ---- GTSRB CSV ---------------------------------------------------------------------------------

HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
NAME_TOKENS = st.one_of(
    st.sampled_from(["00000_00000.ppm", "00000_00001.ppm", "00000_00000.png", "../00000_00000.ppm", "x.ppm", ""]),
    st.text(max_size=10),
)
CSV_NUMBERS = st.one_of(st.sampled_from(["30", "29", "5", "0", "1"]), NUMBER_TOKENS)


@st.composite
def csv_rows(draw) -> str:
    fields = [draw(NAME_TOKENS)] + draw(st.lists(CSV_NUMBERS, min_size=5, max_size=8))
    return ";".join(fields)


def gtsrb_csvs() -> st.SearchStrategy[bytes]:
    structured = st.tuples(
        st.sampled_from([HEADER, HEADER.replace(";", ","), HEADER[:-8], "", "\ufeff" + HEADER]),
        st.lists(st.one_of(csv_rows(), st.text(max_size=30)), max_size=5),
        st.sampled_from(["\r\n", "\n"]),
    ).map(lambda t: t[2].join([t[0], *t[1]]).encode("utf-8", "surrogatepass"))
    return st.one_of(structured, st.binary(max_size=120))


@pytest.fixture(scope="module")
def gtsrb_image() -> bytes:
    """A 30x30 PPM crop, as GTSRB stores them."""
    return b"P6\n30 30\n255\n" + bytes(30 * 30 * 3)


@SETTINGS
@given(data=gtsrb_csvs())
@example(data=f"{HEADER}\r\n00000_00000.ppm;30;30;5;5;25;25;1e999\r\n".encode())
@example(data=f"{HEADER}\r\n00000_00000.ppm;30;30;nan;5;25;25;1\r\n".encode())
def test_gtsrb_csv_lists_and_converts_or_is_an_error_naming_the_csv(data, gtsrb_image, tmp_path_factory):
    root = tmp_path_factory.mktemp("gtsrb")
    folder = root / "GTSRB" / "Final_Training" / "Images" / "00001"
    folder.mkdir(parents=True)
    (folder / "GT-00001.csv").write_bytes(data)
    (folder / "00000_00000.ppm").write_bytes(gtsrb_image)
    conv = GtsrbConverter(root)
    try:
        conv.check_layout()
        frames = conv.frames()
    except MtlDataError as exc:  # a header the listing cannot use: the whole run stops, naming it
        assert "GT-00001.csv" in str(exc)
        return
    assert frames
    for frame in frames:
        try:
            sample = conv.convert(frame)
        except InputError as exc:
            assert "GT-00001.csv" in exc.path or "00000_00000" in exc.path
            continue
        assert sample.sign is not None and 0 <= sample.sign.class_id < 43
        assert np.isfinite(np.asarray(sample.sign.roi, dtype=np.float64)).all()


# ---- TuSimple JSON lines -----------------------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner)),
    max_leaves=8,
)
COORDS = st.one_of(st.integers(-3, 800), st.sampled_from([-2, 1e308, -1e308, 10**30, 2**63, 0.5]), JSON_SCALARS)


@st.composite
def lane_docs(draw) -> dict:
    """A label line's object: near-valid (rows and lanes of matching lengths) or anything."""
    rows = draw(st.one_of(st.lists(st.integers(0, 719), max_size=6).map(sorted), st.lists(COORDS, max_size=6)))
    lanes = draw(
        st.one_of(
            st.lists(st.lists(COORDS, min_size=len(rows), max_size=len(rows)), max_size=4),
            JSON_VALUES,
        )
    )
    doc = {"lanes": lanes, "h_samples": rows, "raw_file": draw(st.one_of(st.just("clips/0601/1/20.jpg"), JSON_VALUES))}
    for key in draw(st.lists(st.sampled_from(list(doc)), max_size=1)):
        del doc[key]
    return doc


@SETTINGS
@given(doc=st.one_of(lane_docs(), st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=4)))
@example(doc={"lanes": [[10**400]], "h_samples": [300], "raw_file": "clips/a/1/20.jpg"})
@example(doc={"lanes": [[1e300, 5]], "h_samples": [300, 1e300], "raw_file": "clips/a/1/20.jpg"})
def test_tusimple_label_object_parses_to_drawable_lanes_or_is_an_input_error(doc):
    try:
        h_samples, xs, raw_file = parse_label(doc, "label_data.json", 7)
    except InputError as exc:
        assert (exc.path, exc.line) == ("label_data.json", 7)
        return
    assert isinstance(raw_file, str) and xs.shape == (xs.shape[0], h_samples.size)
    xs, _ = normalize_lanes(xs)  # what the converter does next: it must work
    xs = xs[order_left_to_right(xs, h_samples, 719)]
    mask = rasterize_lanes(xs, h_samples, (720, 1280), 5.0)
    assert int(mask.max()) <= len(xs)


@SETTINGS
@given(raw=st.one_of(st.binary(max_size=80), lane_docs().map(lambda d: json.dumps(d).encode())))
@example(raw=b"[" * 100_000)
@example(raw=b'{"raw_file": "clips/\\udce9.jpg"}')
def test_tusimple_label_line_reads_or_is_an_input_error(raw, tmp_path_factory):
    path = tmp_path_factory.mktemp("tusimple") / "label_data_0313.json"
    path.write_bytes(b'{"a": 1}\n' + raw + b"\n")
    _peek_raw_file(raw)  # the listing's look at a line never raises
    try:
        doc = read_label_line(path, 9, 2)
    except InputError as exc:
        assert exc.line == 2
        return
    assert isinstance(doc, dict)


# ---- what the properties found, each message pinned ---------------------------------------------


@pytest.mark.parametrize("token", ["nan", "inf", "-inf", "1e999"])
def test_a_number_that_is_not_finite_is_named_with_its_field_and_line(token):
    line = f"Car 0 0 0 {token} 0 10 10 1 1 1 0 0 5 0"
    with pytest.raises(InputError, match=rf"field 5 \(left\) is not a finite number: '{token}'") as err:
        parse_kitti_label(line, "label.txt")
    assert err.value.line == 1


def test_calib_whose_p2_has_a_singular_k_is_refused_naming_p2():
    with pytest.raises(InputError, match=r"calib\.txt: P2: its left 3x3 block \(K\) .* is singular"):
        parse_kitti_calib(VALID_CALIB.replace("721.5", "0"), "calib.txt")


@pytest.mark.parametrize(
    "x, says", [(10**400, "expected a finite number"), (1e300, "beyond ±1e+06 px"), (2e6, "beyond")]
)
def test_tusimple_x_beyond_any_image_is_refused_naming_lane_and_row(x, says):
    doc = {"lanes": [[x]], "h_samples": [300], "raw_file": "clips/a/1/20.jpg"}
    with pytest.raises(InputError, match=r"lane 0: x at row 300 is ") as err:
        parse_label(doc, "label_data.json", 3)
    assert says in err.value.message


def test_tusimple_line_nested_thousands_deep_is_one_input_error(tmp_path):
    path = tmp_path / "label_data_0313.json"
    path.write_bytes(b"[" * 100_000 + b"\n")
    assert _peek_raw_file(path.read_bytes()) is None
    with pytest.raises(InputError, match="nested too deeply") as err:
        read_label_line(path, 0, 1)
    assert err.value.line == 1

"""The shared file readers: every failure is an InputError naming the file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mtl_data.errors import InputError
from mtl_data.ingest.readers import png_problem, read_image, read_image_as_stored, read_json, read_npz, read_text


def test_missing_file_and_folder_in_its_place_use_the_callers_message(tmp_path):
    with pytest.raises(InputError, match=r"a\.png: camera image missing$"):
        read_image(tmp_path / "a.png", "camera image missing", "x")
    (tmp_path / "b.png").mkdir()
    with pytest.raises(InputError, match=r"b\.png: camera image missing \(a folder is in its place\) \(remove"):
        read_image(tmp_path / "b.png", "camera image missing", "x")


@pytest.mark.parametrize(
    "suffix, expected", [(".png", "a PNG image"), (".jpg", "a JPEG image"), (".ppm", "a PPM image")]
)
def test_empty_image_file_says_empty_and_what_was_expected(suffix, expected, tmp_path):
    path = tmp_path / f"e{suffix}"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=rf"e\{suffix}: empty file \(0 bytes\), expected {expected}"):
        read_image(path, "missing", "does not decode")
    with pytest.raises(InputError, match="empty file"):
        read_image_as_stored(path, "missing", "does not decode")


def _png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("keep", [100, 0.4, -1])
def test_truncated_png_is_named_truncated_without_libpng_printing(keep, tmp_path, capfd):
    data = _png(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7)  # a 16-bit disparity-like map
    cut = keep if isinstance(keep, int) and keep > 0 else int(len(data) * keep) if keep > 0 else len(data) - 1
    path = tmp_path / "d.png"
    path.write_bytes(data[:cut])
    with pytest.raises(InputError, match=r"d\.png: does not decode: truncated PNG"):
        read_image_as_stored(path, "missing", "does not decode")
    assert capfd.readouterr().err == ""  # the InputError is the only message


def test_png_problem_accepts_a_whole_png_and_names_a_garbled_chunk():
    data = _png(np.zeros((8, 8, 3), np.uint8))
    assert png_problem(data) is None
    assert "no chunk type" in png_problem(data[:12] + b"\x00\x01\x02\x03" + data[16:])


def test_image_as_stored_keeps_16_bit_values(tmp_path):
    values = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    (tmp_path / "v.png").write_bytes(_png(values))
    got = read_image_as_stored(tmp_path / "v.png", "missing", "x")
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, values)


def test_npz_arrays_are_read_and_a_broken_archive_is_one_input_error(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, points=np.ones((5, 3)), depth=np.arange(5.0))
    arrays = read_npz(path, "scan missing")
    assert sorted(arrays) == ["depth", "points"] and arrays["points"].shape == (5, 3)
    data = path.read_bytes()
    for broken, says in [(b"", "empty file"), (data[:100], "not a readable npz"), (data[: len(data) // 2], "npz")]:
        path.write_bytes(broken)
        with pytest.raises(InputError, match=rf"s\.npz: .*{says}"):
            read_npz(path, "scan missing")
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npy").rename(path)
    with pytest.raises(InputError, match="single .npy array"):
        read_npz(path, "scan missing")
    path.unlink()
    with pytest.raises(InputError, match=r"s\.npz: scan missing$"):
        read_npz(path, "scan missing")


def test_undecodable_image_uses_the_callers_message(tmp_path):
    (tmp_path / "c.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(InputError, match=r"c\.png: does not decode"):
        read_image(tmp_path / "c.png", "missing", "does not decode")


def test_binary_file_is_not_text(tmp_path):
    (tmp_path / "calib.txt").write_bytes(b"\xff\xfe\x00P2")
    with pytest.raises(InputError, match=r"calib\.txt: calib file is not a text file"):
        read_text(tmp_path / "calib.txt", "calib file")


def test_invalid_json_names_the_line(tmp_path):
    (tmp_path / "f.json").write_text('{\n "a": 1,\n "b": \n}')
    with pytest.raises(InputError) as err:
        read_json(tmp_path / "f.json", "frame json")
    assert err.value.line == 4 and "frame json is not valid JSON" in str(err.value)

"""The shared file readers: every failure is an InputError naming the file."""

from __future__ import annotations

import pytest

from mtl_data.errors import InputError
from mtl_data.ingest.readers import read_image, read_json, read_text


def test_missing_file_and_folder_in_its_place_use_the_callers_message(tmp_path):
    with pytest.raises(InputError, match=r"a\.png: camera image missing$"):
        read_image(tmp_path / "a.png", "camera image missing", "x")
    (tmp_path / "b.png").mkdir()
    with pytest.raises(InputError, match=r"b\.png: camera image missing$"):
        read_image(tmp_path / "b.png", "camera image missing", "x")


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

"""Contract every registered converter must meet, on its synthetic native-layout dataset.

Parametrized over the registry: a new converter is tested the moment it is registered (and
fails here until it has a synth writer).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re

import numpy as np
import pytest

from mtl_data.errors import LayoutError, MtlDataError
from mtl_data.ingest import CONVERTERS, Converter, converter_class, create_converter, list_converters
from mtl_data.ingest.engine import IngestOptions, plan_ingest, run_ingest
from mtl_data.schema.validate import validate
from mtl_data.shards.reader import ShardSet, check_shards
from mtl_data.synth import create_synth, list_synths

NAMES = list_converters()


def assert_same_label(got, want, where: str) -> None:
    """Every field of a label (an array or a label dataclass) survived the shard round trip."""
    if isinstance(want, np.ndarray):
        np.testing.assert_array_equal(got, want, err_msg=where)
        return
    for field in dataclasses.fields(want):
        a, b = getattr(got, field.name), getattr(want, field.name)
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=f"{where}.{field.name}")
        else:
            assert a == b, f"{where}.{field.name}: {a!r} != {b!r}"


@pytest.mark.parametrize("name", NAMES)
def test_every_converter_has_a_synth_writer_and_a_layout_docstring(name):
    assert name in list_synths()
    doc = converter_class(name).__doc__ or ""
    assert "RAW_ROOT/" in doc, "the native layout tree belongs in the converter docstring"


def test_the_registries_list_their_tables_and_refuse_an_unknown_name_listing_the_choices(tmp_path):
    assert list_converters() == sorted(CONVERTERS) and list_synths() == list_converters()
    with pytest.raises(MtlDataError, match=r"unknown dataset 'kitty'; choose from a2d2, cityscapes, gtsrb, kitti"):
        create_converter("kitty", tmp_path)
    with pytest.raises(MtlDataError, match=r"no synthetic writer for 'kitty'; choose from a2d2, .*kitti"):
        create_synth("kitty", tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_create_synth_writes_the_dataset_its_converter_reads(tmp_path):
    create_synth("kitti", tmp_path, seed=1)
    assert create_converter("kitti", tmp_path).frames()


@pytest.mark.parametrize("name", NAMES)
def test_check_layout_has_the_base_signature_and_returns_nothing_on_a_valid_root(name, synth_root):
    cls = converter_class(name)
    assert inspect.signature(cls.check_layout) == inspect.signature(Converter.check_layout)
    assert cls(synth_root(name)).check_layout() is None


@pytest.mark.parametrize("name", NAMES)
def test_empty_root_is_a_layout_error_naming_the_path_and_the_expected_tree(name, tmp_path):
    with pytest.raises(LayoutError, match=rf"^{re.escape(str(tmp_path))}: no .+ found \(expected .+\)$"):
        create_converter(name, tmp_path).check_layout()


@pytest.mark.parametrize("name", NAMES)
def test_a_missing_root_is_a_layout_error_saying_not_a_folder(name, tmp_path):
    absent = tmp_path / "absent"
    with pytest.raises(LayoutError, match=rf"^{re.escape(str(absent))}: not a folder \(expected the .+ root: "):
        create_converter(name, absent).check_layout()


@pytest.mark.parametrize("name", NAMES)
def test_the_folder_holding_the_root_is_an_error_asking_did_you_mean_the_root(name, synth_root, tmp_path):
    download = tmp_path / "download"
    download.mkdir()
    (download / name).symlink_to(synth_root(name), target_is_directory=True)
    with pytest.raises(LayoutError, match=rf"; did you mean {re.escape(str(download / name))}\?$"):
        create_converter(name, download).check_layout()


@pytest.mark.parametrize("name", NAMES)
def test_every_frame_converts_to_a_valid_sample_with_a_unique_dot_free_key(name, synth_root):
    conv = create_converter(name, synth_root(name))
    conv.check_layout()
    frames = conv.frames()
    assert frames, "synthetic dataset has no frames"
    samples = [conv.convert(f) for f in frames]
    num_det = len(conv.class_tables().get("det2d", [])) or None
    for s in samples:
        assert validate(s, num_det) == [], s.key
        assert "." not in s.key and s.source == name
    assert len({s.key for s in samples}) == len(samples)


@pytest.mark.parametrize("name", NAMES)
def test_shards_round_trip_losslessly_and_manifest_has_one_row_per_sample(name, synth_root, tmp_path):
    conv = create_converter(name, synth_root(name))
    report = run_ingest(plan_ingest(conv, tmp_path, IngestOptions(image_format="png")))
    expected = {s.key: s for s in (conv.convert(f) for f in conv.frames())}
    ss = ShardSet.open(tmp_path)
    assert sorted(ss.manifest["key"].to_list()) == sorted(expected)
    assert sum(v["samples"] for v in report["splits"].values()) == len(expected)
    for key, want in expected.items():
        got = ss.read_sample(key)
        assert got.tasks == want.tasks
        np.testing.assert_array_equal(got.image, want.image)
        for task in want.tasks:
            assert_same_label(getattr(got, task), getattr(want, task), f"{key} {task}")
    assert list(check_shards(ss)) == []
    assert json.loads((tmp_path / name / "classes.json").read_text()) == conv.class_tables()

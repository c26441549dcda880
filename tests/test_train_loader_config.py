"""``LoaderConfig`` (the loader's section of the training config) and class tables read from the
shards' ``classes.json``: head sizes never come from constants."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import first_batches, ingest_cli

from mtl_data.cli.main import main
from mtl_data.errors import MtlDataError
from mtl_data.schema.taxonomy import DET_CLASSES
from mtl_data.train.data import LoaderConfig, build_loader

SIZE = (64, 64)


def test_a_config_and_the_keyword_form_give_the_same_batches(synth_shards):
    config = LoaderConfig(batch_size=4, image_size=SIZE, workers=0, seed=3, mix={"kitti": 1, "gtsrb": 1})
    a = first_batches(build_loader(synth_shards, config), 2)
    b = first_batches(
        build_loader(synth_shards, batch_size=4, image_size=SIZE, workers=0, seed=3, mix={"kitti": 1, "gtsrb": 1}), 2
    )
    assert [x["key"] for x in a] == [x["key"] for x in b]
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b))


def test_keywords_override_the_fields_of_a_config(synth_shards):
    config = LoaderConfig(batch_size=4, image_size=SIZE, workers=0, mix={"gtsrb": 1})
    loader = build_loader(synth_shards, config, batch_size=2)
    assert loader.config.batch_size == 2 and loader.config.image_size == SIZE
    assert len(first_batches(loader, 1)[0]["key"]) == 2


@pytest.mark.parametrize(
    "options, says",
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"workers": -2}, "workers must be >= 0"),
        ({"tasks": ["seg", "flow"]}, "unknown flow"),
    ],
)
def test_a_config_out_of_range_is_one_clear_error(options, says):
    with pytest.raises(MtlDataError, match=says):
        LoaderConfig(**options)


def test_an_unknown_keyword_names_the_options(synth_shards):
    with pytest.raises(MtlDataError, match="the options are split, tasks, mix"):
        build_loader(synth_shards, batch_sise=4)


def test_unified_shards_give_the_unified_class_names(synth_shards):
    loader = build_loader(synth_shards, batch_size=2, image_size=SIZE, workers=0)
    assert loader.classes["det2d"] == DET_CLASSES == loader.classes["det3d"]
    assert len(loader.classes["seg"]) == 19 and len(loader.classes["sign"]) == 43
    batch = first_batches(loader, 1)[0]
    assert batch["det2d"].shape[-1] == 5 + len(DET_CLASSES)


@pytest.fixture(scope="module")
def native_kitti(synth_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("native")
    try:
        main(["ingest", "kitti", str(synth_root("kitti")), "--to", str(out), "--workers", "1", "--taxonomy", "native"])
    except SystemExit as exc:  # pragma: no cover - a failed ingest is a broken fixture
        assert not exc.code
    return out


def test_native_taxonomy_shards_train_with_their_own_classes(native_kitti):
    loader = build_loader(native_kitti, batch_size=2, image_size=SIZE, workers=0, tasks=["det2d"])
    # KITTI's own eight classes (DontCare is an ignore region), not the eleven unified ones
    assert loader.classes["det2d"][:3] == ("Car", "Van", "Truck") and len(loader.classes["det2d"]) == 8
    batch = first_batches(loader, 1)[0]
    assert batch["det2d"].shape[-1] == 5 + 8


def test_sources_naming_their_classes_differently_are_refused(native_kitti, synth_root, tmp_path, cli):
    root = tmp_path / "mixed"
    assert ingest_cli(cli, "kitti", synth_root("kitti"), root, "--taxonomy", "native").code == 0
    assert ingest_cli(cli, "a2d2", synth_root("a2d2"), root).code == 0
    with pytest.raises(MtlDataError, match="name their det2d classes differently"):
        build_loader(root, batch_size=2, image_size=SIZE, workers=0, tasks=["det2d"])
    # each alone loads
    assert build_loader(root, batch_size=2, image_size=SIZE, workers=0, tasks=["det2d"], mix={"a2d2": 1}).classes


def test_a_source_without_its_class_table_is_one_clear_error(synth_root, tmp_path, cli):
    root = tmp_path / "shards"
    assert ingest_cli(cli, "gtsrb", synth_root("gtsrb"), root).code == 0
    (root / "gtsrb" / "classes.json").unlink()
    with pytest.raises(MtlDataError, match=r"gtsrb/classes.json: no 'sign' class names"):
        build_loader(root, batch_size=2, image_size=SIZE, workers=0)

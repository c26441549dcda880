"""The training config (``train/config.py``): TOML, overrides and ``--set`` resolve in layers to
typed, validated sections; the config round-trips exactly through TOML and checkpoint dicts;
every mistake is one ``MtlDataError`` naming where, which key, what was expected and the value."""

from __future__ import annotations

import dataclasses
import io
import math
import re
import sys
import types
import typing
from pathlib import Path

import pytest
import torch

from mtl_data.errors import MtlDataError
from mtl_data.train.config import (
    AsymmetricConfig,
    EvalConfig,
    LoaderConfig,
    OptimConfig,
    PartConfig,
    ScheduleConfig,
    TrainConfig,
    WeightingConfig,
    apply_overrides,
    apply_sets,
    differences,
    from_dict,
    load_config,
    resolve,
    to_dict,
    to_toml,
    validate,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the package tomllib was adopted from (as train/config.py does)
    import tomli as tomllib

#: the fields a training config leaves to the trainer
TRAINER_SET = {"split", "tasks", "infinite", "seed"}


def full_config(mix: object) -> TrainConfig:
    """A config with every field of every section away from its default (not a valid run: stl
    with two tasks, three sources of static weights; round trips need types, not validity)."""
    return TrainConfig(
        shards="/data/shards",
        out='runs/a "quoted"\\back\tslash é',
        tasks=("seg", "depth"),
        mode="stl",
        model="resnet50-bifpn",
        model_options={"repeats": 2, "norm": "group", "scales": [1, 2.5], "flag": True},
        frame_fusion="conv1x1",
        task_options={"depth": {"si_lambda": 0.85, "inner": {"a": 1, "b": [True, False]}}, "seg": {}},
        weights="imagenet/resnet50.pth",
        steps=20_000,
        epoch_steps=250,
        init_from="runs/b/checkpoints/best.pt",
        seed=7,
        device="cuda:1",
        precision="bf16",
        compile=True,
        channels_last=False,
        log_every=25,
        save_every=0,
        train_split="val",
        stats="stats.json",
        mix_alpha=0.3,
        loader=LoaderConfig(
            mix=mix,
            batch_size=4,
            image_size=(128, 320),
            workers=2,
            augment=False,
            letterbox=True,
            flip_p=0.25,
            jitter=0.1,
            grid=16,
            anchors=5,
            max_boxes=32,
            max_lanes=6,
            lane_rows=56,
            shuffle_buffer=64,
            reduced_decode=False,
            shared_ring=False,
            jpeg_decoder="opencv",
            pin_memory=True,
            prefetch_factor=4,
            mp_context="spawn",
            frames=2,
        ),
        optim=OptimConfig(
            name="sgd",
            lr=0.1 + 0.2,
            weight_decay=5e-4,
            momentum=0.95,
            nesterov=True,
            betas=(0.8, 0.99),
            eps=1e-6,
            clip_grad_norm=10.0,
            parts={"encoder": PartConfig(lr=1e-5), "heads.seg": PartConfig(lr=1e-2, weight_decay=0.0)},
        ),
        schedule=ScheduleConfig(
            name="poly", warmup_steps=500, warmup_factor=0.01, min_lr_ratio=0.05, power=1.0, step_size=300, gamma=0.5
        ),
        weighting=WeightingConfig(
            name="static",
            weights={"seg": 1.0, "depth": 0.25},
            stats="weights.json",
            rule="inverse_frequency",
            first_steps=100,
            options={"temperature": 2.0, "frequencies": {"seg": 1, "depth": 3}},
        ),
        eval=EvalConfig(
            split="test", every=1000, batch_size=8, workers=1, stl={"seg": "runs/stl_seg"}, best_metric="depth/abs_rel"
        ),
        asymmetric=AsymmetricConfig(k={"encoder": 48, "seg": 32}),
    )


def sections(cls: type = TrainConfig) -> list[type]:
    """Every dataclass reachable from ``cls``'s field types, ``cls`` first."""
    found = [cls]
    for hint in typing.get_type_hints(cls).values():
        for tp in (hint, *typing.get_args(hint), *(a for arg in typing.get_args(hint) for a in typing.get_args(arg))):
            if dataclasses.is_dataclass(tp) and tp not in found:
                found += [s for s in sections(tp) if s not in found]
    return found


def allows_none(hint: object) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.toml"
    path.write_text(text)
    return path


def plain_types(value: object) -> set[type]:
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value)
        return {dict}.union(*(plain_types(v) for v in value.values()))
    if isinstance(value, list):
        return {list}.union(*(plain_types(v) for v in value))
    return {type(value)}


# ---- round trips -------------------------------------------------------------------------------


def test_the_full_config_sets_every_field_away_from_its_default():
    # the round trips below prove nothing about a field left at its default
    config = full_config({"kitti": 0.3})
    for section in (config, config.loader, config.optim, config.schedule, config.weighting, config.eval):
        default = type(section)()
        same = [
            f.name
            for f in dataclasses.fields(section)
            if getattr(section, f.name) == getattr(default, f.name) and f.name not in TRAINER_SET
        ]
        assert same == [], type(section).__name__


def test_the_default_config_round_trips_through_toml(tmp_path):
    assert load_config(write(tmp_path, to_toml(TrainConfig()))) == TrainConfig()


@pytest.mark.parametrize("mix", [{"kitti": 0.3, "a2d2": 0.7}, "stats.json#0.5"], ids=["mix-table", "mix-string"])
def test_a_config_with_every_section_set_round_trips_through_toml(tmp_path, mix):
    config = full_config(mix)
    loaded = load_config(write(tmp_path, to_toml(config)))
    assert loaded == config
    assert loaded.optim.lr == 0.1 + 0.2 and loaded.optim.lr != 0.3  # floats written exactly
    assert loaded.task_options["seg"] == {}  # an empty table survives


def test_to_toml_writes_dotted_part_names_as_quoted_tables():
    text = to_toml(full_config(None))
    assert '[optim.parts."heads.seg"]' in text
    assert tomllib.loads(text)["optim"]["parts"]["heads.seg"] == {"lr": 0.01, "weight_decay": 0.0}


@pytest.mark.parametrize("mix", [{"kitti": 0.3}, "proportional", None])
def test_to_dict_and_from_dict_are_exact_inverses(mix):
    config = full_config(mix)
    assert from_dict(to_dict(config)) == config
    assert from_dict(to_dict(TrainConfig())) == TrainConfig()


def test_to_dict_holds_only_plain_types_that_a_weights_only_load_reads():
    data = to_dict(full_config({"kitti": 0.3}))
    assert plain_types(data) <= {str, int, float, bool, list, dict, type(None)}
    assert "split" not in data["loader"] and "tasks" not in data["loader"] and "infinite" not in data["loader"]
    buffer = io.BytesIO()
    torch.save({"config": data}, buffer)
    buffer.seek(0)
    assert from_dict(torch.load(buffer, weights_only=True)["config"]) == full_config({"kitti": 0.3})


def test_every_field_that_may_be_none_defaults_to_none():
    # to_toml writes None by leaving the key out: that reads back right only under this invariant
    checked = 0
    for cls in sections():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if allows_none(hints[f.name]):
                assert f.default is None, f"{cls.__name__}.{f.name}"
                checked += 1
    assert {PartConfig, LoaderConfig, EvalConfig} <= set(sections()) and checked >= 10


def test_to_toml_refuses_a_non_finite_float():
    with pytest.raises(MtlDataError, match=r"optim\.lr must be a finite number, got inf"):
        to_toml(TrainConfig(optim=OptimConfig(lr=math.inf)))


# ---- layers ------------------------------------------------------------------------------------


def test_layers_take_precedence_defaults_toml_overrides_sets(tmp_path):
    path = write(tmp_path, 'steps = 50\nshards = "from-file"\n[optim]\nlr = 0.1\n[loader]\nbatch_size = 4\n')
    config = resolve(path, {"optim.lr": 0.2, "steps": 60}, ["optim.lr=0.3"])
    assert config.optim.lr == 0.3  # --set beats the option
    assert config.steps == 60  # the option beats the file
    assert config.loader.batch_size == 4  # the file beats the default
    assert config.shards == "from-file" and config.seed == 0 and config.optim.name == "adamw"


def test_a_later_set_wins_and_table_entries_accumulate():
    config = apply_sets(
        TrainConfig(),
        [
            "steps=5",
            "steps=7",
            "weighting.weights.seg=2",
            "weighting.weights.depth=0.5",
            "optim.parts.encoder.lr=0.1",
            "optim.parts.encoder.weight_decay=0",
        ],
    )
    assert config.steps == 7
    assert config.weighting.weights == {"seg": 2.0, "depth": 0.5}
    assert config.optim.parts == {"encoder": PartConfig(lr=0.1, weight_decay=0.0)}


def test_setting_a_table_replaces_it_and_setting_a_section_merges_into_it():
    config = apply_sets(
        TrainConfig(), ["weighting.weights.seg=2", "weighting.weights={depth=1}", "optim.lr=0.5", "optim={eps=1e-3}"]
    )
    assert config.weighting.weights == {"depth": 1.0}
    assert config.optim.lr == 0.5 and config.optim.eps == 1e-3


def test_overrides_take_typed_values_paths_and_arrays():
    config = apply_overrides(
        TrainConfig(),
        {
            "shards": Path("/data/shards"),
            "tasks": ("seg", "lane"),
            "loader.image_size": (64, 128),
            "optim.lr": 1,
            "loader.mix": {"a": 1},
            "weights": None,
            "optim.parts.heads.seg.lr": 0.5,
        },
    )
    assert config.shards == "/data/shards" and config.tasks == ("seg", "lane")
    assert config.loader.image_size == (64, 128) and config.loader.mix == {"a": 1.0}
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.optim.parts == {"heads.seg": PartConfig(lr=0.5)}


# ---- --set parsing -----------------------------------------------------------------------------


def get(config: TrainConfig, key: str) -> object:
    value: object = config
    for part in key.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


@pytest.mark.parametrize(
    "item, key, expected",
    [
        ("steps=20", "steps", 20),
        ("optim.lr=1e-4", "optim.lr", 1e-4),
        ("optim.lr=2", "optim.lr", 2.0),
        ("compile=true", "compile", True),
        ("compile=TRUE", "compile", True),
        ("compile=1", "compile", True),
        ("compile=yes", "compile", True),
        ("compile=false", "compile", False),
        ("compile=0", "compile", False),
        ("compile=no", "compile", False),
        ("channels_last=none", "channels_last", None),
        ("channels_last=false", "channels_last", False),
        ("weights=null", "weights", None),
        ('weights="none"', "weights", "none"),
        ("weights=imagenet/r18.pth", "weights", "imagenet/r18.pth"),
        ("loader.workers=none", "loader.workers", None),
        ("tasks=seg,depth", "tasks", ("seg", "depth")),
        ("tasks= seg , lane ", "tasks", ("seg", "lane")),
        ('tasks=["det2d"]', "tasks", ("det2d",)),
        ("tasks=", "tasks", ()),
        ("optim.betas=0.8,0.9", "optim.betas", (0.8, 0.9)),
        ("optim.betas=[0.8, 0.95]", "optim.betas", (0.8, 0.95)),
        ("loader.image_size=128x256", "loader.image_size", (128, 256)),
        ("loader.image_size=[128,256]", "loader.image_size", (128, 256)),
        ("loader.image_size=128,256", "loader.image_size", (128, 256)),
        ("loader.mix=proportional", "loader.mix", "proportional"),
        ("loader.mix=stats.json#0.5", "loader.mix", "stats.json#0.5"),
        ("loader.mix=kitti=0.3,a2d2=0.7", "loader.mix", {"kitti": 0.3, "a2d2": 0.7}),
        ("loader.mix={kitti = 1, a2d2 = 3}", "loader.mix", {"kitti": 1.0, "a2d2": 3.0}),
        ("loader.mix.kitti=2", "loader.mix", {"kitti": 2.0}),
        ("loader.mix=none", "loader.mix", None),
        ("loader.mix='runs=2/stats.json#0.5'", "loader.mix", "runs=2/stats.json#0.5"),
        ("weighting.weights={seg = 1.0, depth = 0.5}", "weighting.weights", {"seg": 1.0, "depth": 0.5}),
        ("weighting.weights.seg=2", "weighting.weights", {"seg": 2.0}),
        ("optim.parts.encoder.lr=1e-5", "optim.parts", {"encoder": PartConfig(lr=1e-5)}),
        ("optim.parts.heads.seg.weight_decay=0", "optim.parts", {"heads.seg": PartConfig(weight_decay=0.0)}),
        ('optim.parts."heads.seg"={lr = 0.5}', "optim.parts", {"heads.seg": PartConfig(lr=0.5)}),
        ("optim.parts.encoder.lr=none", "optim.parts", {"encoder": PartConfig()}),
        ("task_options.depth.si_lambda=0.85", "task_options", {"depth": {"si_lambda": 0.85}}),
        (
            "task_options.seg={ignore = 255, weights = [1, 2]}",
            "task_options",
            {"seg": {"ignore": 255, "weights": [1, 2]}},
        ),
        ("model_options.repeats=2", "model_options", {"repeats": 2}),
        ("model_options.norm=batch", "model_options", {"norm": "batch"}),
        ("model_options.flag=true", "model_options", {"flag": True}),
        ("model_options.scales=[1, 0.5]", "model_options", {"scales": [1, 0.5]}),
        ("model_options.nested.depth=3", "model_options", {"nested": {"depth": 3}}),
        ("eval.stl.seg=runs/stl_seg", "eval.stl", {"seg": "runs/stl_seg"}),
        ("eval.batch_size=none", "eval.batch_size", None),
        ("optim.nesterov=yes", "optim.nesterov", True),
        ("device=cuda:1", "device", "cuda:1"),
    ],
)
def test_a_set_item_is_read_as_the_type_of_its_field(item, key, expected):
    value = get(apply_sets(TrainConfig(), [item]), key)
    assert value == expected and type(value) is type(expected)


def test_a_dotted_key_may_quote_a_part_and_pad_with_spaces():
    config = apply_sets(TrainConfig(), ['optim.parts."heads.seg".lr = 0.25'])
    assert config.optim.parts == {"heads.seg": PartConfig(lr=0.25)}


# ---- errors ------------------------------------------------------------------------------------


def test_an_unknown_top_level_key_in_a_file_lists_the_keys(tmp_path):
    path = write(tmp_path, "stepz = 10\n")
    with pytest.raises(
        MtlDataError,
        match=re.escape(f"{path}: unknown key stepz (did you mean steps?); the config has shards, out, tasks, mode,"),
    ):
        load_config(path)


def test_an_unknown_nested_key_in_a_file_lists_the_section(tmp_path):
    path = write(tmp_path, "[optim]\nlrr = 0.1\n")
    with pytest.raises(
        MtlDataError,
        match=re.escape(
            f"{path}: unknown key optim.lrr (did you mean optim.lr?); optim has name, lr, weight_decay, momentum,"
        ),
    ):
        load_config(path)


@pytest.mark.parametrize(
    "item, says",
    [
        ("loader.batch_sise=4", "unknown key loader.batch_sise (did you mean loader.batch_size?); loader has "),
        (
            "optim.parts.encoder.lrr=1",
            (
                "unknown key optim.parts.encoder.lrr (did you mean optim.parts.encoder.lr?); "
                "optim.parts.encoder has lr, weight_decay"
            ),
        ),
        ("optim.lr.x=1", "unknown key optim.lr.x: optim.lr is a finite number, not a table"),
        ("model_options.a=1", None),
    ],
)
def test_an_unknown_set_key_lists_the_section_but_free_options_take_any_key(item, says):
    if says is None:
        assert apply_sets(TrainConfig(), [item]).model_options == {"a": 1}
        return
    with pytest.raises(MtlDataError, match=re.escape(f"--set {item}: {says}")):
        apply_sets(TrainConfig(), [item])


@pytest.mark.parametrize(
    "text, says",
    [
        ('[optim]\nlr = "fast"\n', "optim.lr must be a finite number, got 'fast'"),
        ("steps = 1.5\n", "steps must be an integer, got 1.5"),
        ("steps = true\n", "steps must be an integer, got True"),
        ('compile = "yes"\n', "compile must be a boolean (true/false, 1/0, yes/no), got 'yes'"),
        ('tasks = "seg"\n', "tasks must be an array (each a string), got 'seg'"),
        (
            "[loader]\nimage_size = [1, 2, 3]\n",
            ("loader.image_size must be an array of 2 values (each an integer), got [1, 2, 3]"),
        ),
        ("[optim]\nlr = inf\n", "optim.lr must be a finite number, got inf"),
        ("optim = 3\n", "optim must be a table of OptimConfig fields, got 3"),
        ('[weighting.weights]\nseg = "high"\n', "weighting.weights.seg must be a finite number, got 'high'"),
        ("[model_options]\nwhen = 1979-05-27\n", "model_options.when must be a string, finite number, boolean"),
    ],
)
def test_a_value_of_the_wrong_type_in_a_file_names_file_key_type_and_value(tmp_path, text, says):
    path = write(tmp_path, text)
    with pytest.raises(MtlDataError, match=re.escape(f"{path}: {says}")):
        load_config(path)


@pytest.mark.parametrize(
    "item, says",
    [
        ("optim.lr=fast", "optim.lr must be a finite number, got 'fast'"),
        ("steps=1.5", "steps must be an integer, got '1.5'"),
        ("steps=1e3", "steps must be an integer, got '1e3'"),
        ("compile=maybe", "compile must be a boolean (true/false, 1/0, yes/no), got 'maybe'"),
        ("steps=none", "steps must be an integer, got 'none'"),
        ("channels_last=maybe", "channels_last must be a boolean (true/false, 1/0, yes/no) or none, got 'maybe'"),
        ("optim.betas=0.9", "optim.betas must be an array of 2 values (each a finite number), got '0.9'"),
        ("loader.image_size=1x2x3", "loader.image_size must be an array of 2 values (each an integer), got '1x2x3'"),
        ("loader.mix={kitti = 'x'}", "loader.mix.kitti must be a finite number, got 'x'"),
        ("optim.lr=nan", "optim.lr must be a finite number, got nan"),
        ("optim.parts.encoder.lr=fast", "optim.parts.encoder.lr must be a finite number or none, got 'fast'"),
        ("optim.lr", "expected key=value, e.g. optim.lr=3e-4"),
        ("optim..lr=1", "'optim..lr' is not a dotted key"),
    ],
)
def test_set_text_that_is_not_of_the_field_type_names_the_item_and_the_type(item, says):
    with pytest.raises(MtlDataError, match=re.escape(f"--set {item}: {says}")):
        apply_sets(TrainConfig(), [item])


@pytest.mark.parametrize(
    "overrides, says",
    [
        ({"optim.lr": "fast"}, "optim.lr must be a finite number, got 'fast'"),
        ({"steps": True}, "steps must be an integer, got True"),
        ({"steps": None}, "steps must be an integer, got None"),
        ({"optim.lrr": 1.0}, "unknown key optim.lrr"),
        (
            {"model_options.x": None},
            "model_options.x must be a string, finite number, boolean, array or table, got None",
        ),
    ],
)
def test_an_override_of_the_wrong_type_is_refused(overrides, says):
    with pytest.raises(MtlDataError, match=re.escape(f"command-line options: {says}")):
        apply_overrides(TrainConfig(), overrides)


@pytest.mark.parametrize(
    "sets, says",
    [
        (["steps=0"], "steps must be >= 1, got 0"),
        (["loader.batch_size=0"], "loader.batch_size must be >= 1, got 0"),
        (["optim.lr=-1"], "optim.lr must be >= 0.0, got -1.0"),
        (["log_every=0"], "log_every must be >= 1, got 0"),
        (["save_every=-1"], "save_every must be >= 0 (0 = only at the end), got -1"),
        (["eval.every=-5"], "eval.every must be >= 0 (0 = only at the end), got -5"),
        (["schedule.min_lr_ratio=2"], "schedule.min_lr_ratio must be in [0.0, 1.0], got 2.0"),
        (["optim.betas=1.0,0.9"], "optim.betas[0] must be in [0.0, 1.0), got 1.0"),
        (["loader.flip_p=1.5"], "loader.flip_p must be in [0.0, 1.0], got 1.5"),
        (["loader.image_size=0x64"], "loader.image_size must be (H, W) >= 1 pixels, got [0, 64]"),
        (["optim.parts.encoder.lr=-0.1"], "optim.parts.encoder.lr must be >= 0.0, got -0.1"),
        (["optim.name=sgd", "optim.momentum=0", "optim.nesterov=true"], "optim.nesterov needs optim.momentum > 0"),
    ],
)
def test_an_out_of_range_value_names_the_set_item_that_gave_it(sets, says):
    with pytest.raises(MtlDataError, match=re.escape(says)) as caught:
        resolve(None, {}, sets)
    assert str(caught.value).startswith(f"--set {sets[-1]}")


@pytest.mark.parametrize(
    "item, says",
    [
        ("optim.name=adam", "optim.name must be one of adamw, sgd, got 'adam'"),
        ("schedule.name=linear", "schedule.name must be one of cosine, poly, step, constant, got 'linear'"),
        ("precision=fp64", "precision must be one of fp32, bf16, fp16, got 'fp64'"),
        ("mode=asym", "mode must be one of symmetric, asymmetric, stl, got 'asym'"),
        ("device=gpu", "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("train_split=training", "train_split must be one of train, val, test, got 'training'"),
        (
            "weighting.rule=sqrt",
            ("weighting.rule must be one of inverse_frequency, sqrt_inverse_frequency, effective_number, got 'sqrt'"),
        ),
        ("loader.mp_context=thread", "loader.mp_context must be one of fork, spawn, forkserver, got 'thread'"),
        (
            "optim.parts.decoder.lr=1",
            "optim.parts has 'decoder'; the parts are encoder, neck, weighting and heads.<task>",
        ),
        ("eval.best_metric=miou", "eval.best_metric must be task/metric, e.g. seg/miou, got 'miou'"),
    ],
)
def test_a_bad_choice_lists_the_choices(item, says):
    with pytest.raises(MtlDataError, match=re.escape(f"--set {item}: {says}")):
        resolve(None, {}, [item])


def test_a_toml_syntax_error_names_the_file_and_the_line(tmp_path):
    path = write(tmp_path, "steps = 10\n[optim]\nlr = = 1\n")
    with pytest.raises(MtlDataError, match=re.escape(f"{path}:3: invalid TOML: ")):
        load_config(path)


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(MtlDataError, match=re.escape(f"{tmp_path / 'nope.toml'}: no such config file")):
        resolve(tmp_path / "nope.toml", {}, [])


@pytest.mark.parametrize(
    "source, says",
    [
        ("file", "loader.split is set by the trainer from train_split (training) and eval.split (evaluation)"),
        ("set", "loader.tasks is set by the trainer from tasks"),
        ("override", "loader.infinite is set by the trainer (an endless stream for training"),
    ],
)
def test_a_loader_field_that_the_trainer_sets_is_refused_naming_what_sets_it(tmp_path, source, says):
    path = write(tmp_path, '[loader]\nsplit = "val"\n')
    calls = {
        "file": lambda: load_config(path),
        "set": lambda: apply_sets(TrainConfig(), ["loader.tasks=seg"]),
        "override": lambda: apply_overrides(TrainConfig(), {"loader.infinite": False}),
    }
    with pytest.raises(MtlDataError, match=re.escape(says)):
        calls[source]()


def test_validate_refuses_a_trainer_set_loader_field_built_in_code():
    with pytest.raises(MtlDataError, match=r"loader\.split is set by the trainer"):
        validate(TrainConfig(loader=LoaderConfig(split="val")))


def test_stl_with_two_tasks_names_both_keys_and_where_they_came_from(tmp_path):
    path = write(tmp_path, 'mode = "stl"\n')
    with pytest.raises(
        MtlDataError,
        match=re.escape(
            f"{path} and --set tasks=seg,depth: mode 'stl' trains exactly one task, got tasks ['seg', 'depth']"
        ),
    ):
        resolve(path, {}, ["tasks=seg,depth"])
    assert resolve(path, {}, ["tasks=seg"]).tasks == ("seg",)


def test_a_range_error_from_a_file_names_the_file(tmp_path):
    path = write(tmp_path, "[schedule]\nstep_size = 0\n")
    with pytest.raises(MtlDataError, match=re.escape(f"{path}: schedule.step_size must be >= 1, got 0")):
        resolve(path, {}, [])


@pytest.mark.parametrize(
    "sets, says",
    [
        (["tasks=seg", "weighting.weights.flow=1"], "weighting.weights names flow, not among tasks (seg)"),
        (["tasks=seg", "task_options.depth.si_lambda=1"], "task_options names depth, not among tasks (seg)"),
        (["tasks=seg", "optim.parts.heads.lane.lr=1"], "optim.parts.heads.lane names lane, not among tasks (seg)"),
        (["tasks=seg", "eval.stl.depth=runs/d"], "eval.stl names depth, not among tasks (seg)"),
        (
            ["weighting.stats=s.json", "weighting.first_steps=10"],
            "weighting.stats and weighting.first_steps are each a source of static task weights; give one",
        ),
    ],
)
def test_entries_that_contradict_other_fields_are_refused(sets, says):
    with pytest.raises(MtlDataError, match=re.escape(says)):
        resolve(None, {}, sets)


def test_task_keyed_entries_are_free_when_the_tasks_are_left_to_the_split():
    config = resolve(None, {}, ["weighting.weights.flow=1", "eval.stl.depth=runs/d"])
    assert config.weighting.weights == {"flow": 1.0}


def test_validate_checks_the_types_of_a_config_built_in_code():
    with pytest.raises(MtlDataError, match=re.escape("steps must be an integer, got '10'")):
        validate(TrainConfig(steps="10"))
    validate(TrainConfig())


def test_from_dict_refuses_an_unknown_key():
    with pytest.raises(MtlDataError, match=re.escape("saved config: unknown key optim.rate;")):
        from_dict({"optim": {"rate": 1.0}})


# ---- differences -------------------------------------------------------------------------------


def test_differences_lists_the_changed_keys_with_both_values():
    a = TrainConfig()
    b = dataclasses.replace(
        a,
        tasks=("seg",),
        optim=dataclasses.replace(a.optim, lr=3e-4),
        weighting=dataclasses.replace(a.weighting, weights={"seg": 2.0}),
        loader=dataclasses.replace(a.loader, mix={"kitti": 1.0}),
    )
    assert differences(a, b) == [
        'tasks: [] -> ["seg"]',
        "loader.mix: (unset) -> {kitti = 1.0}",
        "optim.lr: 0.001 -> 0.0003",
        "weighting.weights.seg: (unset) -> 2.0",
    ]
    assert differences(b, a)[1] == "loader.mix: {kitti = 1.0} -> (unset)"


def test_differences_of_equal_configs_is_empty_and_ignore_leaves_keys_out():
    a = full_config({"kitti": 0.3})
    assert differences(a, full_config({"kitti": 0.3})) == []
    b = dataclasses.replace(a, steps=a.steps + 1, optim=dataclasses.replace(a.optim, parts={}))
    assert differences(a, b, ignore=("steps",)) == [
        "optim.parts.encoder: {lr = 1e-05} -> (unset)",
        "optim.parts.heads.seg: {lr = 0.01, weight_decay = 0.0} -> (unset)",
    ]
    assert differences(a, b)[0] == "steps: 20000 -> 20001"


def test_differences_tells_a_free_option_true_from_1():
    a = TrainConfig(model_options={"flag": 1})
    assert differences(a, TrainConfig(model_options={"flag": True})) == ["model_options.flag: 1 -> true"]

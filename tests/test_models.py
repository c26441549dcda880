"""The model registry, the ResNet encoders (torchvision's names, weights from a file), the FPN and
BiFPN necks, and MultiTaskModel, on tiny inputs (64x128) and test-local tasks."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtl_data.errors import MtlDataError
from mtl_data.train.models import (
    MultiTaskModel,
    create_encoder,
    create_model,
    create_neck,
    list_encoders,
    list_models,
    list_necks,
    register_encoder,
    register_model,
    register_neck,
    registry,
)
from mtl_data.train.models.bifpn import FastNormalizedFusion
from mtl_data.train.tasks import FeatureSpec, Task, list_tasks
from mtl_data.train.tasks import base as task_base

SIZE = (64, 128)  # (H, W) of the test images


# ---- test-local tasks (never registered globally) ------------------------------------------------


class DenseHead(nn.Module):
    """Every level -> 1x1 conv -> upsampled to the image and summed: uses every neck output."""

    def __init__(self, spec: FeatureSpec, out: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(spec.channels, out, 1) for _ in spec.strides)

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        maps = [
            F.interpolate(conv(f), size=image_size, mode="bilinear", align_corners=False)
            for conv, f in zip(self.convs, features)
        ]
        return torch.stack(maps).sum(0)  # (B, out, H, W)


class GlobalHead(nn.Module):
    """Coarsest level -> global average -> linear."""

    def __init__(self, spec: FeatureSpec):
        super().__init__()
        self.fc = nn.Linear(spec.channels, 1)

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        return self.fc(features[-1].mean(dim=(2, 3)))[:, 0]  # (B,)


class ToyTask(Task):
    """The least a Task needs for the model side; everything else is out of scope here."""

    metric_keys = ("x",)
    higher_is_better = True

    def loss(self, output, batch):
        raise NotImplementedError

    def decode(self, output, batch):
        raise NotImplementedError

    def ground_truth(self, sample):
        raise NotImplementedError

    def metric(self):
        raise NotImplementedError

    def writer(self, out_dir):
        raise NotImplementedError

    def holds_predictions(self, pred_dir):
        raise NotImplementedError

    def read_predictions(self, pred_dir):
        raise NotImplementedError

    def draw(self, image, prediction, sample):
        raise NotImplementedError


class ToySeg(ToyTask):
    name = "seg"
    default_classes = ("road", "car", "sky")

    def build_head(self, features: FeatureSpec) -> nn.Module:
        return DenseHead(features, self.num_classes)


class ToySteer(ToyTask):
    name = "steer"

    def build_head(self, features: FeatureSpec) -> nn.Module:
        return GlobalHead(features)


@dataclass(frozen=True)
class ToySignConfig:
    hidden: int = 8


class ToySign(ToyTask):
    """A task with a class table and a Config, for building by name (registered per test)."""

    name = "sign"
    Config = ToySignConfig
    class_table = "sign"
    default_classes = ("stop", "yield")

    def build_head(self, features: FeatureSpec) -> nn.Module:
        return nn.Sequential()  # not run: only its construction is tested


def toy_tasks() -> list[Task]:
    return [ToySeg(), ToySteer()]


@pytest.fixture
def sign_registered(monkeypatch):
    """``ToySign`` as the task "sign" for this test only."""
    monkeypatch.setitem(task_base._TASKS, "sign", ToySign)


def build(name: str, seed: int = 0, **kw: Any) -> MultiTaskModel:
    torch.manual_seed(seed)
    return create_model(name, tasks=toy_tasks(), **kw)


def image(batch: int = 2, size: tuple[int, int] = SIZE, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def error_of(fn, *args, **kw) -> str:
    """The message of the MtlDataError ``fn`` raises, checked to be one line."""
    with pytest.raises(MtlDataError) as info:
        fn(*args, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- torchvision's ResNet, written out from its description ----------------------------------------


def torchvision_resnet_shapes(block: str, layers: list[int]) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every entry of torchvision's ``resnet*().state_dict()``, in its order.

    From torchvision/models/resnet.py: conv1 7x7 64, bn1, layer1..4 of ``layers`` blocks with
    planes 64/128/256/512; BasicBlock = conv1 3x3, bn1, conv2 3x3, bn2; Bottleneck = conv1 1x1,
    bn1, conv2 3x3, bn2, conv3 1x1 (x4), bn3; the first block of a stage has downsample.0 (1x1
    conv) + downsample.1 (BN) when it strides or changes width; then fc (1000 classes).
    """
    entries: list[tuple[str, tuple[int, ...]]] = []

    def bn(prefix: str, c: int) -> None:
        entries.extend(
            [
                (f"{prefix}.weight", (c,)),
                (f"{prefix}.bias", (c,)),
                (f"{prefix}.running_mean", (c,)),
                (f"{prefix}.running_var", (c,)),
                (f"{prefix}.num_batches_tracked", ()),
            ]
        )

    entries.append(("conv1.weight", (64, 3, 7, 7)))
    bn("bn1", 64)
    expansion = 1 if block == "basic" else 4
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        for index in range(blocks):
            p = f"layer{stage}.{index}"
            stride = 2 if stage > 1 and index == 0 else 1
            out = planes * expansion
            if block == "basic":
                entries.append((f"{p}.conv1.weight", (planes, inplanes, 3, 3)))
                bn(f"{p}.bn1", planes)
                entries.append((f"{p}.conv2.weight", (planes, planes, 3, 3)))
                bn(f"{p}.bn2", planes)
            else:
                entries.append((f"{p}.conv1.weight", (planes, inplanes, 1, 1)))
                bn(f"{p}.bn1", planes)
                entries.append((f"{p}.conv2.weight", (planes, planes, 3, 3)))
                bn(f"{p}.bn2", planes)
                entries.append((f"{p}.conv3.weight", (out, planes, 1, 1)))
                bn(f"{p}.bn3", out)
            if index == 0 and (stride != 1 or inplanes != out):
                entries.append((f"{p}.downsample.0.weight", (out, inplanes, 1, 1)))
                bn(f"{p}.downsample.1", out)
            inplanes = out
    entries += [("fc.weight", (1000, inplanes)), ("fc.bias", (1000,))]
    return entries


RESNETS = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
}


def torchvision_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values in the shapes (and dtypes) of torchvision's state dict, fc included."""
    g = torch.Generator().manual_seed(seed)
    return {
        k: (
            torch.randint(0, 1000, shape, generator=g)
            if k.endswith("num_batches_tracked")
            else torch.randn(shape, generator=g)
        )
        for k, shape in torchvision_resnet_shapes(*RESNETS[name])
    }


# ---- registry ---------------------------------------------------------------------------------------


def test_every_encoder_composes_with_every_neck_and_the_list_is_sorted():
    names = list_models()
    assert {"resnet18-fpn", "resnet34-fpn", "resnet50-bifpn"} <= set(names)
    assert set(names) >= {f"{e}-{n}" for e in list_encoders() for n in list_necks()}
    assert names == sorted(names)
    assert {"resnet18", "resnet34", "resnet50"} <= set(list_encoders()) and {"fpn", "bifpn"} <= set(list_necks())


def test_unknown_model_names_the_valid_models():
    message = error_of(create_model, "resnet19-fpn", tasks=toy_tasks())
    assert "unknown model 'resnet19-fpn'" in message and "resnet18-fpn" in message and "resnet50-bifpn" in message


def test_unknown_encoder_and_neck_name_the_valid_ones():
    assert "resnet18" in error_of(create_encoder, "vgg16")
    assert "bifpn" in error_of(create_neck, "panet", (8, 16, 32, 64))


def test_unknown_task_names_the_registered_tasks():
    message = error_of(create_model, "resnet18-fpn", tasks=["telepathy"])
    assert "unknown task 'telepathy'" in message
    assert all(t in message for t in list_tasks())


def test_unknown_option_names_the_known_options():
    message = error_of(create_model, "resnet18-bifpn", tasks=toy_tasks(), repeat=2)
    assert "unknown option(s) repeat" in message
    assert "repeats" in message and "zero_init_residual" in message and "activation" in message
    assert "known: zero_init_residual" in error_of(create_model, "resnet18-fpn", tasks=toy_tasks(), repeats=2)


@pytest.mark.parametrize(
    "options", [{"repeats": "2"}, {"repeats": True}, {"zero_init_residual": 1}, {"activation": "gelu"}, {"repeats": 0}]
)
def test_option_of_wrong_type_or_value_is_an_error(options):
    message = error_of(create_model, "resnet18-bifpn", tasks=toy_tasks(), **options)
    assert next(iter(options)) in message


def test_a_task_given_twice_is_an_error():
    assert "seg given twice" in error_of(create_model, "resnet18-fpn", tasks=[ToySeg(), ToySeg()])


def test_something_that_is_not_a_task_is_an_error():
    assert "got 3" in error_of(create_model, "resnet18-fpn", tasks=[3])


def test_task_options_for_a_task_not_given_is_an_error():
    message = error_of(create_model, "resnet18-fpn", tasks=toy_tasks(), task_options={"depth": {"x": 1}})
    assert "task_options for depth" in message


def test_tasks_by_name_take_their_class_table_and_options(sign_registered):
    model = create_model(
        "resnet18-fpn",
        tasks=["sign"],
        classes={"sign": ["a", "b", "c"], "seg": ["x"]},
        task_options={"sign": {"hidden": 4}},
    )
    assert model.tasks["sign"].classes == ("a", "b", "c")
    assert model.tasks["sign"].config == ToySignConfig(hidden=4)
    default = create_model("resnet18-fpn", tasks=["sign"])
    assert default.tasks["sign"].classes == ("stop", "yield")
    assert "unknown option(s) depth" in error_of(
        create_model, "resnet18-fpn", tasks=["sign"], task_options={"sign": {"depth": 4}}
    )


def test_registered_tasks_build_by_name_and_run():
    names = list_tasks()
    if not names:
        pytest.skip("no task is registered yet")
    model = create_model("resnet18-fpn", tasks=names)
    outputs = model(image(batch=1))
    assert list(outputs) == names


def test_neck_channels_set_the_feature_spec_and_the_maps():
    model = build("resnet18-bifpn", neck_channels=32)
    assert model.feature_spec == FeatureSpec(channels=32, strides=(4, 8, 16, 32))
    assert [f.shape[1] for f in model.features(image())] == [32] * 4
    assert "neck_channels" in error_of(create_model, "resnet18-fpn", tasks=toy_tasks(), neck_channels=0)


def test_custom_models_register_list_and_receive_their_arguments(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    received = {}

    @dataclass(frozen=True)
    class TwoPathConfig:
        width: int = 16

    @register_model("twopath", config=TwoPathConfig)
    def twopath(tasks, config, *, weights, neck_channels):
        received.update(tasks=tasks, config=config, weights=weights, neck_channels=neck_channels)
        return MultiTaskModel(create_encoder("resnet18"), create_neck("fpn", (64, 128, 256, 512), 16), tasks)

    assert "twopath" in list_models() and list_models() == sorted(list_models())
    model = create_model("twopath", tasks=toy_tasks(), neck_channels=16, width=8)
    assert isinstance(model, MultiTaskModel)
    assert received["config"] == TwoPathConfig(width=8) and received["neck_channels"] == 16
    assert [t.name for t in received["tasks"]] == ["seg", "steer"] and received["weights"] is None
    assert "known: width" in error_of(create_model, "twopath", tasks=toy_tasks(), depth=3)


def test_registering_a_name_twice_or_with_a_dash_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "_ENCODERS", dict(registry._ENCODERS))
    monkeypatch.setattr(registry, "_NECKS", dict(registry._NECKS))
    with pytest.raises(ValueError, match="twice"):
        register_encoder("resnet18")(lambda: None)
    with pytest.raises(ValueError, match="'-'"):
        register_neck("bi-fpn")(lambda: None)


# ---- ResNet encoders ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RESNETS))
def test_resnet_state_dict_has_torchvisions_names_and_shapes(name):
    expected = [(k, s) for k, s in torchvision_resnet_shapes(*RESNETS[name]) if not k.startswith("fc.")]
    state = create_encoder(name).state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == expected
    assert state["bn1.num_batches_tracked"].dtype == torch.int64


@pytest.mark.parametrize(
    "name, channels",
    [("resnet18", (64, 128, 256, 512)), ("resnet34", (64, 128, 256, 512)), ("resnet50", (256, 512, 1024, 2048))],
)
def test_resnet_returns_four_stages_at_strides_4_to_32(name, channels):
    encoder = create_encoder(name)
    assert encoder.channels == channels and encoder.strides == (4, 8, 16, 32)
    maps = encoder(image())
    assert [tuple(m.shape) for m in maps] == [(2, c, 64 // s, 128 // s) for c, s in zip(channels, (4, 8, 16, 32))]
    assert not hasattr(encoder, "fc") and not hasattr(encoder, "avgpool")


@pytest.mark.parametrize("name", sorted(RESNETS))
def test_torchvision_weights_file_loads_strictly_and_lands(tmp_path, name):
    state = torchvision_state_dict(name)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    loaded = create_encoder(name, weights=path).state_dict()
    assert set(loaded) == set(state) - {"fc.weight", "fc.bias"}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)


def test_create_model_loads_the_encoder_weights(tmp_path):
    state = torchvision_state_dict("resnet18", seed=3)
    torch.save(state, tmp_path / "r18.pth")
    model = create_model("resnet18-fpn", tasks=toy_tasks(), weights=str(tmp_path / "r18.pth"))
    assert torch.equal(model.encoder.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.equal(model.encoder.layer2[0].downsample[1].running_var, state["layer2.0.downsample.1.running_var"])


def _wrong_shape(state):
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    return "conv1.weight (64, 3, 3, 3) in the file, (64, 3, 7, 7) expected"


def _missing(state):
    del state["layer4.1.bn2.running_var"]
    return "missing keys layer4.1.bn2.running_var"


def _unexpected(state):
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    return "unexpected keys layer5.0.conv1.weight"


@pytest.mark.parametrize("spoil", [_wrong_shape, _missing, _unexpected])
def test_weights_that_do_not_fit_are_one_error_naming_file_and_keys(tmp_path, spoil):
    state = torchvision_state_dict("resnet18")
    expected = spoil(state)
    torch.save(state, tmp_path / "bad.pth")
    message = error_of(create_model, "resnet18-fpn", tasks=toy_tasks(), weights=tmp_path / "bad.pth")
    assert str(tmp_path / "bad.pth") in message and expected in message and "resnet18" in message


def test_many_offending_keys_are_summarised(tmp_path):
    state = {k: v for k, v in torchvision_state_dict("resnet18").items() if not k.startswith("layer4")}
    torch.save(state, tmp_path / "short.pth")
    message = error_of(create_encoder, "resnet18", weights=tmp_path / "short.pth")
    assert "missing keys layer4.0.conv1.weight, layer4.0.bn1.weight, layer4.0.bn1.bias and 27 more" in message


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"not a checkpoint\n", "is not a torch state dict file"),
        ([1, 2, 3], "holds a list, not a state dict"),
        (
            {"model": {"conv1.weight": torch.zeros(1)}, "epoch": 3},
            "holds a dict with keys model, epoch, not a state dict",
        ),
    ],
)
def test_a_file_that_is_not_a_state_dict_is_one_error(tmp_path, content, expected):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    message = error_of(create_encoder, "resnet18", weights=path)
    assert str(path) in message and expected in message


def test_a_missing_weights_file_is_named(tmp_path):
    message = error_of(create_model, "resnet18-fpn", tasks=toy_tasks(), weights=tmp_path / "nope.pth")
    assert f"weights file {tmp_path / 'nope.pth'} does not exist" in message


def test_resnet_initialisation_is_torchvisions():
    encoder = create_encoder("resnet50")
    bns = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    # Kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (out_channels * k * k))
    for conv in (encoder.conv1, encoder.layer3[2].conv2):
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
        assert abs(conv.weight.mean().item()) < 0.05 * math.sqrt(2 / fan_out)


@pytest.mark.parametrize("name, last", [("resnet18", "bn2"), ("resnet50", "bn3")])
def test_zero_init_residual_zeroes_the_last_bn_of_each_block_only_when_asked(name, last):
    def blocks(enc):
        return [b for layer in (enc.layer1, enc.layer2, enc.layer3, enc.layer4) for b in layer]

    assert all(torch.all(getattr(b, last).weight == 1) for b in blocks(create_encoder(name)))
    zeroed = create_encoder(name, zero_init_residual=True)
    assert all(torch.all(getattr(b, last).weight == 0) for b in blocks(zeroed))
    assert all(torch.all(b.bn1.weight == 1) for b in blocks(zeroed))


# ---- necks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("neck", ["fpn", "bifpn"])
@pytest.mark.parametrize("size", [(64, 128), (70, 130)])  # 70x130: levels halve with ceil, not exactly
def test_necks_return_four_maps_of_out_channels_at_the_encoder_sizes(neck, size):
    encoder = create_encoder("resnet18")
    maps = encoder(image(size=size))
    outs = create_neck(neck, encoder.channels, 16)(maps)
    assert [tuple(o.shape) for o in outs] == [(2, 16, *m.shape[-2:]) for m in maps]


def test_fpn_is_lateral_plus_upsampled_top_down_then_3x3():
    neck = create_neck("fpn", (4, 8, 16, 32), 8)
    maps = [torch.randn(1, c, 16 // 2**i, 32 // 2**i) for i, c in enumerate((4, 8, 16, 32))]
    p5 = neck.lateral[3](maps[3])
    p4 = neck.lateral[2](maps[2]) + p5.repeat_interleave(2, -2).repeat_interleave(2, -1)
    outs = neck(maps)
    torch.testing.assert_close(outs[3], neck.output[3](p5))
    torch.testing.assert_close(outs[2], neck.output[2](p4))


def fusions(neck: nn.Module) -> list[FastNormalizedFusion]:
    return [m for m in neck.modules() if isinstance(m, FastNormalizedFusion)]


@pytest.mark.parametrize("repeats", [1, 2])
def test_bifpn_fusion_weights_start_at_one(repeats):
    neck = create_neck("bifpn", (8, 16, 32, 64), 16, repeats=repeats)
    found = fusions(neck)
    # per layer: 3 top-down nodes (2 inputs) and 3 bottom-up nodes (3, 3 and 2 inputs at P5)
    assert len(found) == 6 * repeats
    assert sorted(f.weight.numel() for f in found) == sorted([2, 2, 2, 3, 3, 2] * repeats)
    assert all(torch.equal(f.weight.data, torch.ones_like(f.weight)) for f in found)


def test_fast_normalized_fusion_clips_negative_weights_with_relu():
    fusion = FastNormalizedFusion(3)
    with torch.no_grad():
        fusion.weight.copy_(torch.tensor([2.0, -1.0, 0.5]))
    xs = [torch.full((1, 1, 2, 2), v) for v in (1.0, 10.0, 4.0)]
    assert fusion(xs)[0, 0, 0, 0].item() == pytest.approx((2 * 1 + 0 * 10 + 0.5 * 4) / (2 + 0.5 + 1e-4))


def test_bifpn_nodes_fuse_the_documented_inputs():
    torch.manual_seed(0)
    neck = create_neck("bifpn", (4, 8, 16, 32), 8).eval()
    layer = neck.layers[0]
    with torch.no_grad():
        layer.top_down[2].fusion.weight.copy_(torch.tensor([3.0, 0.5]))  # P4_td = f(P4_in, up(P5_in))
        layer.bottom_up[2].fusion.weight.copy_(torch.tensor([-1.0, 2.0]))  # P5_out = f(P5_in, down(P4_out))
    seen: dict[str, torch.Tensor] = {}

    def keep(key):
        return lambda module, args, output: seen.__setitem__(key, output)

    for key, module in {
        "p4_in": neck.inputs[2],
        "p5_in": neck.inputs[3],
        "p4_td": layer.top_down[2].fusion,
        "p4_out": layer.bottom_up[1],
        "p5_fused": layer.bottom_up[2].fusion,
    }.items():
        module.register_forward_hook(keep(key))
    maps = [torch.randn(1, c, 16 // 2**i, 32 // 2**i) for i, c in enumerate((4, 8, 16, 32))]
    with torch.no_grad():
        outs = neck(maps)
    up = seen["p5_in"].repeat_interleave(2, -2).repeat_interleave(2, -1)
    torch.testing.assert_close(seen["p4_td"], (3 * seen["p4_in"] + 0.5 * up) / (3.5 + 1e-4))
    down = F.max_pool2d(seen["p4_out"], 3, 2, 1)
    torch.testing.assert_close(seen["p5_fused"], 2 * down / (2 + 1e-4))  # the -1 weight is clipped to 0
    torch.testing.assert_close(outs[3], layer.bottom_up[2].conv(seen["p5_fused"]))


# ---- MultiTaskModel ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_models())
def test_forward_returns_one_output_per_task(name):
    model = build(name)
    outputs = model(image())
    assert list(outputs) == ["seg", "steer"]
    assert outputs["seg"].shape == (2, 3, *SIZE) and outputs["steer"].shape == (2,)
    assert isinstance(model.heads, nn.ModuleDict) and list(model.heads) == ["seg", "steer"]
    assert all(isinstance(t, Task) for t in model.tasks.values())
    assert not any(isinstance(v, Task) for v in model.modules())


@pytest.mark.parametrize("name", list_models())
def test_parts_partition_the_parameters(name):
    model = build(name)
    parts = model.parts()
    assert list(parts) == ["encoder", "neck", "heads.seg", "heads.steer"]
    ids = [id(p) for part in parts.values() for p in part.parameters()]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("name", list_models())
def test_backward_reaches_every_parameter(name):
    model = build(name)
    outputs = model(image())
    (outputs["seg"].square().mean() + outputs["steer"].square().mean()).backward()
    unreached = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert unreached == []


@pytest.mark.parametrize("name", ["resnet18-fpn", "resnet18-bifpn"])
def test_same_seed_same_model_same_outputs(name):
    a, b = build(name, seed=7), build(name, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    out_a, out_b = a(image()), b(image())
    assert torch.equal(out_a["seg"], out_b["seg"]) and torch.equal(out_a["steer"], out_b["steer"])
    assert not torch.equal(build(name, seed=8).encoder.conv1.weight, a.encoder.conv1.weight)


def test_a_model_without_tasks_is_encoder_and_neck():
    model = create_model("resnet18-fpn", tasks=[])
    assert model(image()) == {} and list(model.parts()) == ["encoder", "neck"]
    assert len(model.features(image())) == 4


def test_config_dataclasses_have_defaults_for_every_field():
    for table in (registry._ENCODERS, registry._NECKS, registry._MODELS):
        for entry in table.values():
            if entry.config is not None:
                entry.config()  # every field has a default
                assert all(f.default is not dataclasses.MISSING for f in dataclasses.fields(entry.config))

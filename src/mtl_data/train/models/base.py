"""What encoders and necks promise, and loading an encoder's weights from a file the user has.

An **encoder** maps an image (B, 3, H, W) to a list of feature maps, finest first, one per
entry of ``strides`` (map ``i`` is (B, channels[i], ceil(H / strides[i]), ceil(W / strides[i]))
for the ResNets). A **neck** maps that list to as many maps of ``out_channels`` channels each,
at the same resolutions; the heads receive the neck's maps (``tasks.base.FeatureSpec``).

Nothing here downloads anything: pretrained weights come from a file (``load_state_dict_file``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from mtl_data.errors import MtlDataError

#: how many offending keys an error message names before it says "and N more".
_SHOWN = 3


class Encoder(nn.Module):
    """Base of the encoders: ``forward(image (B, 3, H, W)) -> list[Tensor]``, finest first.

    Attributes a subclass sets:
        channels: channels of each returned map.
        strides: input pixels per feature pixel of each returned map.
        ignored_weight_keys: keys of a weights file that are dropped before loading (e.g. an
            ImageNet classifier's ``fc.weight``/``fc.bias``, which ``features_only`` lacks).
    """

    channels: tuple[int, ...]
    strides: tuple[int, ...]
    ignored_weight_keys: tuple[str, ...] = ()

    def load_weights(self, path: str | Path, what: str = "encoder") -> None:
        """Load a state dict file into this encoder, strictly (``load_state_dict_file``)."""
        load_state_dict_file(self, path, ignore=self.ignored_weight_keys, what=what)


class Neck(nn.Module):
    """Base of the necks: ``forward(features: list[Tensor]) -> list[Tensor]``.

    Takes the encoder's maps (channels ``in_channels``, finest first) and returns as many maps,
    at the same resolutions, each with ``out_channels`` channels. A neck that returns something
    else (TAG's ``SharedFeatures``: one map at stride 8 for every head) sets ``strides``, the
    strides of the maps its heads are built for (``FeatureSpec``); None: the encoder's.
    """

    in_channels: tuple[int, ...]
    out_channels: int
    strides: tuple[int, ...] | None = None


def load_state_dict_file(module: nn.Module, path: str | Path, ignore: Sequence[str] = (), what: str = "module") -> None:
    """Load the state dict saved at ``path`` into ``module`` with ``strict=True``.

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)`` (no code
    in it runs), keys in ``ignore`` are dropped, and the keys and shapes are compared with the
    module's before loading, so that a mismatch is one message naming the file and the first
    offending keys rather than PyTorch's multi-line report.

    Raises:
        MtlDataError: a missing file, a file that is not a state dict (parameter name -> tensor),
            or keys / shapes that do not match the module's.
    """
    path = Path(path)
    if not path.is_file():
        raise MtlDataError(
            f"weights file {path} does not exist (pass the path of a state dict file you have; nothing is downloaded)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for a bad file
        # Only the exception's kind: torch's own text for a non-weights file advises loading it
        # with weights_only=False, i.e. running code from it, which this project never does.
        raise MtlDataError(
            f"weights file {path} is not a torch state dict file ({type(exc).__name__}); pass a "
            "file saved with torch.save(model.state_dict(), path)"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        shown = f" with keys {_names(list(state))}" if isinstance(state, Mapping) else ""
        raise MtlDataError(
            f"weights file {path} holds a {type(state).__name__}{shown}, not a state dict of "
            f"parameter name -> tensor for the {what} (as torch.save(model.state_dict()) writes)"
        )
    state = {k: v for k, v in state.items() if k not in set(ignore)}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} expected"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label} {_names(keys)}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes:", wrong))
        if keys
    ]
    if problems:
        raise MtlDataError(f"weights file {path} does not fit the {what}: {'; '.join(problems)}")
    module.load_state_dict(state, strict=True)


def _names(items: Sequence[str]) -> str:
    """The first few ``items``, comma-separated, and how many more there are."""
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")

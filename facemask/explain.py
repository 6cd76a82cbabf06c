"""Grad-CAM (via the grad-cam library) for any timm backbone."""

from __future__ import annotations

import numpy as np
import pytorch_grad_cam
import torch
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

CAM_METHODS = {
    "gradcam": pytorch_grad_cam.GradCAM,
    "gradcam++": pytorch_grad_cam.GradCAMPlusPlus,
    "xgradcam": pytorch_grad_cam.XGradCAM,
    "eigencam": pytorch_grad_cam.EigenCAM,
    "layercam": pytorch_grad_cam.LayerCAM,
    "scorecam": pytorch_grad_cam.ScoreCAM,
    "hirescam": pytorch_grad_cam.HiResCAM,
}


def find_target_layer(model: nn.Module, image_size: int = 64) -> str:
    """Name of the last module that still outputs a spatial map (N, C, H>1, W>1).

    Found by running a forward pass and watching every module's output, so it works
    for any backbone without a per-architecture table: for ResNets it is `layer4`, for
    MobileNetV2 and EfficientNet the final `bn2`, for the baseline CNN `features`.
    """
    order: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if name:
            hooks.append(
                module.register_forward_hook(
                    lambda m, i, o, name=name: (
                        order.append(name)
                        if isinstance(o, torch.Tensor) and o.ndim == 4 and min(o.shape[2:]) > 1
                        else None
                    )
                )
            )
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise ValueError("no module outputs a spatial feature map; set explain.target_layer")
    return order[-1]


def get_module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as err:
        raise ValueError(f"model has no layer {name!r}") from err


def compute_cams(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    targets: list[int] | None = None,
    method: str = "gradcam",
) -> np.ndarray:
    """Heatmaps in [0, 1], one (H, W) per image; class defaults to the prediction."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}")
    outputs = None if targets is None else [ClassifierOutputTarget(t) for t in targets]
    cam = CAM_METHODS[method](model=model, target_layers=[get_module(model, layer)])
    try:
        # Not `with cam:` -- the library's __exit__ swallows IndexError silently.
        return cam(input_tensor=x, targets=outputs)
    finally:
        cam.activations_and_grads.release()


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 HWC image with the heatmap blended on top (uint8 HWC)."""
    return show_cam_on_image(
        image.astype(np.float32) / 255, heatmap, use_rgb=True, image_weight=1 - alpha
    )

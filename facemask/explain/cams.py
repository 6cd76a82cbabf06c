"""What the model sees: Grad-CAM and its faithfulness (grad-cam library), occlusion,
feature maps, filters, weight statistics and activation maximisation, for any timm backbone.

Every function takes a model and arrays and returns arrays; pictures are drawn by
facemask.explain.figures and facemask.explain.report, files by the explain stage.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pytorch_grad_cam
import torch
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.road import (
    NoisyLinearImputer,
    ROADLeastRelevantFirst,
    ROADMostRelevantFirst,
    neighbors_weights,
)
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve
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


# --------------------------------------------------------------------------- layers
def find_spatial_layers(model: nn.Module, image_size: int = 64) -> list[tuple[str, tuple]]:
    """(name, (C, H, W)) of every module whose output is a spatial map (H, W > 1), in the
    order the modules finish during a forward pass (a container after its children)."""
    found: list[tuple[str, tuple]] = []

    def record(name: str, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4 and min(output.shape[2:]) > 1:
            found.append((name, tuple(output.shape[1:])))

    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: record(name, o))
        for name, module in model.named_modules()
        if name
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return found


def find_target_layer(model: nn.Module, image_size: int = 64) -> str:
    """Name of the last module that still outputs a spatial map (N, C, H>1, W>1).

    Found by running a forward pass and watching every module's output, so it works
    for any backbone without a per-architecture table: for ResNets it is `layer4`, for
    MobileNetV2 and EfficientNet the final `bn2`, for the baseline CNN `features`.
    """
    found = find_spatial_layers(model, image_size)
    if not found:
        raise ValueError("no module outputs a spatial feature map; set explain.target_layer")
    return found[-1][0]


def find_target_layers(model: nn.Module, image_size: int = 64) -> list[str]:
    """`find_target_layer` of each backbone in joined backbones (a+b), else of the model.

    One layer per branch: the CAM library scales each layer's map to [0, 1] and averages
    them, so the heatmap shows what every branch looked at, not just the last one.
    """
    branches = getattr(model, "backbones", None)
    if isinstance(branches, nn.ModuleList):
        return [f"backbones.{i}.{find_target_layer(b, image_size)}" for i, b in enumerate(branches)]
    return [find_target_layer(model, image_size)]


def cam_layers(configured: str | list[str] | None, model: nn.Module, size: int) -> list[str]:
    """The configured target layer(s) (a name or a list), else the ones found."""
    if configured:
        return [configured] if isinstance(configured, str) else list(configured)
    return find_target_layers(model, size)


def find_stage_layers(model: nn.Module, image_size: int = 64) -> list[str]:
    """Ends of the network's stages, finest first: timm's own `feature_info` where the model
    has one (ResNet act1, layer1..layer4; MobileNetV2 blocks.0, 1, 2, 4, 6), else the last
    module at each spatial resolution (the baseline CNN's ReLUs and pools)."""
    info = getattr(model, "feature_info", None)
    if isinstance(info, list) and info and all("module" in f for f in info):
        return [f["module"] for f in info]
    last: dict[tuple, str] = {}
    for name, shape in find_spatial_layers(model, image_size):
        last[shape[1:]] = name
    return [last[hw] for hw in sorted(last, reverse=True)]


def pick_spread(items: Sequence[str], n: int) -> list[str]:
    """n items evenly spread from first to last (all of them if there are fewer)."""
    if n >= len(items):
        return list(items)
    return [items[round(k * (len(items) - 1) / max(n - 1, 1))] for k in range(n)]


def get_module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as err:
        raise ValueError(f"model has no layer {name!r}") from err


def find_first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first convolution that reads the RGB image."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return name, module
    raise ValueError("model has no Conv2d with 3 input channels")


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode with no weight gradients, restored afterwards: gradients
    w.r.t. activations or the input then skip every weight gradient (about half of a
    backward pass, and its memory)."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    try:
        yield model
    finally:
        model.train(was_training)
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


# --------------------------------------------------------------------------- CAMs
def compute_cams(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | Sequence[str],
    targets: list[int] | None = None,
    method: str = "gradcam",
    batch_size: int = 4,
) -> np.ndarray:
    """Heatmaps in [0, 1], one (H, W) per image; class defaults to the prediction.

    Batched because the backward pass keeps every activation of the batch alive.
    """
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}")
    out = []
    with frozen(model):
        layers = [layer] if isinstance(layer, str) else layer
        cam = CAM_METHODS[method](model=model, target_layers=[get_module(model, n) for n in layers])
        try:
            for i in range(0, len(x), batch_size):
                chunk = None if targets is None else targets[i : i + batch_size]
                outputs = None if chunk is None else [ClassifierOutputTarget(t) for t in chunk]
                # The input, not the weights, asks for a gradient: the graph still reaches
                # the target layer, and no weight gradient is computed.
                inputs = x[i : i + batch_size].detach().requires_grad_(True)
                # Not `with cam:` -- the library's __exit__ swallows IndexError silently.
                out.append(cam(input_tensor=inputs, targets=outputs))
        finally:
            cam.activations_and_grads.release()
    return np.concatenate(out) if out else np.zeros((0, *x.shape[2:]), np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 HWC image with the heatmap blended on top (uint8 HWC)."""
    return show_cam_on_image(
        image.astype(np.float32) / 255, heatmap, use_rgb=True, image_weight=1 - alpha
    )


def scale_map(heatmap: np.ndarray) -> np.ndarray:
    """Positive part scaled to [0, 1] (what overlay expects); all-zero stays zero."""
    m = np.clip(heatmap, 0, None).astype(np.float32)
    top = m.max()
    return m / top if top > 0 else m


def compute_region_share(maps: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Per map: the fraction of its non-negative mass inside a boolean (H, W) region.
    NaN for a map with no positive mass (nothing to attribute)."""
    m = np.clip(maps, 0, None).reshape(len(maps), -1).astype(np.float64)
    total = m.sum(1)
    inside = m[:, region.reshape(-1)].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def compute_lower_share(maps: np.ndarray) -> np.ndarray:
    """Share of each map's mass on the lower half of the image, where a mask sits on a
    face crop: a model that looks at masks puts most of its attention there."""
    h, w = maps.shape[1:]
    lower = np.broadcast_to((np.arange(h) + 0.5 > h / 2)[:, None], (h, w))
    return compute_region_share(maps, lower)


# --------------------------------------------------------------------------- faithfulness
def break_ties(cams: np.ndarray, seed: int = 0) -> np.ndarray:
    """CAMs plus a tiny seeded jitter, so percentile thresholds remove exactly the share
    asked for: Grad-CAM zeroes large areas, and with ties at a threshold the library's
    `cam < threshold` would keep none of them (e.g. remove 100 % instead of 80 %)."""
    rng = np.random.default_rng(seed)
    return (cams + rng.uniform(0, 1e-5, cams.shape)).astype(np.float32)


class QuickImputer(NoisyLinearImputer):
    """grad-cam's ROAD imputer (noisy linear infill of removed pixels), with its sparse
    system assembled in one go instead of entry by entry into a lil_matrix: the same
    matrix and solution, but building it took half of ROAD's time at 224 px."""

    @staticmethod
    def build_system(mask: np.ndarray, img: np.ndarray) -> tuple[coo_matrix, np.ndarray]:
        """Equations for the removed pixels (mask == 0): each equals the weighted mean of
        its 8 neighbours. Same as NoisyLinearImputer.setup_sparse_system."""
        flat_mask = mask.reshape(-1)
        flat_img = img.reshape(img.shape[0], -1)
        missing = np.flatnonzero(flat_mask == 0)
        var_of = np.zeros(len(flat_mask), dtype=int)
        var_of[missing] = np.arange(len(missing))
        b = np.zeros((len(missing), img.shape[0]))
        diagonal = np.ones(len(missing))
        rows, cols, vals = [np.arange(len(missing))], [np.arange(len(missing))], []
        for offset, weight in neighbors_weights:
            valid, coords = NoisyLinearImputer.add_offset_to_indices(missing, offset, mask.shape)
            ids, coords = np.flatnonzero(valid), coords[valid]
            known = flat_mask[coords] > 0.5
            b[ids[known]] -= weight * flat_img[:, coords[known]].T
            rows.append(ids[~known])
            cols.append(var_of[coords[~known]])
            vals.append(np.full((~known).sum(), weight))
            diagonal[~valid] -= weight  # neighbours off the image don't count
        vals.insert(0, -diagonal)
        shape = (len(missing), len(missing))
        a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape)
        return a, b

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a, b = self.build_system(mask.numpy(), img.numpy())
        solved = torch.tensor(spsolve(a.tocsc(), b), dtype=torch.float).reshape(len(b), -1)
        out = img.reshape(img.shape[0], -1).clone()
        missing = np.flatnonzero(mask.reshape(-1).numpy() == 0)
        out[:, missing] = solved.t() + self.noise * torch.randn_like(solved.t())
        return out.reshape_as(img)


def compute_road(
    model: nn.Module,
    x: torch.Tensor,
    cams: np.ndarray,
    targets: list[int],
    percentiles: Sequence[int] = (20, 40, 60, 80),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """ROAD (Rong et al. 2022, via grad-cam): change in the target's softmax probability
    after noisy-linear imputation of pixels, per percentile p (p % of pixels KEPT).

    Returns (len(percentiles), N) arrays:
    - morf: most relevant removed first. More negative = better: removing what the map
      calls important should hurt.
    - lerf: least relevant removed first. Closer to 0 = better: what it calls unimportant
      should not matter.
    and combined (N,) = mean over p of (lerf - morf) / 2, the library's ROADCombined.
    Higher = more faithful.
    """
    outputs = [ClassifierOutputSoftmaxTarget(t) for t in targets]
    cams = break_ties(cams, seed)
    with torch.no_grad():
        base = np.array(
            [t(o).numpy() for t, o in zip(outputs, model(x), strict=True)], dtype=np.float32
        )
    scores = {}
    for key, metric in (("morf", ROADMostRelevantFirst), ("lerf", ROADLeastRelevantFirst)):
        rows = []
        for p in percentiles:
            road = metric(p)
            road.perturbation.imputer = QuickImputer()
            # Scores after imputation, minus one shared baseline (not one per percentile).
            rows.append(road(x, cams, outputs, model, return_diff=False) - base)
        scores[key] = np.stack(rows)
    return {**scores, "combined": ((scores["lerf"] - scores["morf"]) / 2).mean(0)}


def compute_cam_mult_change(
    model: nn.Module, x: torch.Tensor, cams: np.ndarray, targets: list[int], batch_size: int = 16
) -> np.ndarray:
    """Change in the target's softmax probability when the (normalised) image is multiplied
    by its CAM, i.e. only the highlighted part is kept. Closer to 0 (or above) = better."""
    metric = CamMultImageConfidenceChange()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            chunk = [ClassifierOutputSoftmaxTarget(t) for t in targets[i : i + batch_size]]
            out.append(metric(x[i : i + batch_size], cams[i : i + batch_size], chunk, model))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# --------------------------------------------------------------------------- occlusion
@torch.no_grad()
def compute_occlusion(
    model: nn.Module,
    x: torch.Tensor,
    targets: list[int],
    patch: int,
    stride: int,
    batch_size: int = 32,
) -> np.ndarray:
    """Occlusion sensitivity (Zeiler & Fergus 2014): the drop in the target's softmax
    probability when a patch x patch square is set to 0 (the normalised data mean, a flat
    grey), averaged over the patches covering each pixel. (N, H, W); positive = evidence."""
    model.eval()
    n, _, h, w = x.shape
    tops = sorted({*range(0, h - patch + 1, stride), h - patch})
    lefts = sorted({*range(0, w - patch + 1, stride), w - patch})
    spots = [(t, left) for t in tops for left in lefts]
    base = model(x).softmax(-1)[torch.arange(n), torch.tensor(targets)]
    drop = torch.zeros(n, h, w)
    cover = torch.zeros(h, w)
    for t, left in spots:
        cover[t : t + patch, left : left + patch] += 1
    jobs = [(i, s) for i in range(n) for s in spots]
    for k in range(0, len(jobs), batch_size):
        chunk = jobs[k : k + batch_size]
        batch = x[[i for i, _ in chunk]].clone()
        for j, (_, (t, left)) in enumerate(chunk):
            batch[j, :, t : t + patch, left : left + patch] = 0
        idx = torch.tensor([i for i, _ in chunk])
        probs = model(batch).softmax(-1)[torch.arange(len(chunk)), torch.tensor(targets)[idx]]
        for (i, (t, left)), p in zip(chunk, base[idx] - probs, strict=True):
            drop[i, t : t + patch, left : left + patch] += p
    return (drop / cover).numpy()


# --------------------------------------------------------------------------- inside the net
@torch.no_grad()
def capture_activations(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Outputs of the named layers for a batch (copied: later in-place ops can't touch them)."""
    out: dict[str, torch.Tensor] = {}
    hooks = [
        get_module(model, name).register_forward_hook(
            lambda m, i, o, name=name: out.__setitem__(name, o.detach().clone())
        )
        for name in layers
    ]
    try:
        model.eval()
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return out


def top_channels(activation: torch.Tensor, k: int) -> list[int]:
    """Indices of the k channels with the highest mean activation (C, H, W)."""
    return activation.mean((1, 2)).topk(min(k, activation.shape[0])).indices.tolist()


def compute_weight_histograms(
    model: nn.Module, bins: int = 60, quantile: float = 0.995
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Histogram of every conv/linear layer's weights on one shared symmetric range
    (its edge bins catch the few weights beyond the `quantile` of |w|).

    Returns layer names, bin edges (bins + 1,) and per-layer fractions (layers, bins).
    """
    layers = [
        (name, m.weight.detach().float().flatten().numpy())
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    if not layers:
        raise ValueError("model has no Conv2d or Linear layer")
    top = float(np.quantile(np.abs(np.concatenate([w for _, w in layers])), quantile)) or 1.0
    edges = np.linspace(-top, top, bins + 1)
    counts = np.stack([np.histogram(np.clip(w, -top, top), edges)[0] / w.size for _, w in layers])
    return [name for name, _ in layers], edges, counts


def summarize_weights(model: nn.Module) -> list[dict]:
    """Per conv/linear layer: size, mean, std and largest |w| (numbers for a CSV)."""
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach().float()
            rows.append(
                {
                    "layer": name,
                    "n": w.numel(),
                    "mean": round(w.mean().item(), 6),
                    "std": round(w.std().item() if w.numel() > 1 else 0.0, 6),
                    "abs_max": round(w.abs().max().item(), 6),
                }
            )
    return rows


def filter_tiles(conv: nn.Conv2d) -> np.ndarray:
    """First-layer filters as uint8 RGB tiles (F, k, k, 3), each stretched to its own range
    so the pattern shows; grey where a filter is constant."""
    w = conv.weight.detach().float()
    w = w.mean(1, keepdim=True).expand(-1, 3, -1, -1) if w.shape[1] != 3 else w
    lo = w.amin((1, 2, 3), keepdim=True)
    span = w.amax((1, 2, 3), keepdim=True) - lo
    tiles = torch.where(span > 0, (w - lo) / span.clamp_min(1e-12), torch.full_like(w, 0.5))
    return (tiles.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()


class _Reached(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has run."""


def forward_to(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """Output of `layer`, without running the rest of the network."""
    seen: list[torch.Tensor] = []

    def stop(m: nn.Module, i: object, o: torch.Tensor) -> None:
        seen.append(o)
        raise _Reached

    hook = get_module(model, layer).register_forward_hook(stop)
    try:
        model(x)
    except _Reached:
        pass
    finally:
        hook.remove()
    if not seen:
        raise ValueError(f"layer {layer!r} did not run in the forward pass")
    return seen[0]


def maximize_activations(
    model: nn.Module,
    layer: str,
    channels: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    size: int = 96,
    steps: int = 40,
    lr: float = 0.05,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Activation maximisation: from grey noise, gradient ascent on the input to raise the
    mean activation of each channel (one image per channel, all in one batch).

    Small random shifts each step and pixels kept in range stop it from settling on
    high-frequency noise. Returns uint8 images (F, size, size, 3) and each channel's mean
    activation (F,) before and after as a (2, F) array.
    """
    gen = torch.Generator().manual_seed(seed)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    pixels = 0.5 + 0.05 * torch.randn(len(channels), 3, size, size, generator=gen)
    x = ((pixels.clamp(0, 1) - m) / s).requires_grad_(True)
    lo, hi = (0 - m) / s, (1 - m) / s
    idx = torch.tensor(list(channels))
    rows = torch.arange(len(channels))

    def objective(inp: torch.Tensor) -> torch.Tensor:
        return forward_to(model, inp, layer)[rows, idx].mean((1, 2))

    with frozen(model):  # gradients for the input only
        with torch.no_grad():
            before = objective(x).numpy()
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            dy, dx = torch.randint(-2, 3, (2,), generator=gen).tolist()
            opt.zero_grad()
            (-objective(torch.roll(x, (dy, dx), (2, 3))).sum()).backward()
            opt.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, hi), lo))
        with torch.no_grad():
            after = objective(x).numpy()
    images = ((x.detach() * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).numpy(), np.stack([before, after])

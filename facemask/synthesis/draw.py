"""Drawing on faces: mask templates, where each way of wearing a mask puts them, non-mask
occluders, and the blend that matches them to the face (light, colour, blur, noise).

Everything is drawn on the face crop enlarged to a working size and then brought back to the
crop's own size, so a synthetic mask is exactly as sharp as the face it sits on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from facemask.synthesis.landmarks import FaceFrame

CANVAS = (240, 160)  # a template's own pixels (width, height), before it is warped onto a face
WORK_SIDE = 256  # crops are enlarged to about this before drawing

# Where each way of wearing a mask puts its top and bottom edge (face frame v: 0 eyes, 1 the
# base of the nose, ~1.45 the mouth, ~2.3 the chin) and its half-width at both edges (u).
PLACEMENTS: dict[str, tuple[float, float, float, float]] = {
    "correct": (0.45, 2.5, 1.0, 0.85),  # over the nose bridge to under the chin
    "under_nose": (1.15, 2.6, 1.0, 0.85),  # the nose out, mouth and chin covered
    "under_chin": (2.05, 3.3, 0.95, 0.8),  # pulled down onto the chin and neck
    "one_ear": (0.45, 2.5, 1.0, 0.85),  # off one ear, hanging from the other (rotated)
}
TEMPLATES = ("surgical", "cloth", "ffp2", "black", "patterned", "real")
OCCLUDERS = ("hand", "sunglasses", "scarf", "phone", "microphone")

_SURGICAL = [(170, 200, 225), (232, 236, 240), (150, 200, 185), (225, 185, 195), (120, 150, 200)]
_FFP2 = [(238, 238, 232), (225, 225, 225), (240, 235, 220), (200, 205, 210)]


@dataclass
class Drawn:
    """What was drawn: the picture, and where (pixel box in the picture returned)."""

    image: Image.Image
    box: tuple[int, int, int, int]
    detail: str  # template colour, occluder variant: the provenance column `synth_detail`


# -- templates --------------------------------------------------------------------------------


def _outline(kind: str) -> list[tuple[float, float]]:
    """The template's outline on the canvas: surgical masks are pleated rectangles, the
    others are shaped to the nose and chin."""
    w, h = CANVAS
    if kind == "surgical":
        return [(6, 10), (w - 6, 10), (w - 14, h - 16), (w / 2, h - 6), (14, h - 16)]
    t = np.linspace(0, 1, 24)
    top = [
        (8 + (w - 16) * s, 34 - 30 * np.sin(np.pi * s) ** (0.7 if kind == "ffp2" else 1.2))
        for s in t
    ]
    bottom = [(w - 10 - (w - 20) * s, 0.62 * h + 0.36 * h * np.sin(np.pi * s)) for s in t]
    return top + bottom


def _rgb(
    rng: np.random.Generator, palette: list[tuple[int, int, int]] | None = None
) -> tuple[int, int, int]:
    if palette:
        return palette[int(rng.integers(len(palette)))]
    return tuple(int(c) for c in rng.integers(25, 235, size=3))  # type: ignore[return-value]


def template(
    kind: str, rng: np.random.Generator, texture: Image.Image | None = None
) -> tuple[Image.Image, Image.Image, str]:
    """A mask look on the canvas: (RGB, alpha, detail). `real` needs `texture`, a patch of a
    real mask cut from a with_mask crop."""
    if kind not in TEMPLATES:
        raise ValueError(f"unknown mask template {kind!r} (known: {', '.join(TEMPLATES)})")
    w, h = CANVAS
    alpha = Image.new("L", CANVAS, 0)
    shape = "surgical" if kind == "surgical" or (kind == "real" and rng.random() < 0.4) else kind
    ImageDraw.Draw(alpha).polygon(_outline(shape), fill=255)
    if kind == "surgical":
        colour = _rgb(rng, _SURGICAL)
    elif kind == "ffp2":
        colour = _rgb(rng, _FFP2)
    elif kind == "black":
        grey = int(rng.integers(15, 50, size=1)[0])
        colour = (grey, grey, grey)
    else:
        colour = _rgb(rng)
    img = Image.new("RGB", CANVAS, colour)
    draw = ImageDraw.Draw(img)
    detail = f"{kind}:{colour[0]},{colour[1]},{colour[2]}"
    if kind == "real":
        if texture is None:
            raise ValueError("the `real` mask template needs a texture cut from a with_mask crop")
        img = (
            texture.convert("RGB")
            .resize(CANVAS, Image.Resampling.BILINEAR)
            .filter(ImageFilter.GaussianBlur(2))
        )
        draw = ImageDraw.Draw(img)
        detail = "real"
    elif kind == "patterned":
        other = _rgb(rng)
        style = ["stripes", "dots", "checks"][int(rng.integers(3))]
        step = int(rng.integers(14, 30))
        for i in range(-h, w + h, step):
            if style == "stripes":
                draw.line([(i, 0), (i + h, h)], fill=other, width=step // 3)
            elif style == "checks":
                draw.line([(i, 0), (i, h)], fill=other, width=step // 3)
                draw.line([(0, i), (w, i)], fill=other, width=step // 3)
            else:
                for j in range(0, h, step):
                    draw.ellipse([i, j, i + step // 2, j + step // 2], fill=other)
        detail = f"patterned:{style}"
    shade = 0.82 if kind != "black" else 1.6
    dark = tuple(int(min(255, c * shade)) for c in (colour if kind != "real" else (90, 90, 90)))
    if shape == "surgical":  # pleats
        for y in (0.33, 0.52, 0.71):
            draw.line([(10, y * h), (w - 10, y * h)], fill=dark, width=3)
    elif kind == "ffp2":  # the centre seam
        draw.line([(w / 2, 6), (w / 2, h - 4)], fill=dark, width=2)
    # Fabric: fine noise, then curvature (darker towards the cheeks and the chin).
    arr = np.asarray(img, dtype=np.float32)
    arr += rng.normal(0, 5, size=arr.shape[:2])[..., None]
    u = np.linspace(-1, 1, w)[None, :]
    v = np.linspace(0, 1, h)[:, None]
    arr *= (1 - 0.25 * u**2 - 0.08 * v)[..., None]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img, alpha, detail


def real_texture(crop: Image.Image, margin: float) -> Image.Image:
    """The middle of the lower face of a with_mask crop: where its mask is."""
    w, h = crop.size
    m = margin / (1 + 2 * margin)  # the face box inside the crop
    fx0, fy0, fw, fh = w * m, h * m, w * (1 - 2 * m), h * (1 - 2 * m)
    return crop.crop(
        (
            round(fx0 + 0.28 * fw),
            round(fy0 + 0.62 * fh),
            round(fx0 + 0.72 * fw),
            round(fy0 + 0.86 * fh),
        )
    )


# -- geometry ---------------------------------------------------------------------------------


def placement_quad(
    frame: FaceFrame, placement: str, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The mask's corners (top-left, top-right, bottom-right, bottom-left) in pixels."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown mask placement {placement!r} (known: {', '.join(PLACEMENTS)})")
    top, bottom, half_top, half_bottom = PLACEMENTS[placement]
    if rng is not None:  # people wear them a little differently; never across the nose line
        top += rng.uniform(-0.07, 0.07)
        bottom += rng.uniform(-0.1, 0.1)
        scale = rng.uniform(0.92, 1.08)
        half_top, half_bottom = half_top * scale, half_bottom * scale
    # A turned head shows more of one cheek: the mask follows the nose and widens towards it.
    shift, left, right = 0.6 * frame.turn, 1 - frame.turn, 1 + frame.turn
    uv = np.array(
        [
            [shift - half_top * left, top],
            [shift + half_top * right, top],
            [shift + half_bottom * right, bottom],
            [shift - half_bottom * left, bottom],
        ]
    )
    if placement == "one_ear":
        side = -1 if rng is None or rng.random() < 0.5 else 1  # the ear it still hangs from
        pivot = np.array([side * half_top, 0.9])
        turn = np.radians(rng.uniform(45, 75) if rng is not None else 60) * -side
        rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        # Rotate in a frame with equal units on both axes, so the mask keeps its shape.
        k = frame.height / frame.eye_distance
        scaled = (uv - pivot) * [1, k]
        uv = (scaled @ rot.T) / [1, k] + pivot
    return frame.points(uv)


def _perspective(src: np.ndarray, dst: np.ndarray) -> tuple[float, ...]:
    """PIL's PERSPECTIVE coefficients: the map from output pixels `dst` to input pixels `src`."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return tuple(np.linalg.solve(np.array(rows), np.array(rhs)))


def warp_onto(
    size: tuple[int, int], rgb: Image.Image, alpha: Image.Image, quad: np.ndarray
) -> tuple[Image.Image, Image.Image]:
    """A canvas-sized template warped so that its corners land on `quad` in a `size` picture."""
    w, h = CANVAS
    coeffs = _perspective(np.array([[0, 0], [w, 0], [w, h], [0, h]], float), quad)
    return (
        rgb.transform(size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR),
        alpha.transform(size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR),
    )


# -- occluders --------------------------------------------------------------------------------


def _patch(arr: np.ndarray, frame: FaceFrame, u: float, v: float, radius: float) -> np.ndarray:
    """The square of side 2r around face point (u, v), r = `radius` eye distances (at least
    1 px), moved inside the picture."""
    x, y = frame.point(u, v)
    r = max(1, int(frame.eye_distance * radius))
    x, y = int(np.clip(x, r, arr.shape[1] - r - 1)), int(np.clip(y, r, arr.shape[0] - r - 1))
    return arr[y - r : y + r, x - r : x + r]


def skin_colour(img: Image.Image, frame: FaceFrame) -> tuple[int, int, int]:
    """The median colour of the cheeks (a patch beside each side of the nose)."""
    arr = np.asarray(img)
    samples = [_patch(arr, frame, u, 0.9, 0.15).reshape(-1, 3) for u in (-0.55, 0.55)]
    return tuple(int(c) for c in np.median(np.concatenate(samples), axis=0))  # type: ignore[return-value]


def _rotated_rect(
    centre: np.ndarray, length: float, width: float, angle: float
) -> list[tuple[float, float]]:
    d = np.array([np.cos(angle), np.sin(angle)])
    n = np.array([-d[1], d[0]])
    corners = [
        centre + d * length / 2 * a + n * width / 2 * b
        for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))
    ]
    return [tuple(c) for c in corners]


def _hand(
    draw: ImageDraw.ImageDraw, frame: FaceFrame, rng: np.random.Generator, skin: tuple
) -> str:
    d, ang = frame.eye_distance, np.radians(frame.angle)
    where = ["mouth", "chin", "cheek"][int(rng.integers(3))]
    u, v = {
        "mouth": (rng.uniform(-0.3, 0.3), 1.6),
        "chin": (rng.uniform(-0.3, 0.3), 2.3),
        "cheek": (rng.choice([-0.8, 0.8]), 1.4),
    }[where]
    palm = frame.point(u, v + 0.5)
    tone = tuple(int(np.clip(c * rng.uniform(0.85, 1.1), 0, 255)) for c in skin)
    edge = tuple(int(c * 0.7) for c in tone)
    pr = d * rng.uniform(0.45, 0.6)
    draw.ellipse(
        [palm[0] - pr, palm[1] - pr * 0.9, palm[0] + pr, palm[1] + pr * 1.1], fill=(*tone, 255)
    )
    # Four fingers up from the palm, spread a little; the thumb to one side.
    up = -np.pi / 2 + ang + rng.uniform(-0.4, 0.4)
    for spread in (-0.45, -0.15, 0.15, 0.45):
        base = palm + np.array([np.cos(ang), np.sin(ang)]) * spread * pr * 1.6
        length = d * (0.75 + 0.15 * (1 - abs(spread)))
        a = up + spread * 0.25
        centre = base + np.array([np.cos(a), np.sin(a)]) * length / 2
        poly = _rotated_rect(centre, length, d * 0.24, a)
        draw.polygon(poly, fill=(*tone, 255), outline=(*edge, 255))
    thumb = palm + np.array([np.cos(ang), np.sin(ang)]) * pr * rng.choice([-1.1, 1.1])
    draw.ellipse(
        [thumb[0] - d * 0.14, thumb[1] - d * 0.35, thumb[0] + d * 0.14, thumb[1] + d * 0.1],
        fill=(*tone, 255),
    )
    return f"hand:{where}"


def _sunglasses(
    draw: ImageDraw.ImageDraw, frame: FaceFrame, rng: np.random.Generator, skin: tuple
) -> str:
    d = frame.eye_distance
    lens = int(rng.integers(10, 60))
    colour = (lens, lens, int(lens * rng.uniform(0.9, 1.3)), 240)
    rx, ry = d * rng.uniform(0.36, 0.46), d * rng.uniform(0.26, 0.34)
    for u in (-0.5, 0.5):
        x, y = frame.point(u, 0.02)
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=colour)
        draw.ellipse(
            [x - rx * 0.5, y - ry * 0.6, x - rx * 0.1, y - ry * 0.3], fill=(200, 200, 210, 90)
        )
    frame_w = max(1, int(d * 0.06))
    draw.line(
        [tuple(frame.point(-0.5 + rx / d, -0.05)), tuple(frame.point(0.5 - rx / d, -0.05))],
        fill=(20, 20, 20, 255),
        width=frame_w,
    )
    for s in (-1, 1):
        draw.line(
            [tuple(frame.point(s * (0.5 + rx / d), -0.05)), tuple(frame.point(s * 1.2, -0.1))],
            fill=(20, 20, 20, 255),
            width=frame_w,
        )
    return "sunglasses"


def _scarf(
    draw: ImageDraw.ImageDraw, frame: FaceFrame, rng: np.random.Generator, skin: tuple
) -> str:
    colour = (*_rgb(rng), 255)
    top = FaceFrame.CHIN + rng.uniform(0.05, 0.3)  # below the chin: the mouth stays bare
    poly = frame.points(
        np.array(
            [[-1.3, top + 0.2], [0, top], [1.3, top + 0.2], [1.5, top + 2.0], [-1.5, top + 2.0]]
        )
    )
    draw.polygon([tuple(p) for p in poly], fill=colour)
    darker = (*(int(c * 0.75) for c in colour[:3]), 255)
    for k in (0.5, 1.0):
        draw.line(
            [tuple(frame.point(-1.3, top + k)), tuple(frame.point(1.3, top + k))],
            fill=darker,
            width=max(1, int(frame.eye_distance * 0.08)),
        )
    return "scarf"


def _phone(
    draw: ImageDraw.ImageDraw, frame: FaceFrame, rng: np.random.Generator, skin: tuple
) -> str:
    d = frame.eye_distance
    side = rng.choice([-1.0, 1.0])
    centre = frame.point(side * rng.uniform(0.8, 1.1), rng.uniform(0.9, 1.6))
    ang = np.radians(frame.angle + 90 + rng.uniform(-25, 25))
    body = int(rng.integers(10, 45))
    draw.polygon(_rotated_rect(centre, d * 1.5, d * 0.75, ang), fill=(body, body, body + 5, 255))
    draw.polygon(
        _rotated_rect(centre, d * 1.3, d * 0.6, ang), fill=(body + 25, body + 30, body + 45, 255)
    )
    return "phone"


def _microphone(
    draw: ImageDraw.ImageDraw, frame: FaceFrame, rng: np.random.Generator, skin: tuple
) -> str:
    d = frame.eye_distance
    head = frame.point(rng.uniform(-0.35, 0.35), rng.uniform(1.6, 2.2))
    r = d * rng.uniform(0.28, 0.4)
    grey = int(rng.integers(40, 110))
    ang = np.radians(frame.angle + 90 + rng.uniform(-30, 30))
    handle_c = head + np.array([np.cos(ang), np.sin(ang)]) * (r + d * 0.8)
    draw.polygon(_rotated_rect(handle_c, d * 1.7, r * 0.75, ang), fill=(25, 25, 28, 255))
    draw.ellipse([head[0] - r, head[1] - r, head[0] + r, head[1] + r], fill=(grey, grey, grey, 255))
    for k in np.linspace(-0.7, 0.7, 5):  # the grille
        draw.line(
            [(head[0] - r * 0.9, head[1] + k * r), (head[0] + r * 0.9, head[1] + k * r)],
            fill=(grey // 2,) * 3 + (255,),
            width=1,
        )
    draw.ellipse(
        [head[0] - r * 0.6, head[1] - r * 0.7, head[0] - r * 0.1, head[1] - r * 0.3],
        fill=(230, 230, 230, 110),
    )
    return "microphone"


_OCCLUDER_DRAW: dict[str, Callable[..., str]] = {
    "hand": _hand,
    "sunglasses": _sunglasses,
    "scarf": _scarf,
    "phone": _phone,
    "microphone": _microphone,
}


# -- matching and blending --------------------------------------------------------------------


def _lit(layer: Image.Image, work: Image.Image, frame: FaceFrame) -> Image.Image:
    """What is drawn, lit like the face: its brightness, and its left-to-right fall-off (a
    face lit from one side gets a mask lit from the same side)."""
    lum = np.asarray(work).astype(np.float32).mean(axis=2)
    w, h = work.size
    samples = [float(_patch(lum, frame, u, 1.0, 0.2).mean()) for u in (-0.6, 0.6)]
    left, right = (np.clip(s / 150.0, 0.3, 1.25) for s in samples)
    # Along the picture's x, from one cheek to the other (the roll of a face is small).
    x0, x1 = frame.point(-1, 1)[0], frame.point(1, 1)[0]
    t = np.clip((np.arange(w)[None, :] - x0) / max(x1 - x0, 1e-6), 0, 1)
    light = np.repeat(left + (right - left) * t, h, axis=0)
    return Image.fromarray(
        np.clip(np.asarray(layer, np.float32) * light[..., None], 0, 255).astype(np.uint8)
    )


def _sharpness(arr: np.ndarray, where: np.ndarray) -> float:
    lum = arr.astype(np.float32).mean(axis=2)
    lap = np.abs(
        4 * lum[1:-1, 1:-1] - lum[:-2, 1:-1] - lum[2:, 1:-1] - lum[1:-1, :-2] - lum[1:-1, 2:]
    )
    sel = where[1:-1, 1:-1]
    return float(lap[sel].mean()) if sel.any() else 0.0


def _finish(
    work: Image.Image,
    layer_rgb: Image.Image,
    layer_a: Image.Image,
    crop: Image.Image,
    rng: np.random.Generator,
    tint: float = 0.12,
) -> Image.Image:
    """Composite at the working size, bring back to the crop's size, then match blur and
    noise: the drawn part gets the blur whose sharpness is closest to the face's, and the
    face's own noise level."""
    face = np.asarray(work, dtype=np.float32)
    over = np.asarray(layer_rgb, dtype=np.float32)
    mean = face.reshape(-1, 3).mean(axis=0)
    over = over * (1 - tint) + mean * tint  # the scene's colour cast
    a = np.asarray(layer_a.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)[..., None] / 255
    crop_size = crop.size
    out = Image.fromarray(np.clip(over * a + face * (1 - a), 0, 255).astype(np.uint8)).resize(
        crop_size, Image.Resampling.LANCZOS
    )
    small_a = np.asarray(layer_a.resize(crop_size, Image.Resampling.BILINEAR)) > 127
    base = np.asarray(crop.convert("RGB"))
    target = _sharpness(base, small_a)
    best, best_gap = out, abs(_sharpness(np.asarray(out), small_a) - target)
    for radius in (0.4, 0.7, 1.0, 1.5, 2.0):
        cand = out.filter(ImageFilter.GaussianBlur(radius))
        gap = abs(_sharpness(np.asarray(cand), small_a) - target)
        if gap < best_gap:
            best, best_gap = cand, gap
    arr = np.asarray(best, dtype=np.float32)
    arr = np.where(small_a[..., None], arr, base.astype(np.float32))  # the face stays as it was
    smooth = np.asarray(Image.fromarray(base).filter(ImageFilter.GaussianBlur(1)), dtype=np.float32)
    sigma = float(np.clip(np.median(np.abs(base - smooth)) * 1.48, 0.5, 12))
    noise = rng.normal(0, sigma, size=arr.shape[:2])[..., None]
    arr = np.where(small_a[..., None], arr + noise, arr)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def working_copy(crop: Image.Image) -> tuple[Image.Image, float]:
    """The crop enlarged (never shrunk) so its longer side is about WORK_SIDE, and the factor."""
    scale = max(1.0, WORK_SIDE / max(crop.size))
    size = (round(crop.width * scale), round(crop.height * scale))
    return crop.resize(size, Image.Resampling.BICUBIC), scale


def _box(alpha: np.ndarray, scale: float) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(alpha > 127)
    if not len(xs):
        return (0, 0, 0, 0)
    return (
        int(xs.min() / scale),
        int(ys.min() / scale),
        int(np.ceil((xs.max() + 1) / scale)),
        int(np.ceil((ys.max() + 1) / scale)),
    )


def draw_mask(
    crop: Image.Image,
    frame: FaceFrame,
    placement: str,
    kind: str,
    rng: np.random.Generator,
    texture: Image.Image | None = None,
) -> Drawn:
    """A mask of look `kind` worn as `placement` on a face crop; `frame` is in crop pixels."""
    work, scale = working_copy(crop)
    wframe = frame.scaled(scale)
    rgb, alpha, detail = template(kind, rng, texture)
    quad = placement_quad(wframe, placement, rng)
    layer_rgb, layer_a = warp_onto(work.size, rgb, alpha, quad)
    lit = _lit(layer_rgb, work, wframe)
    # Ear loops: from the mask's side edges to the ear(s) it still hangs from.
    draw_rgb, draw_a = ImageDraw.Draw(lit), ImageDraw.Draw(layer_a)
    strap = tuple(int(c) for c in np.asarray(rgb).reshape(-1, 3).mean(axis=0))
    width = max(1, int(wframe.eye_distance * 0.05))
    sides = [(quad[0], quad[3], -1), (quad[1], quad[2], 1)]
    if placement == "one_ear":  # the loop still on an ear: the side nearer to the ear line
        sides = [
            min(
                sides,
                key=lambda s: abs(((s[0] + s[1]) / 2 - wframe.point(s[2] * 1.2, 0.9)) @ wframe.ey),
            )
        ]
    for top, bottom, s in sides:
        ear = wframe.point(s * 1.2, 0.9)
        for p in (top, bottom):
            draw_rgb.line([tuple(p), tuple(ear)], fill=strap, width=width)
            draw_a.line([tuple(p), tuple(ear)], fill=255, width=width)
    out = _finish(work, lit, layer_a, crop, rng)
    return Drawn(out, _box(np.asarray(layer_a), scale), detail)


def draw_occluder(
    crop: Image.Image, frame: FaceFrame, kind: str, rng: np.random.Generator
) -> Drawn:
    """Something that is not a mask in front of a bare face (the label stays without_mask)."""
    if kind not in _OCCLUDER_DRAW:
        raise ValueError(f"unknown occluder {kind!r} (known: {', '.join(OCCLUDERS)})")
    work, scale = working_copy(crop)
    wframe = frame.scaled(scale)
    layer = Image.new("RGBA", work.size, (0, 0, 0, 0))
    detail = _OCCLUDER_DRAW[kind](ImageDraw.Draw(layer), wframe, rng, skin_colour(work, wframe))
    rgb, alpha = layer.convert("RGB"), layer.getchannel("A")
    lit = _lit(rgb, work, wframe)
    out = _finish(work, lit, alpha, crop, rng, tint=0.05)
    return Drawn(out, _box(np.asarray(alpha), scale), detail)

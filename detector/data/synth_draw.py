"""Drawing for the synthetic benchmark (`detector.data.synth`): the categories, one object in its own patch
(shape mask, category texture, two colours, shading), and the cluttered background.

Every constant below changes the output: bump `synth.GENERATOR_VERSION` when one does (it is in the dir name).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# name: (family, texture). Family decides which knob draws it: slender_share -> rod,
# acentric_share -> ring/ell/crescent, the rest -> compact shapes. Ids are 1..len in this order.
CATEGORY_SPECS: dict[str, tuple[str, str]] = {
    "square": ("compact", "checkerboard"),
    "disc": ("compact", "polka dots"),
    "triangle": ("compact", "parallel stripes"),
    "star": ("compact", "concentric rings"),
    "rod": ("slender", "chevrons"),
    "ring": ("acentric", "radial spokes"),
    "ell": ("acentric", "grid lines"),
    "crescent": ("acentric", "smooth gradient"),
}
CATEGORIES: list[str] = list(CATEGORY_SPECS)

COMPACT_ASPECT = 1.5  # compact/acentric shapes: frame aspect log-uniform in [1/1.5, 1.5]
SLENDER_ASPECT = (3.0, 8.0)  # rods: long/short side log-uniform in this range, axis-aligned
ELL_TILT = np.pi / 12  # L-shapes: max rotation away from the 4 axis-aligned orientations
ROD_MIN_THICKNESS = 3.0  # px, so that a rod stays distinguishable from a scribble
TEXTURE_PERIOD = (0.14, 0.28, 2.0, 14.0)  # period = clip(size * U(a, b), lo, hi) px
MIN_CONTRAST = 60.0  # luminance difference between an object's two colours
DISTRACTORS = 24.0  # expected distractors per 320x320 image at clutter=1
CLOUD_AMPLITUDE = 30.0  # std of the low-frequency background modulation at clutter=1
CLOUD_CELL = 32  # px between the random nodes of that modulation
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


# ---------------------------------------------------------------------------------------------- objects
def _shape_mask(cat: str, u: np.ndarray, v: np.ndarray, xr: np.ndarray, yr: np.ndarray, hw: float, hh: float,
                rng: np.random.Generator) -> np.ndarray:
    """Inside test in the object frame: u, v in [-1, 1] over the frame box; xr, yr in px."""
    r2 = u * u + v * v
    if cat == "square":
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if cat == "disc":
        return r2 <= 1
    if cat == "triangle":  # apex (0, -1), base corners (+-1, 1)
        return (v <= 1) & (v >= 2 * np.abs(u) - 1)
    if cat == "star":  # 5 points, outer radius 1; fold into one half-sector, test against its edge
        ri = rng.uniform(0.4, 0.55)
        sector = 2 * np.pi / 5
        th = np.mod(np.arctan2(v, u), sector)
        th = np.minimum(th, sector - th)
        r = np.sqrt(r2)
        px, py = r * np.cos(th), r * np.sin(th)
        qx, qy = ri * np.cos(sector / 2), ri * np.sin(sector / 2)
        return (qx - 1) * py - qy * (px - 1) >= 0
    if cat == "rod":  # capsule along xr
        dx = np.maximum(np.abs(xr) - (hw - hh), 0)
        return dx * dx + yr * yr <= hh * hh
    if cat == "ring":
        return (r2 <= 1) & (r2 >= rng.uniform(0.45, 0.7) ** 2)
    if cat == "ell":  # arms 25-45% of the side thick: the box centre is never on the L
        t = 2 * rng.uniform(0.25, 0.45)
        return (np.abs(u) <= 1) & (np.abs(v) <= 1) & ((u <= -1 + t) | (v >= 1 - t))
    if cat == "crescent":
        d, rb = rng.uniform(0.35, 0.6), rng.uniform(0.75, 0.95)
        return (r2 <= 1) & ((u - d) ** 2 + v * v > rb * rb)
    raise KeyError(cat)


def _texture(cat: str, u: np.ndarray, v: np.ndarray, xr: np.ndarray, yr: np.ndarray, period: float,
             rng: np.random.Generator) -> np.ndarray:
    """Mixing weight in [0, 1] between the object's two colours; the pattern family is the category's."""
    px, py = rng.uniform(0, period, 2)
    if cat == "square":
        return (np.floor((xr + px) / period) + np.floor((yr + py) / period)) % 2
    if cat == "disc":
        fx, fy = (xr + px) / period % 1 - 0.5, (yr + py) / period % 1 - 0.5
        return (fx * fx + fy * fy < 0.09).astype(np.float32)
    if cat == "triangle":
        a = rng.uniform(0, np.pi)
        return ((xr * np.cos(a) + yr * np.sin(a) + px) / period % 1 < 0.5).astype(np.float32)
    if cat == "star":
        return ((np.sqrt(xr * xr + yr * yr) + px) / period % 1 < 0.5).astype(np.float32)
    if cat == "rod":
        return ((xr + np.abs(yr) + px) / period % 1 < 0.5).astype(np.float32)
    if cat == "ring":
        spokes = int(rng.integers(6, 13))
        return ((np.arctan2(v, u) / (2 * np.pi) * spokes + px / period) % 1 < 0.5).astype(np.float32)
    if cat == "ell":
        return (((xr + px) / period % 1 < 0.3) | ((yr + py) / period % 1 < 0.3)).astype(np.float32)
    if cat == "crescent":
        a = rng.uniform(0, 2 * np.pi)
        return np.clip((u * np.cos(a) + v * np.sin(a) + 1) / 2, 0, 1)
    raise KeyError(cat)


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random RGB colours with at least MIN_CONTRAST luminance difference (when 8 draws allow)."""
    a = rng.uniform(0, 255, 3).astype(np.float32)
    for _ in range(8):
        b = rng.uniform(0, 255, 3).astype(np.float32)
        if abs(float((a - b) @ _LUMA)) >= MIN_CONTRAST:
            break
    return a, b


def _render_object(rng: np.random.Generator, cat: str, size: float, max_extent: float) -> tuple[np.ndarray, np.ndarray]:
    """One object in its own patch, cropped to its pixels.

    Returns mask (h, w) bool and rgb (h, w, 3) float32 (meaningful where mask).
    """
    if CATEGORY_SPECS[cat][0] == "slender":
        aspect = _loguniform(rng, *SLENDER_ASPECT)
        size = max(size, ROD_MIN_THICKNESS * np.sqrt(aspect))
        theta = 0.0 if rng.random() < 0.5 else np.pi / 2  # axis-aligned: the box stays slender
    elif cat == "ell":  # one of 4 orientations, slightly tilted: the box centre stays off the L
        aspect = _loguniform(rng, 1 / COMPACT_ASPECT, COMPACT_ASPECT)
        theta = int(rng.integers(4)) * np.pi / 2 + rng.uniform(-ELL_TILT, ELL_TILT)
    else:
        aspect = _loguniform(rng, 1 / COMPACT_ASPECT, COMPACT_ASPECT)
        theta = rng.uniform(0, 2 * np.pi)
    hw, hh = size * np.sqrt(aspect) / 2, size / np.sqrt(aspect) / 2
    c, s = abs(np.cos(theta)), abs(np.sin(theta))
    shrink = min(1.0, max_extent / (2 * max(hw * c + hh * s, hw * s + hh * c)))
    hw, hh = hw * shrink, hh * shrink
    w = int(np.ceil(2 * (hw * c + hh * s))) + 2
    h = int(np.ceil(2 * (hw * s + hh * c))) + 2
    cx, cy = w / 2 + rng.uniform(-0.5, 0.5), h / 2 + rng.uniform(-0.5, 0.5)
    x = (np.arange(w, dtype=np.float32) + 0.5 - cx)[None, :]
    y = (np.arange(h, dtype=np.float32) + 0.5 - cy)[:, None]
    cos, sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    xr, yr = x * cos + y * sin, -x * sin + y * cos
    u, v = xr / np.float32(hw), yr / np.float32(hh)
    mask = _shape_mask(cat, u, v, xr, yr, hw, hh, rng)
    if not mask.any():
        mask[h // 2, w // 2] = True
    lo, hi, pmin, pmax = TEXTURE_PERIOD
    t = _texture(cat, u, v, xr, yr, float(np.clip(size * rng.uniform(lo, hi), pmin, pmax)), rng)
    a, b = _two_colours(rng)
    g, psi = rng.uniform(0, 0.2), rng.uniform(0, 2 * np.pi)
    shade = 1 + g * (u * np.cos(psi) + v * np.sin(psi))
    rgb = (a + t[..., None] * (b - a)) * shade[..., None]
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return mask[crop], rgb[crop]


# ------------------------------------------------------------------------------------------- background
def _background(rng: np.random.Generator, side: int, clutter: float) -> np.ndarray:
    """(side, side, 3) float32: colour field + distractors + cloud noise."""
    g = int(rng.integers(2, 6))
    img = Image.fromarray(rng.integers(40, 216, (g, g, 3), dtype=np.uint8)).resize((side, side), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    n = int(rng.poisson(DISTRACTORS * clutter * (side / 320) ** 2))
    stains = []
    for kind in rng.integers(0, 3, n):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(0, side, 2)
        if kind == 0:  # scribble: random walk with strong turning
            steps = int(rng.integers(6, 20))
            heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.9, steps))
            step = rng.uniform(0.01, 0.04) * side
            pts = np.stack([x0 + np.cumsum(step * np.cos(heading)), y0 + np.cumsum(step * np.sin(heading))], 1)
            draw.line([(x0, y0)] + [tuple(p) for p in pts.tolist()], fill=colour, width=int(rng.integers(1, 4)),
                      joint="curve")
        elif kind == 1:  # lumpy blob of flat colour
            ang = np.linspace(0, 2 * np.pi, 40, endpoint=False)
            amp, ph = rng.uniform(0, 0.3, 3), rng.uniform(0, 2 * np.pi, 3)  # harmonics 2..4: lumpy, never star-like
            rad = rng.uniform(0.01, 0.08) * side * (1 + sum(amp[i] * np.cos((i + 2) * ang + ph[i]) for i in range(3)))
            draw.polygon(list(zip((x0 + rad * np.cos(ang)).tolist(), (y0 + rad * np.sin(ang)).tolist())), fill=colour)
        else:
            stains.append((x0, y0))
    arr = np.asarray(img, dtype=np.float32)  # a converted, writable copy
    for x0, y0 in stains:  # soft-edged blocky noise: no outline, no regular pattern
        h, w = (rng.uniform(0.03, 0.15, 2) * side).astype(int) + 2
        b = int(rng.integers(1, 4))
        noise = rng.uniform(0, 255, (h // b + 1, w // b + 1, 3)).astype(np.float32).repeat(b, 0).repeat(b, 1)[:h, :w]
        yy, xx = np.ogrid[-1:1:h * 1j, -1:1:w * 1j]
        alpha = (rng.uniform(0.3, 0.7) * np.exp(-3 * (xx * xx + yy * yy)))[..., None].astype(np.float32)
        ys, xs = int(min(y0, side - h)), int(min(x0, side - w))
        region = arr[ys:ys + h, xs:xs + w]
        region += alpha * (noise - region)
    cells = side // CLOUD_CELL + 2
    cloud = Image.fromarray(rng.standard_normal((cells, cells), dtype=np.float32)).resize((side, side), Image.BICUBIC)
    arr += CLOUD_AMPLITUDE * clutter * np.asarray(cloud)[..., None]
    return arr

"""A tiny, fast person renderer for the synthetic benchmark miniatures (pure numpy).

Every miniature (AT-USTC, and later Market1501, SYSU-MM01, PRCC, ...) draws the same
three kinds of record and renders them with :func:`render_image`:

* :class:`Identity` - what survives a change of clothes *and* the infrared mapping:
  body build (height, shoulder width, leg ratio: wide ranges, so silhouettes differ),
  a large head with its size/shape, hair style, posture (lean), skin tone (an RGB-only
  cue) and two large luminance cues that look alike in both modalities: a high-contrast
  2x2 pattern over the head and a persistent bag (shape, side, dark or bright, nearly
  achromatic) with its strap;
* :class:`Outfit` - top and bottom colours and textures (plain, stripes, checks),
  sleeves, coat length, trousers/shorts/skirt, shoes, and the infrared reflectance of
  each garment (mostly its visible brightness, partly its dye);
* :class:`Camera` - viewpoint (horizontal/vertical offset, skew, mirror), scale,
  background (flat, gradient, wall/floor, pillars, each with a low-frequency texture),
  illumination (brightness, contrast, colour cast) and the camera's infrared response.

Why these cues: measured on a depth-4 ViT-Tiny trained from scratch on a CPU for a few
minutes (``shared/reference/synthetic_notes.md``), identity is only learnable across
outfits and modalities when each identity has a *salient* cue that survives both; subtle
colour or shape cues alone let the model memorise outfits and leave clothes-changed and
cross-modality retrieval at chance. Measured with the demo recipe (14 x 50 iterations,
16 test identities) while tuning this renderer:

* a small head (0.19-0.23 of the body) and saturated clothes: the RGB embedding follows
  the clothes, DT-LT R1 1-5 % (chance 5 %);
* an identity-coloured bag (an RGB-only identity cue): DT-LT rose to 41-66 %, but the
  model then identifies people by a cue infrared does not show, and AD-LT fell to 6-10 %;
* muted clothes (45 % greys, saturation <= 0.45), achromatic bags, a large head pattern
  and wide body builds (this version): every scenario well above chance for every
  variant, with DT-ST no longer far ahead (same-clothes RGB stays among the easiest).
  Clothes that are too vivid make colour the cheapest training signal, which is what
  the real benchmark's long-term and cross-modality scenarios are about, only harder.

Geometry: a person is drawn in body coordinates ``v`` (0 at the top of the head, 1 at
the soles) and ``u`` (horizontal, in units of body height, 0 on the body axis); each
part is a mask computed on the whole pixel grid at once, so one 128x64 image takes well
under a millisecond. All randomness comes from the ``numpy.random.Generator`` passed in:
the same generator state gives the same image.
"""

from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass

import numpy as np

RGBColor = tuple[float, float, float]

# Emissivity-like brightness of materials in infrared (0 = dark, 1 = bright).
SKIN_IR = 1.0
HAIR_IR = 0.25
PATTERN_IR = (0.0, 1.0)   # dark and bright head-pattern quadrants: high contrast in IR too

TOP_TEXTURES = ("plain", "hstripes", "vstripes", "checks")
BOTTOM_TEXTURES = ("plain", "hstripes", "checks")
BOTTOM_STYLES = ("trousers", "shorts", "skirt")
HAIR_STYLES = ("short", "long", "bun")
BAG_KINDS = ("none", "box", "tall", "round")
BACKGROUNDS = ("flat", "gradient", "floor", "pillars")


def _hsv(rng: np.random.Generator, h: tuple[float, float], s: tuple[float, float],
         v: tuple[float, float]) -> RGBColor:
    """A colour drawn uniformly in an HSV box, as an RGB tuple in [0, 1]."""
    rgb = colorsys.hsv_to_rgb(float(rng.uniform(*h)) % 1.0, float(rng.uniform(*s)), float(rng.uniform(*v)))
    return tuple(round(c, 4) for c in rgb)  # type: ignore[return-value]


def _garment_color(rng: np.random.Generator) -> RGBColor:
    """A clothing colour: any hue, from greys to saturated, dark to light."""
    if rng.random() < 0.45:  # greys, black and white clothes are common
        g = float(rng.uniform(0.08, 0.92))
        return (round(g, 4),) * 3  # type: ignore[return-value]
    return _hsv(rng, (0.0, 1.0), (0.1, 0.45), (0.2, 0.85))


def _ir_reflectance(rng: np.random.Generator, color: RGBColor) -> float:
    """A garment's infrared reflectance: mostly its visible brightness, partly its dye."""
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return _r(0.65 * luminance + 0.35 * rng.uniform(0.1, 0.9))


def _r(x: float) -> float:
    return round(float(x), 4)


@dataclass(frozen=True)
class Identity:
    """Appearance of one person that survives clothes changes and the infrared mapping.

    Args:
        height: body height as a fraction of the image height (before camera scale).
        shoulder: shoulder width in units of body height.
        leg_ratio: share of the body height taken by the legs.
        head_size: head height in units of body height.
        head_aspect: head width / head height.
        hair_style: index into :data:`HAIR_STYLES`.
        hair_color: RGB in [0, 1].
        skin_color: RGB in [0, 1] (lost in infrared).
        posture: forward/sideways lean (horizontal shear of the body).
        head_pattern: four 0/1 values (top-left, top-right, bottom-left, bottom-right):
            dark or bright quadrants of the head, never all equal.
        pattern_dark, pattern_bright: RGB of the dark and bright quadrants.
        bag: index into :data:`BAG_KINDS` (0 = no bag).
        bag_side: -1 or +1 (side of the body in the un-mirrored view).
        bag_color: RGB of the bag and its strap (very dark or very bright).
        bag_ir: infrared brightness of the bag.
    """

    height: float
    shoulder: float
    leg_ratio: float
    head_size: float
    head_aspect: float
    hair_style: int
    hair_color: RGBColor
    skin_color: RGBColor
    posture: float
    head_pattern: tuple[int, int, int, int]
    pattern_dark: RGBColor
    pattern_bright: RGBColor
    bag: int
    bag_side: int
    bag_color: RGBColor
    bag_ir: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Identity":
        """Draw a random identity."""
        t = float(rng.uniform())
        light, dark = np.array([0.96, 0.80, 0.69]), np.array([0.36, 0.22, 0.15])
        skin = tuple(_r(c) for c in np.clip((1 - t) * light + t * dark + rng.normal(0, 0.02, 3), 0, 1))
        if rng.random() < 0.8:
            hair = _hsv(rng, (0.02, 0.12), (0.3, 0.8), (0.08, 0.45))
        else:  # blond or grey hair
            hair = _hsv(rng, (0.08, 0.15), (0.0, 0.5), (0.6, 0.85))
        while True:
            pattern = tuple(int(b) for b in rng.integers(0, 2, 4))
            if 0 < sum(pattern) < 4:
                break
        bag = int(rng.integers(1, 4))
        bright_bag = bool(rng.random() < 0.5)
        bag_color = (_hsv(rng, (0, 1), (0.0, 0.3), (0.85, 0.97)) if bright_bag
                     else _hsv(rng, (0, 1), (0.2, 0.7), (0.04, 0.15)))
        return cls(
            height=_r(rng.uniform(0.8, 0.95)),
            shoulder=_r(rng.uniform(0.24, 0.4)),
            leg_ratio=_r(rng.uniform(0.4, 0.54)),
            head_size=_r(rng.uniform(0.24, 0.28)),
            head_aspect=_r(rng.uniform(0.7, 0.95)),
            hair_style=int(rng.integers(0, len(HAIR_STYLES))),
            hair_color=hair,
            skin_color=skin,  # type: ignore[arg-type]
            posture=_r(rng.uniform(-0.06, 0.06)),
            head_pattern=pattern,  # type: ignore[arg-type]
            pattern_dark=_hsv(rng, (0, 1), (0.3, 0.8), (0.05, 0.18)),
            pattern_bright=_hsv(rng, (0, 1), (0.0, 0.3), (0.85, 0.98)),
            bag=bag,
            bag_side=int(rng.choice([-1, 1])),
            bag_color=bag_color,
            bag_ir=_r(rng.uniform(0.9, 1.0) if bright_bag else rng.uniform(0.0, 0.05)),
        )


@dataclass(frozen=True)
class Outfit:
    """One set of clothes.

    Args:
        top_color, top_color2: RGB of the top and of its texture's second colour.
        top_texture: index into :data:`TOP_TEXTURES`.
        top_period: stripe/check period in units of body height.
        long_sleeves: sleeves down to the wrists (else short sleeves).
        top_length: extra length of the top below the waist (coats), body-height units.
        bottom_color, bottom_color2, bottom_texture: as for the top
            (:data:`BOTTOM_TEXTURES`).
        bottom_style: index into :data:`BOTTOM_STYLES`.
        shoe_color: RGB.
        top_ir, bottom_ir, shoe_ir: infrared reflectance of each garment in [0, 1].
    """

    top_color: RGBColor
    top_color2: RGBColor
    top_texture: int
    top_period: float
    long_sleeves: bool
    top_length: float
    bottom_color: RGBColor
    bottom_color2: RGBColor
    bottom_texture: int
    bottom_style: int
    shoe_color: RGBColor
    top_ir: float
    bottom_ir: float
    shoe_ir: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Outfit":
        """Draw a random outfit."""
        top, bottom, shoe = _garment_color(rng), _garment_color(rng), _garment_color(rng)
        return cls(
            top_color=top,
            top_color2=_garment_color(rng),
            top_texture=int(rng.choice(len(TOP_TEXTURES), p=[0.4, 0.2, 0.2, 0.2])),
            top_period=_r(rng.uniform(0.035, 0.07)),
            long_sleeves=bool(rng.random() < 0.6),
            top_length=_r(rng.uniform(0.0, 0.14) if rng.random() < 0.3 else 0.0),
            bottom_color=bottom,
            bottom_color2=_garment_color(rng),
            bottom_texture=int(rng.choice(len(BOTTOM_TEXTURES), p=[0.7, 0.15, 0.15])),
            bottom_style=int(rng.choice(len(BOTTOM_STYLES), p=[0.7, 0.15, 0.15])),
            shoe_color=shoe,
            top_ir=_ir_reflectance(rng, top),
            bottom_ir=_ir_reflectance(rng, bottom),
            shoe_ir=_ir_reflectance(rng, shoe),
        )


@dataclass(frozen=True)
class Camera:
    """One camera: viewpoint, scene and illumination, plus its infrared response.

    Args:
        index: the camera's id in its benchmark (informational).
        offset_x, offset_y: person position offset as a fraction of the image width/height.
        skew: horizontal shear of the view (added to the person's lean).
        mirror: the view is mirrored (the bag side and head pattern flip).
        scale: person size multiplier.
        background: index into :data:`BACKGROUNDS`.
        bg_color, bg_color2: RGB of the scene's two colours.
        bg_param: horizon height (floor), period in pixels (pillars).
        bg_texture: a coarse grid of values in [-1, 1], upsampled as a low-frequency texture
            of the scene (``PANORAMA`` image widths wide; each frame sees a window).
        brightness, contrast: global illumination (RGB).
        cast: per-channel gains (RGB colour cast).
        ir_weights: channel weights of the infrared intensity (sum 1), unlike luminance's.
        ir_emissive: weight of the emissivity term (skin glows, garments by reflectance).
        ir_contrast, ir_offset, ir_gamma, ir_noise: infrared sensor response.
        bg_ir: emissivity of the scene.
    """

    index: int
    offset_x: float
    offset_y: float
    skew: float
    mirror: bool
    scale: float
    background: int
    bg_color: RGBColor
    bg_color2: RGBColor
    bg_param: float
    bg_texture: tuple[tuple[float, ...], ...]
    brightness: float
    contrast: float
    cast: RGBColor
    ir_weights: RGBColor
    ir_emissive: float
    ir_contrast: float
    ir_offset: float
    ir_gamma: float
    ir_noise: float
    bg_ir: float

    @classmethod
    def sample(cls, rng: np.random.Generator, index: int) -> "Camera":
        """Draw a random camera with id ``index``."""
        background = int(rng.integers(0, len(BACKGROUNDS)))
        bg_param = float(rng.uniform(0.45, 0.8)) if background == 2 else float(rng.uniform(8, 24))
        weights = rng.dirichlet([9.0, 7.0, 4.0])
        return cls(
            index=int(index),
            offset_x=_r(rng.uniform(-0.1, 0.1)),
            offset_y=_r(rng.uniform(-0.03, 0.03)),
            skew=_r(rng.uniform(-0.08, 0.08)),
            mirror=bool(rng.random() < 0.5),
            scale=_r(rng.uniform(0.95, 1.04)),
            background=background,
            bg_color=_hsv(rng, (0, 1), (0.0, 0.25), (0.3, 0.8)),
            bg_color2=_hsv(rng, (0, 1), (0.0, 0.25), (0.3, 0.8)),
            bg_param=_r(bg_param),
            bg_texture=tuple(tuple(_r(x) for x in row) for row in rng.uniform(-1, 1, (5, 3 * PANORAMA))),
            brightness=_r(rng.uniform(0.8, 1.15)),
            contrast=_r(rng.uniform(0.8, 1.15)),
            cast=tuple(_r(g) for g in rng.uniform(0.88, 1.12, 3)),  # type: ignore[arg-type]
            ir_weights=tuple(_r(w) for w in weights),  # type: ignore[arg-type]
            ir_emissive=_r(rng.uniform(0.3, 0.5)),
            ir_contrast=_r(rng.uniform(0.95, 1.3)),
            ir_offset=_r(rng.uniform(-0.08, 0.08)),
            ir_gamma=_r(rng.uniform(0.85, 1.15)),
            ir_noise=_r(rng.uniform(0.015, 0.04)),
            bg_ir=_r(rng.uniform(0.0, 0.3)),
        )


@functools.lru_cache(maxsize=16)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) of an image, float32, shape (H, W)."""
    yy, xx = np.meshgrid(np.arange(height, dtype=np.float32) + 0.5,
                         np.arange(width, dtype=np.float32) + 0.5, indexing="ij")
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a coarse (gh, gw) grid to (height, width)."""
    gh, gw = grid.shape
    ys = np.linspace(0, gh - 1, height, dtype=np.float32)
    xs = np.linspace(0, gw - 1, width, dtype=np.float32)
    y0 = np.minimum(ys.astype(int), gh - 2)
    x0 = np.minimum(xs.astype(int), gw - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx) + g11 * fy * fx).astype(np.float32)


PANORAMA = 3  # a camera's scene is this many image widths wide; frames crop a window of it


@functools.lru_cache(maxsize=256)
def _scene(camera: Camera, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The camera's empty scene, ``PANORAMA`` images wide: RGB (H, PW, 3) and emissivity (H, PW)."""
    yy, xx = _grid(height, width * PANORAMA)
    c1 = np.asarray(camera.bg_color, np.float32)
    c2 = np.asarray(camera.bg_color2, np.float32)
    kind = BACKGROUNDS[camera.background]
    if kind == "flat":
        t = np.zeros_like(yy)
    elif kind == "gradient":
        t = yy / height
    elif kind == "floor":
        t = (yy > camera.bg_param * height).astype(np.float32)
    else:  # pillars
        period = camera.bg_param
        t = (((xx + 0.37 * period) % period) < 0.35 * period).astype(np.float32)
    image = (1 - t)[..., None] * c1 + t[..., None] * c2
    texture = _upsample(np.asarray(camera.bg_texture, np.float32), height, width * PANORAMA)
    image = np.clip(image * (1 + 0.25 * texture[..., None]), 0, 1).astype(np.float32)
    emis = np.full(texture.shape, camera.bg_ir, np.float32) + 0.08 * texture
    image.setflags(write=False)
    emis.setflags(write=False)
    return image, emis


def _texture(kind: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Boolean map of a texture's second colour (stripes or checks) in body coordinates."""
    if kind == "hstripes":
        return (v % period) < period / 2
    if kind == "vstripes":
        return (u % period) < period / 2
    if kind == "checks":
        return ((u % period) < period / 2) ^ ((v % period) < period / 2)
    return np.zeros(u.shape, bool)


class _Canvas:
    """An RGB image and its emissivity map, painted part by part."""

    def __init__(self, image: np.ndarray, emis: np.ndarray):
        self.image = image
        self.emis = emis

    def paint(self, mask: np.ndarray, color: RGBColor | np.ndarray, emissivity: float) -> None:
        self.image[mask] = color if not isinstance(color, np.ndarray) or color.ndim == 1 else color[mask]
        self.emis[mask] = emissivity

    def paint_textured(self, mask: np.ndarray, second: np.ndarray, c1: RGBColor, c2: RGBColor,
                       emissivity: float, emissivity2: float | None = None) -> None:
        first = mask & ~second
        second = mask & second
        self.image[first] = c1
        self.image[second] = c2
        self.emis[first] = emissivity
        self.emis[second] = emissivity if emissivity2 is None else emissivity2


def _segment_distance(u: np.ndarray, v: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Distance of every (u, v) point to the segment a-b."""
    du, dv = b[0] - a[0], b[1] - a[1]
    t = np.clip(((u - a[0]) * du + (v - a[1]) * dv) / (du * du + dv * dv), 0, 1)
    return np.hypot(u - a[0] - t * du, v - a[1] - t * dv)


def render_image(identity: Identity, outfit: Outfit, camera: Camera, *, infrared: bool,
                 rng: np.random.Generator, height: int = 128, width: int = 64) -> np.ndarray:
    """Render one frame of ``identity`` wearing ``outfit`` seen by ``camera``.

    Small per-frame jitter (position, scale, walking phase, brightness, sensor noise) is
    drawn from ``rng``, so consecutive frames of one clip differ slightly.

    Args:
        identity, outfit, camera: what to draw.
        infrared: render the infrared view: hue is lost; the intensity is a weighted sum
            of the channels with the camera's own weights mixed with an emissivity term
            (skin bright, garments by their infrared reflectance), then the sensor's
            contrast, gamma, blur and noise; the grey image is replicated to 3 channels.
        rng: the only source of randomness.
        height, width: image size in pixels.

    Returns:
        ``(height, width, 3)`` uint8 array (R = G = B when ``infrared``).
    """
    yy, xx = _grid(height, width)
    # The person walks through the scene: each frame sees another window of it.
    scene, scene_emis = _scene(camera, height, width)
    x0 = int(rng.integers(0, (PANORAMA - 1) * width + 1))
    canvas = _Canvas(scene[:, x0:x0 + width].copy(), scene_emis[:, x0:x0 + width].copy())

    # Per-frame jitter and the body coordinate frame.
    scale = camera.scale * (1.0 + 0.02 * float(rng.standard_normal()))
    body = identity.height * scale * height                      # body height in pixels
    bottom = min(0.5 * height + 0.5 * body + camera.offset_y * height + float(rng.normal(0, 0.8)),
                 height - 0.5)
    centre = 0.5 * width + camera.offset_x * width + float(rng.normal(0, 1.0))
    phase = float(rng.uniform(0, 2 * np.pi))
    shear = camera.skew + identity.posture
    v = (yy - (bottom - body)) / body
    u = (xx - centre + shear * (bottom - yy)) / body
    if camera.mirror:
        u = -u
    au = np.abs(u)

    skin = identity.skin_color
    hs = identity.head_size
    head_v = 0.5 * hs
    head_a, head_b = 0.5 * hs * identity.head_aspect, 0.5 * hs
    shoulder_v = hs + 0.02
    waist_v = 1.0 - identity.leg_ratio
    sw = 0.5 * identity.shoulder
    sole_v = 1.0 - 0.028

    # Long hair falls behind the shoulders (drawn first, the torso covers its bottom).
    if HAIR_STYLES[identity.hair_style] == "long":
        canvas.paint((au < head_a * 1.25) & (v > head_v) & (v < hs + 0.09), identity.hair_color, HAIR_IR)

    # Legs (walking: the feet swing apart with the phase), hips, shoes.
    leg_w = 0.042 * identity.shoulder / 0.26
    gap = 0.045 * identity.shoulder / 0.26
    swing = 0.035 * np.sin(phase)
    reach = np.clip((v - waist_v) / identity.leg_ratio, 0, 1)
    legs = np.zeros(u.shape, bool)
    feet = np.zeros(u.shape, bool)
    for side in (-1.0, 1.0):
        axis = side * gap + side * swing * reach
        legs |= np.abs(u - axis) < leg_w
        feet |= np.abs(u - axis - side * 0.01) < leg_w * 1.3
    legs &= (v >= waist_v) & (v < sole_v)
    feet &= (v >= sole_v) & (v <= 1.0)
    style = BOTTOM_STYLES[outfit.bottom_style]
    bottom_tex = _texture(BOTTOM_TEXTURES[outfit.bottom_texture], u, v, 0.05)
    if style == "trousers":
        garment = legs
    else:
        knee_v = waist_v + (0.4 if style == "shorts" else 0.55) * identity.leg_ratio
        canvas.paint(legs, skin, SKIN_IR)
        garment = legs & (v < knee_v)
        if style == "skirt":
            flare = 0.8 * sw + 0.35 * sw * (v - waist_v) / (knee_v - waist_v)
            garment = garment | ((v >= waist_v) & (v < knee_v) & (au < flare))
    hips = (v >= waist_v - 0.01) & (v < waist_v + 0.07) & (au < 0.8 * sw)
    canvas.paint_textured(garment | hips, bottom_tex, outfit.bottom_color, outfit.bottom_color2, outfit.bottom_ir)
    canvas.paint(feet, outfit.shoe_color, outfit.shoe_ir)

    # Neck, arms (sleeves then hands), torso.
    canvas.paint((au < 0.035) & (v > hs * 0.85) & (v < shoulder_v + 0.01), skin, SKIN_IR)
    arm_w = 0.055 * identity.shoulder / 0.26
    arm_end = waist_v + 0.08
    arms = (au > sw - 0.01) & (au < sw + arm_w) & (v > shoulder_v + 0.015) & (v < arm_end)
    sleeve_end = arm_end - 0.035 if outfit.long_sleeves else shoulder_v + 0.11
    top_tex = _texture(TOP_TEXTURES[outfit.top_texture], u, v, outfit.top_period)
    canvas.paint(arms, skin, SKIN_IR)
    canvas.paint_textured(arms & (v < sleeve_end), top_tex, outfit.top_color, outfit.top_color2, outfit.top_ir)
    taper = sw - 0.2 * sw * np.clip((v - shoulder_v) / (waist_v - shoulder_v), 0, 1)
    torso = (v >= shoulder_v) & (v < waist_v + 0.02 + outfit.top_length) & (au < taper)
    torso |= (v >= shoulder_v - 0.015) & (v < shoulder_v) & (au < sw - 0.03)  # rounded shoulders
    canvas.paint_textured(torso, top_tex, outfit.top_color, outfit.top_color2, outfit.top_ir)

    # Bag and strap (a persistent accessory with a strong luminance shape).
    kind = BAG_KINDS[identity.bag]
    if kind != "none":
        s = float(identity.bag_side)
        if kind == "box":
            bag = (np.abs(u - s * (sw + 0.03)) < 0.09) & (v > waist_v - 0.14) & (v < waist_v + 0.07)
            top = waist_v - 0.12
        elif kind == "tall":
            bag = (np.abs(u - s * (sw + 0.02)) < 0.065) & (v > shoulder_v + 0.04) & (v < waist_v + 0.12)
            top = shoulder_v + 0.05
        else:  # round
            bag = ((u - s * (sw + 0.03)) / 0.1) ** 2 + ((v - waist_v) / 0.09) ** 2 < 1
            top = waist_v - 0.075
        strap = _segment_distance(u, v, (-s * sw * 0.6, shoulder_v), (s * (sw + 0.01), top)) < 0.02
        canvas.paint(bag | strap, identity.bag_color, identity.bag_ir)

    # Hair (bun / short) and the head with its large 2x2 luminance pattern.
    if HAIR_STYLES[identity.hair_style] == "bun":
        canvas.paint((u / (0.6 * head_a)) ** 2 + ((v - head_v + 1.05 * head_b) / (0.45 * head_b)) ** 2 < 1,
                     identity.hair_color, HAIR_IR)
    elif HAIR_STYLES[identity.hair_style] == "short":
        canvas.paint(((u / (1.12 * head_a)) ** 2 + ((v - head_v) / (1.08 * head_b)) ** 2 < 1) & (v < head_v),
                     identity.hair_color, HAIR_IR)
    head = (u / head_a) ** 2 + ((v - head_v) / head_b) ** 2 < 1
    quadrant = (v > head_v).astype(np.int8) * 2 + (u > 0).astype(np.int8)
    bright = np.asarray(identity.head_pattern, bool)[quadrant]
    canvas.paint_textured(head, bright, identity.pattern_dark, identity.pattern_bright, *PATTERN_IR)

    gain = 1.0 + 0.04 * float(rng.standard_normal())
    if not infrared:
        image = canvas.image * (np.asarray(camera.cast, np.float32) * (camera.brightness * gain))
        image = (image - 0.5) * camera.contrast + 0.5
        image += rng.normal(0.0, 0.012, image.shape).astype(np.float32)
        return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)

    intensity = canvas.image @ np.asarray(camera.ir_weights, np.float32)
    k = camera.ir_emissive
    intensity = (1 - k) * intensity + k * canvas.emis
    # Mild optical blur (1-2-1 in both directions): infrared views are softer.
    padded = np.pad(intensity, 1, mode="edge")
    intensity = (padded[:-2, 1:-1] + 2 * padded[1:-1, 1:-1] + padded[2:, 1:-1]) * 0.25
    padded = np.pad(intensity, ((0, 0), (1, 1)), mode="edge")
    intensity = (padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]) * 0.25
    intensity = (intensity - 0.5) * camera.ir_contrast + 0.5 + camera.ir_offset
    intensity = np.clip(intensity * gain, 0, 1) ** camera.ir_gamma
    intensity = intensity + rng.normal(0.0, camera.ir_noise, intensity.shape).astype(np.float32)
    grey = (np.clip(intensity, 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)

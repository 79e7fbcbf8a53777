"""Procedural "shapes on clutter" images for the onnxcam demo model.

Every image holds exactly one filled object -- a circle, square, triangle or
cross -- in a random colour, at a random size, rotation and position, on a
cluttered background: a smooth two-colour gradient with a mottled colour
texture, short thin line segments and small dots (all much smaller than the
object), with pixel noise on top. The object's colour is random but far from
the mean colour of the background it covers; its edges are anti-aliased.
Because the generator knows where it drew the object, every sample comes with
a tight bounding box, which makes the images handy for checking that a saliency
map (Grad-CAM) points at the object rather than at the clutter.

Only numpy and OpenCV are used. All randomness comes from the
``numpy.random.Generator`` passed in, so a given generator state always yields
the same images. Images are returned as uint8 arrays in RGB order; convert
them with ``cv2.cvtColor(image, cv2.COLOR_RGB2BGR)`` before ``cv2.imwrite``.

The geometry is expressed for 64x64 images and scales with ``size``, so
``make_sample(rng, size=256)`` draws the same kind of scene at four times the
resolution.
"""

from __future__ import annotations

import cv2
import numpy as np

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
IMAGE_SIZE = 64

# Geometry at the reference resolution (IMAGE_SIZE); scaled by size / IMAGE_SIZE.
_OBJECT_EXTENT_PX = (16.0, 28.0)  # width/height of the object's bounding box
_SEGMENT_LENGTH_PX = (4.0, 10.0)  # clutter line segments
_DOT_RADIUS_PX = (1.0, 2.0)  # clutter dots
_SEGMENT_COUNT = (2, 7)  # inclusive range
_DOT_COUNT = (2, 7)  # inclusive range
_NOISE_STD = 6.0  # grey levels, independent of resolution
_TEXTURE_CELL_PX = 4.0  # grain of the background's mottled texture
_TEXTURE_STD = 24.0  # grey levels
_MIN_COLOUR_DISTANCE = 140.0  # Euclidean RGB distance object vs. local background
_COLOUR_TRIES = 64
_POLY_SHIFT = 4  # fractional bits for sub-pixel polygon vertices
_SUPERSAMPLING = 4  # anti-aliasing factor for the object's edges
_CIRCLE_VERTICES = 64


def _scale(size: int) -> float:
    """Factor from reference (64 px) geometry to an image of ``size`` pixels."""
    return size / IMAGE_SIZE


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random RGB colour as float64 (3,)."""
    return rng.uniform(0.0, 255.0, size=3)


def _gradient_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth linear blend between two random colours, float64 (size, size, 3)."""
    start, end = _random_colour(rng), _random_colour(rng)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    coords = (np.arange(size) + 0.5) / size - 0.5
    xs, ys = np.meshgrid(coords, coords)
    projection = xs * np.cos(angle) + ys * np.sin(angle)
    t = (projection - projection.min()) / max(np.ptp(projection), 1e-9)
    return start * (1.0 - t[..., None]) + end * t[..., None]


def _mottled_texture(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Smooth random colour blotches, zero-mean float64 (size, size, 3)."""
    cells = max(2, round(size / (_TEXTURE_CELL_PX * scale)))
    coarse = rng.normal(0.0, _TEXTURE_STD, size=(cells, cells, 3))
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _draw_segments(rng: np.random.Generator, canvas: np.ndarray, scale: float) -> None:
    """Draw a few short, thin line segments of random colours onto ``canvas``."""
    size = canvas.shape[0]
    thickness = max(1, round(scale))
    for _ in range(rng.integers(_SEGMENT_COUNT[0], _SEGMENT_COUNT[1] + 1)):
        start = rng.uniform(0.0, size, size=2)
        length = rng.uniform(*_SEGMENT_LENGTH_PX) * scale
        angle = rng.uniform(0.0, np.pi)
        end = start + length * np.array([np.cos(angle), np.sin(angle)])
        cv2.line(
            canvas,
            tuple(int(v) for v in np.round(start)),
            tuple(int(v) for v in np.round(end)),
            _random_colour(rng).tolist(),
            thickness,
            cv2.LINE_AA,
        )


def _draw_dots(rng: np.random.Generator, canvas: np.ndarray, scale: float) -> None:
    """Draw a few small filled dots of random colours onto ``canvas``."""
    size = canvas.shape[0]
    for _ in range(rng.integers(_DOT_COUNT[0], _DOT_COUNT[1] + 1)):
        centre = rng.uniform(0.0, size, size=2)
        radius = max(1, round(rng.uniform(*_DOT_RADIUS_PX) * scale))
        cv2.circle(
            canvas,
            tuple(int(v) for v in np.round(centre)),
            radius,
            _random_colour(rng).tolist(),
            -1,
            cv2.LINE_AA,
        )


def _cluttered_background(
    rng: np.random.Generator, size: int, scale: float | None = None
) -> np.ndarray:
    """Textured gradient plus small line/dot distractors, float64 (size, size, 3).

    ``scale`` multiplies the reference geometry (default: ``size / IMAGE_SIZE``).
    """
    scale = _scale(size) if scale is None else scale
    canvas = _gradient_background(rng, size) + _mottled_texture(rng, size, scale)
    _draw_segments(rng, canvas, scale)
    _draw_dots(rng, canvas, scale)
    return canvas


def _unit_outline(class_index: int) -> np.ndarray:
    """Outline of a class's shape as (N, 2) vertices centred on the origin."""
    name = CLASSES[class_index]
    if name == "circle":
        theta = np.linspace(0.0, 2.0 * np.pi, _CIRCLE_VERTICES, endpoint=False)
        return np.stack([np.cos(theta), np.sin(theta)], axis=1)
    if name == "square":
        return np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    if name == "triangle":
        theta = np.pi / 2.0 + np.array([0.0, 2.0, 4.0]) * np.pi / 3.0
        return np.stack([np.cos(theta), np.sin(theta)], axis=1)
    if name == "cross":
        a = 0.36  # half the arm width, relative to the arm length
        return np.array(
            [
                [-a, -1.0], [a, -1.0], [a, -a], [1.0, -a], [1.0, a], [a, a],
                [a, 1.0], [-a, 1.0], [-a, a], [-1.0, a], [-1.0, -a], [-a, -a],
            ]
        )
    raise ValueError(f"unknown class index {class_index}")


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate (N, 2) points about the origin by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _place_outline(
    rng: np.random.Generator, class_index: int, size: int, scale: float | None = None
) -> np.ndarray:
    """Randomly rotate, scale and position a shape fully inside the image.

    ``scale`` multiplies the reference extent (default: ``size / IMAGE_SIZE``).
    Returns the outline as (N, 2) float pixel coordinates (x, y).
    """
    points = _rotate(_unit_outline(class_index), rng.uniform(0.0, 2.0 * np.pi))
    scale = _scale(size) if scale is None else scale
    extent = rng.uniform(*_OBJECT_EXTENT_PX) * scale
    points = points - points.min(axis=0)
    points = points * (extent / points.max())
    span = points.max(axis=0)
    margin = 1.0
    offset = rng.uniform(margin, size - margin - span, size=2)
    return points + offset


def _object_coverage(outline: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased coverage of a filled polygon, float64 (size, size) in [0, 1].

    The polygon is filled at ``_SUPERSAMPLING`` times the resolution and area-
    averaged down, so edge pixels get the fraction of their area it covers.
    """
    big = size * _SUPERSAMPLING
    mask = np.zeros((big, big), dtype=np.uint8)
    vertices = np.round(outline * _SUPERSAMPLING * (1 << _POLY_SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [vertices], 255, cv2.LINE_8, _POLY_SHIFT)
    small = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
    return small.astype(np.float64) / 255.0


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1), exclusive end, around the True pixels."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _distinct_colour(
    rng: np.random.Generator, local_background: np.ndarray
) -> np.ndarray:
    """A random colour far (in RGB) from ``local_background``'s mean colour."""
    reference = local_background.reshape(-1, 3).mean(axis=0)
    best, best_distance = None, -1.0
    for _ in range(_COLOUR_TRIES):
        colour = _random_colour(rng)
        distance = float(np.linalg.norm(colour - reference))
        if distance >= _MIN_COLOUR_DISTANCE:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


def _add_noise(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Add Gaussian pixel noise and quantise to uint8."""
    noisy = canvas + rng.normal(0.0, _NOISE_STD, size=canvas.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def make_sample(
    rng: np.random.Generator, size: int = IMAGE_SIZE
) -> tuple[np.ndarray, int, tuple[int, int, int, int]]:
    """Draw one random image.

    Returns ``(image, class_index, box)``: ``image`` is uint8 (size, size, 3)
    in RGB order, ``class_index`` indexes :data:`CLASSES`, and ``box`` is
    ``(x0, y0, x1, y1)`` in pixels (inclusive start, exclusive end) tightly
    around the object's pixels.
    """
    class_index = int(rng.integers(len(CLASSES)))
    canvas = _cluttered_background(rng, size)
    coverage = _object_coverage(_place_outline(rng, class_index, size), size)
    drawn = coverage > 0.0
    colour = _distinct_colour(rng, canvas[drawn])
    alpha = coverage[..., None]
    canvas = canvas * (1.0 - alpha) + colour * alpha
    return _add_noise(rng, canvas), class_index, _tight_box(drawn)


def make_batch(
    rng: np.random.Generator, n: int, size: int = IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` images with :func:`make_sample`.

    Returns ``(images, labels, boxes)``: uint8 (n, size, size, 3) RGB,
    int64 (n,), and int64 (n, 4) boxes as ``(x0, y0, x1, y1)``.
    """
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    boxes = np.empty((n, 4), dtype=np.int64)
    for i in range(n):
        images[i], labels[i], boxes[i] = make_sample(rng, size)
    return images, labels, boxes


# Seed of the images the demo is evaluated on (the training script draws with other seeds).
EVALUATION_SEED = 20261123


def evaluation_batch(n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` images the demo model never saw, in BGR order as decoded files are, with labels and boxes."""
    images, labels, boxes = make_batch(np.random.default_rng(EVALUATION_SEED), n)
    return images[..., ::-1].copy(), labels, boxes


# Scenes (several objects per image) use the reference geometry at SCENE_SIZE, so a
# 128-pixel scene holds objects as large as in a 64-pixel single-object image.
SCENE_SIZE = 128
SCENE_OBJECTS = (1, 4)  # inclusive range
_SCENE_GAP_PX = 2.0  # minimum gap between objects' boxes, at the reference geometry
_PLACEMENT_TRIES = 100
# Seed of the detector's validation scenes (its training script draws with other seeds).
SCENE_VALIDATION_SEED = 20261201


def _boxes_apart(box: tuple[int, int, int, int], others: list, gap: float) -> bool:
    """Whether ``box`` keeps at least ``gap`` pixels from every box in ``others``."""
    x0, y0, x1, y1 = box
    return all(
        x0 >= ox1 + gap or ox0 >= x1 + gap or y0 >= oy1 + gap or oy0 >= y1 + gap
        for ox0, oy0, ox1, oy1 in others
    )


def make_scene(
    rng: np.random.Generator, size: int = SCENE_SIZE, count: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one cluttered image with ``count`` non-overlapping objects (default: 1-4 at random).

    Returns ``(image, boxes, classes)``: uint8 (size, size, 3) RGB, int64 (k, 4)
    tight ``(x0, y0, x1, y1)`` boxes (exclusive end) and int64 (k,) class
    indices. Fewer than ``count`` objects are drawn when no free place is found.
    """
    if count is None:
        count = int(rng.integers(SCENE_OBJECTS[0], SCENE_OBJECTS[1] + 1))
    scale = size / SCENE_SIZE
    canvas = _cluttered_background(rng, size, scale)
    boxes, classes = [], []
    for _ in range(count):
        class_index = int(rng.integers(len(CLASSES)))
        for _ in range(_PLACEMENT_TRIES):
            coverage = _object_coverage(_place_outline(rng, class_index, size, scale), size)
            drawn = coverage > 0.0
            box = _tight_box(drawn)
            if _boxes_apart(box, boxes, _SCENE_GAP_PX * scale):
                break
        else:
            continue
        colour = _distinct_colour(rng, canvas[drawn])
        alpha = coverage[..., None]
        canvas = canvas * (1.0 - alpha) + colour * alpha
        boxes.append(box)
        classes.append(class_index)
    return (
        _add_noise(rng, canvas),
        np.array(boxes, dtype=np.int64).reshape(-1, 4),
        np.array(classes, dtype=np.int64),
    )


def validation_scenes(
    n: int, seed: int = SCENE_VALIDATION_SEED, size: int = SCENE_SIZE
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``n`` scenes from :func:`make_scene` drawn with ``seed``: the detector's validation set."""
    rng = np.random.default_rng(seed)
    return [make_scene(rng, size) for _ in range(n)]


def pointing_game(maps: np.ndarray, boxes: np.ndarray) -> float:
    """Fraction of (n, H, W) saliency maps whose maximum lies inside the object's (x0, y0, x1, y1) box."""
    width = maps.shape[2]
    peaks = np.asarray(maps).reshape(len(maps), -1).argmax(axis=1)
    ys, xs = peaks // width, peaks % width
    x0, y0, x1, y1 = np.asarray(boxes).T
    return float(((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)).mean())

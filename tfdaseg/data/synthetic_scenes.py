"""Procedural street scenes: one layout distribution, two appearances ("game" and "real").

The demo's stand-in for GTA5 -> Cityscapes. `sample_layout` draws the semantic layout of a
street scene in perspective (sky, a distant skyline, facades, hedges or fields on either side,
a road with sidewalks running to a vanishing point, cars, people, poles with signs, trees and a
little void clutter) as Cityscapes label ids; `render` paints a layout in one domain's `Style`.
Both domains use the same `sample_layout`, so they differ only in how pixels look: a network
trained on one misreads the other, while the structure of correct predictions is the same in
both, which is what output-space adaptation (AdaptSegNet) exploits.

The scene is a pinhole view of a flat street. A point at lateral offset X, height Y and depth Z
(metres) appears at column `vx + f X / Z` and row `horizon + f (h - Y) / Z` for a camera at
height h, so objects are placed in metres and drawn at `f / Z` pixels per metre.

Example:
  >>> image, label = draw_scene([0, 0, 7], "real", width=256, height=128)
  >>> image.shape, label.shape
  ((128, 256, 3), (128, 256))
"""

import dataclasses
import functools
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

from tfdaseg.data.labels import CITYSCAPES_CLASSES, CITYSCAPES_ID_TO_TRAIN_ID
from tfdaseg.registry import Registry

_LABEL_ID = {CITYSCAPES_CLASSES[train_id]: label_id
             for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items()}
ROAD = _LABEL_ID["road"]
SIDEWALK = _LABEL_ID["sidewalk"]
BUILDING = _LABEL_ID["building"]
POLE = _LABEL_ID["pole"]
TRAFFIC_SIGN = _LABEL_ID["traffic sign"]
VEGETATION = _LABEL_ID["vegetation"]
TERRAIN = _LABEL_ID["terrain"]
SKY = _LABEL_ID["sky"]
PERSON = _LABEL_ID["person"]
CAR = _LABEL_ID["car"]
# cityscapesScripts' "unlabeled" id: no train id, so training and evaluation ignore it.
VOID = 0
SCENE_LABEL_IDS = (VOID, ROAD, SIDEWALK, BUILDING, POLE, TRAFFIC_SIGN, VEGETATION, TERRAIN, SKY,
                   PERSON, CAR)

# Parts tell a style which detail of a class a pixel shows; labels do not distinguish them.
BODY = 0    # the surface: paint, clothes, leaves, asphalt, sign face
DETAIL = 1  # windows (buildings, cars), lane markings, heads, sign borders
TRIM = 2    # wheels, legs, tree trunks

# Bump whenever the scene drawn from a given seed changes, so stamps of older data stop matching.
VERSION = 2

_CAMERA_HEIGHT = 1.5  # metres
_FOCAL = 0.8          # focal length in image widths: about 64 degrees horizontal field of view
_FAR = 250.0          # metres; facades end here, far beyond the last visible pixel


@dataclasses.dataclass(frozen=True)
class Layout:
  """The structure of one scene, shared by both appearances.

  Attributes:
    label: uint8 [H, W] Cityscapes label ids.
    instance: int32 [H, W] object index, 0 for background stuff, so styles colour objects apart.
    part: uint8 [H, W] BODY, DETAIL or TRIM.
    instance_label: uint8 [num_instances + 1], the label id of each object (entry 0 unused).
    horizon: The horizon row (fractional).
  """

  label: np.ndarray
  instance: np.ndarray
  part: np.ndarray
  instance_label: np.ndarray
  horizon: float


@dataclasses.dataclass(frozen=True)
class _View:
  """The camera: image size, horizon row, vanishing column and focal length in pixels."""

  width: int
  height: int
  horizon: float
  vx: float

  @property
  def focal(self) -> float:
    return _FOCAL * self.width

  def ppm(self, z: float) -> float:
    """Pixels per metre at depth `z`."""
    return self.focal / z

  def column(self, x: float, z: float) -> float:
    return self.vx + self.focal * x / z

  def row(self, y: float, z: float) -> float:
    return self.horizon + self.focal * (_CAMERA_HEIGHT - y) / z

  def depth_of_ground_row(self, row: float) -> float:
    return self.focal * _CAMERA_HEIGHT / (row - self.horizon)


@dataclasses.dataclass(frozen=True)
class _Street:
  """The street's cross-section in metres (negative = left of the camera)."""

  road_left: float
  road_right: float
  wall_left: float   # outer edge of the left sidewalk
  wall_right: float
  sides: tuple[str, str]  # what lines the street beyond each sidewalk: "facade", "hedge", "field"

  @classmethod
  def sample(cls, rng: np.random.Generator) -> "_Street":
    road_left = -rng.uniform(2.5, 7.0)
    road_right = rng.uniform(2.5, 7.0)
    names = sorted(_SIDES)
    weights = [_SIDES[name][1] for name in names]
    sides = tuple(names[rng.choice(len(names), p=weights)] for _ in range(2))
    return cls(road_left, road_right, road_left - rng.uniform(1.5, 5.0),
               road_right + rng.uniform(1.5, 5.0), sides)

  def wall(self, side: int) -> float:
    return self.wall_left if side < 0 else self.wall_right

  def kerb(self, side: int) -> float:
    return self.road_left if side < 0 else self.road_right

  def side(self, side: int) -> str:
    return self.sides[0 if side < 0 else 1]


class _Canvas:
  """Label, instance and part maps that shapes are painted onto, back to front."""

  def __init__(self, height: int, width: int):
    self.label = np.full((height, width), SKY, np.uint8)
    self.instance = np.zeros((height, width), np.int32)
    self.part = np.zeros((height, width), np.uint8)
    # Pixel centres, broadcastable to [H, W].
    self.rows = np.arange(height, dtype=np.float32)[:, None] + 0.5
    self.cols = np.arange(width, dtype=np.float32)[None, :] + 0.5
    self.instance_label = [0]

  def new_instance(self, label: int) -> int:
    self.instance_label.append(label)
    return len(self.instance_label) - 1

  def fill(self, mask: np.ndarray, label: int, instance: int = 0, part: int = BODY,
           window: tuple[slice, slice] = (slice(None), slice(None))) -> None:
    """Paints `mask` (the shape of `window`) with a label, an instance and a part."""
    self.label[window][mask] = label
    self.instance[window][mask] = instance
    self.part[window][mask] = part

  def shape(self, box: tuple[float, float, float, float],
            inside: Callable[[np.ndarray, np.ndarray], np.ndarray], label: int,
            instance: int = 0, part: int = BODY) -> None:
    """Paints the pixels of `box` = (top, bottom, left, right) whose centres are `inside`."""
    height, width = self.label.shape
    top, bottom = max(int(np.floor(box[0])), 0), min(int(np.ceil(box[1])), height)
    left, right = max(int(np.floor(box[2])), 0), min(int(np.ceil(box[3])), width)
    if top >= bottom or left >= right:
      return
    window = (slice(top, bottom), slice(left, right))
    mask = inside(self.rows[top:bottom], self.cols[:, left:right])
    self.fill(mask, label, instance, part, window)

  def rect(self, top: float, bottom: float, left: float, right: float, label: int,
           instance: int = 0, part: int = BODY) -> None:
    self.shape((top, bottom, left, right),
               lambda r, c: (r >= top) & (r < bottom) & (c >= left) & (c < right),
               label, instance, part)

  def ellipse(self, cy: float, cx: float, ry: float, rx: float, label: int,
              instance: int = 0, part: int = BODY) -> None:
    self.shape((cy - ry, cy + ry, cx - rx, cx + rx),
               lambda r, c: ((r - cy) / ry) ** 2 + ((c - cx) / rx) ** 2 <= 1.0,
               label, instance, part)

  def trapezoid(self, top: float, bottom: float, top_span: tuple[float, float],
                bottom_span: tuple[float, float], label: int, instance: int = 0,
                part: int = BODY) -> None:
    """Paints rows [top, bottom) between edges interpolated from `top_span` to `bottom_span`."""

    def inside(r, c):
      a = np.clip((r - top) / max(bottom - top, 1e-6), 0.0, 1.0)
      left = top_span[0] + a * (bottom_span[0] - top_span[0])
      right = top_span[1] + a * (bottom_span[1] - top_span[1])
      return (r >= top) & (r < bottom) & (c >= left) & (c < right)

    left = min(top_span[0], bottom_span[0])
    right = max(top_span[1], bottom_span[1])
    self.shape((top, bottom, left, right), inside, label, instance, part)


def _skyline_building(canvas: _Canvas, view: _View, left: float, right: float,
                      rng: np.random.Generator) -> None:
  top = view.horizon - rng.uniform(0.04, 0.22) * view.height
  canvas.rect(top, view.horizon + 1, left, right, BUILDING, canvas.new_instance(BUILDING))


def _skyline_trees(canvas: _Canvas, view: _View, left: float, right: float,
                   rng: np.random.Generator) -> None:
  radius = rng.uniform(0.03, 0.08) * view.height
  canvas.ellipse(view.horizon, (left + right) / 2, radius, (right - left) / 2, VEGETATION)


def _skyline_gap(canvas: _Canvas, view: _View, left: float, right: float,
                 rng: np.random.Generator) -> None:
  del canvas, view, left, right, rng  # open sky


# Blocks of the distant skyline and their probabilities.
_SKYLINE_BLOCKS = ((_skyline_building, 0.75), (_skyline_trees, 0.1), (_skyline_gap, 0.15))


def _paint_skyline(canvas: _Canvas, view: _View, rng: np.random.Generator) -> None:
  """Distant buildings and tree lines standing on the horizon, across the whole width."""
  painters, weights = zip(*_SKYLINE_BLOCKS)
  left = 0.0
  while left < view.width:
    right = left + rng.uniform(0.05, 0.18) * view.width
    painters[rng.choice(len(painters), p=weights)](canvas, view, left, right, rng)
    left = right


@dataclasses.dataclass(frozen=True)
class _WallPlane:
  """Where each pixel's ray meets the vertical plane X = wall on one side of the street.

  Attributes:
    wall: The plane's lateral offset in metres.
    on_side: bool [1, W], the columns on that side of the vanishing point.
    depth: [1, W] depth Z of the plane at each column (a dummy far value off-side).
    height: [H, W] height Y above the ground where each pixel's ray meets the plane.
  """

  wall: float
  on_side: np.ndarray
  depth: np.ndarray
  height: np.ndarray

  @classmethod
  def of(cls, canvas: _Canvas, view: _View, wall: float) -> "_WallPlane":
    # A pixel at column c meets the plane at Z = f X / (c - vx), Y = h - (row - horizon) Z / f.
    offset = canvas.cols - view.vx
    on_side = np.sign(wall) * offset > 0.5
    depth = np.where(on_side, view.focal * wall / np.where(on_side, offset, 1.0), _FAR)
    height = _CAMERA_HEIGHT - (canvas.rows - view.horizon) * depth / view.focal
    return cls(wall, on_side, depth, height)

  def below(self, top: float | np.ndarray) -> np.ndarray:
    """The pixels showing the plane between the ground and height `top`."""
    return self.on_side & (self.height >= 0) & (self.height <= top)


def _paint_field(canvas: _Canvas, view: _View, plane: _WallPlane,
                 rng: np.random.Generator) -> None:
  del canvas, view, plane, rng  # open grass, already painted


def _paint_hedge(canvas: _Canvas, view: _View, plane: _WallPlane,
                 rng: np.random.Generator) -> None:
  del view
  canvas.fill(plane.below(rng.uniform(0.8, 2.5)), VEGETATION)


def _paint_facades(canvas: _Canvas, view: _View, plane: _WallPlane,
                   rng: np.random.Generator) -> None:
  """Consecutive buildings along the street, each with its own length, height and windows."""
  count = int(_FAR / 8.0) + 1
  ends = np.cumsum(rng.uniform(8.0, 25.0, size=count))
  is_building = rng.random(count) < 0.85
  roof = rng.uniform(6.0, 22.0, size=count)
  spacing = rng.uniform(2.5, 4.0, size=count)
  ids = np.array([canvas.new_instance(BUILDING) for _ in range(count)])
  segment = np.minimum(np.searchsorted(ends, plane.depth), count - 1)
  facade = plane.below(roof[segment]) & is_building[segment]
  canvas.fill(facade, BUILDING)
  canvas.instance[facade] = np.broadcast_to(ids[segment], facade.shape)[facade]
  # Windows from the first floor up; only where a window spans >= 1.5 px, so far ones do not
  # alias into noise (a window is 0.45 * spacing long: d column / d Z = f |X| / Z^2).
  pitch = spacing[segment]
  resolvable = view.focal * abs(plane.wall) * 0.45 * pitch / np.square(plane.depth) >= 1.5
  floor = np.mod(plane.height / 3.0, 1.0)
  bay = np.mod(plane.depth / pitch, 1.0)
  windows = (facade & resolvable & (plane.height > 3.0) & (floor > 0.3) & (floor < 0.75)
             & (bay > 0.25) & (bay < 0.7))
  canvas.part[windows] = DETAIL


# What can line the street beyond a sidewalk, and how likely it is.
_SIDES = {"facade": (_paint_facades, 0.5), "hedge": (_paint_hedge, 0.2),
          "field": (_paint_field, 0.3)}


def _paint_side(canvas: _Canvas, view: _View, street: _Street, side: int,
                rng: np.random.Generator) -> None:
  """Paints what lines the street beyond one sidewalk, on grass ground."""
  plane = _WallPlane.of(canvas, view, street.wall(side))
  # Below the horizon, whatever lies beyond the wall plane is ground.
  canvas.fill(plane.on_side & (plane.height >= 0) & (canvas.rows > view.horizon), TERRAIN)
  painter, _ = _SIDES[street.side(side)]
  painter(canvas, view, plane, rng)


def _paint_ground(canvas: _Canvas, view: _View, street: _Street) -> None:
  """Road and sidewalks: ground points between the walls, with a dashed centre line."""
  drop = canvas.rows - view.horizon
  below = drop > 0
  depth = view.focal * _CAMERA_HEIGHT / np.where(below, drop, 1.0)
  lateral = (canvas.cols - view.vx) * depth / view.focal
  road = below & (lateral >= street.road_left) & (lateral <= street.road_right)
  walk = below & ~road & (lateral >= street.wall_left) & (lateral <= street.wall_right)
  canvas.fill(walk, SIDEWALK)
  canvas.fill(road, ROAD)
  # Cityscapes labels lane markings as road; they are a DETAIL of it (3 m dashes every 9 m).
  centre = (street.road_left + street.road_right) / 2
  if street.road_right - street.road_left > 6.0:
    dashes = road & (np.abs(lateral - centre) < 0.1) & (np.mod(depth / 9.0, 1.0) < 1 / 3)
    canvas.part[dashes] = DETAIL


def _paint_car(canvas: _Canvas, view: _View, x: float, z: float, width: float,
               height: float) -> None:
  """A car seen from behind: body, cabin with a rear window, wheels."""
  s = view.ppm(z)
  col, ground = view.column(x, z), view.row(0.0, z)
  half = width / 2 * s
  car = canvas.new_instance(CAR)
  canvas.rect(ground - 0.35 * s, ground, col - half + 0.1 * s, col + half - 0.1 * s, CAR, car,
              TRIM)
  canvas.rect(ground - 0.95 * s, ground - 0.3 * s, col - half, col + half, CAR, car)
  canvas.trapezoid(ground - height * s, ground - 0.95 * s, (col - 0.7 * half, col + 0.7 * half),
                   (col - 0.92 * half, col + 0.92 * half), CAR, car)
  canvas.trapezoid(ground - (height - 0.08) * s, ground - 1.0 * s,
                   (col - 0.6 * half, col + 0.6 * half), (col - 0.8 * half, col + 0.8 * half),
                   CAR, car, DETAIL)


def _paint_person(canvas: _Canvas, view: _View, x: float, z: float, height: float) -> None:
  """A pedestrian: legs, torso, head."""
  s = view.ppm(z)
  col, ground = view.column(x, z), view.row(0.0, z)
  tall = height * s
  person = canvas.new_instance(PERSON)
  for side in (-1, 1):
    canvas.rect(ground - 0.48 * tall, ground, col + min(0, side * 0.17 * s) + side * 0.02 * s,
                col + max(0, side * 0.17 * s) + side * 0.02 * s, PERSON, person, TRIM)
  canvas.ellipse(ground - 0.66 * tall, col, 0.2 * tall, 0.3 * s, PERSON, person)
  canvas.ellipse(ground - 0.91 * tall, col, 0.075 * tall, 0.065 * tall, PERSON, person, DETAIL)


def _sign_circle(canvas: _Canvas, cy: float, cx: float, radius: float, part: int) -> None:
  canvas.ellipse(cy, cx, radius, radius, TRAFFIC_SIGN, part=part)


def _sign_square(canvas: _Canvas, cy: float, cx: float, radius: float, part: int) -> None:
  canvas.rect(cy - radius, cy + radius, cx - radius, cx + radius, TRAFFIC_SIGN, part=part)


def _sign_triangle(canvas: _Canvas, cy: float, cx: float, radius: float, part: int) -> None:
  canvas.trapezoid(cy - radius, cy + radius, (cx, cx), (cx - radius, cx + radius), TRAFFIC_SIGN,
                   part=part)


_SIGN_SHAPES = {"circle": _sign_circle, "square": _sign_square, "triangle": _sign_triangle}


def _paint_pole(canvas: _Canvas, view: _View, x: float, z: float, height: float, width: float,
                sign: str | None, sign_height: float, sign_size: float, arm: float) -> None:
  """A pole, maybe with a street-lamp arm over the road and a traffic sign."""
  s = view.ppm(z)
  col, ground = view.column(x, z), view.row(0.0, z)
  canvas.rect(ground - height * s, ground, col - width / 2 * s, col + width / 2 * s, POLE)
  if arm:
    # The arm reaches over the road: drawn at the pole's depth (a flat approximation).
    left, right = sorted((col, col + arm * s))
    canvas.rect(ground - height * s, ground - (height - width) * s, left, right, POLE)
  if sign is None:
    return
  cy, radius = ground - sign_height * s, sign_size / 2 * s
  # A border (DETAIL) around the sign's face (BODY).
  _SIGN_SHAPES[sign](canvas, cy, col, radius, DETAIL)
  _SIGN_SHAPES[sign](canvas, cy, col, 0.75 * radius, BODY)


def _paint_tree(canvas: _Canvas, view: _View, x: float, z: float, trunk: float,
                crowns: Sequence[tuple[float, float, float, float]]) -> None:
  """A tree: trunk and a crown of overlapping ellipses (Cityscapes labels both vegetation)."""
  s = view.ppm(z)
  col, ground = view.column(x, z), view.row(0.0, z)
  canvas.rect(ground - (trunk + 0.5) * s, ground, col - 0.15 * s, col + 0.15 * s, VEGETATION,
              part=TRIM)
  for dx, dy, rx, ry in crowns:
    canvas.ellipse(ground - (trunk + dy) * s, col + dx * s, ry * s, rx * s, VEGETATION)


def _paint_clutter(canvas: _Canvas, view: _View, x: float, z: float, width: float,
                   height: float) -> None:
  """An unlabelled box or bin on the sidewalk (void)."""
  s = view.ppm(z)
  col, ground = view.column(x, z), view.row(0.0, z)
  canvas.rect(ground - height * s, ground, col - width / 2 * s, col + width / 2 * s, VOID)


def _sample_objects(view: _View, street: _Street,
                    rng: np.random.Generator) -> list[tuple[float, Callable[[_Canvas], None]]]:
  """Samples the things in the street as (depth, painter) pairs."""
  # Objects stand on ground rows spread evenly from a little below the horizon to a little
  # below the image (near objects are cut off by the bottom edge, as from a dashboard), but
  # only as near as keeps them in view: a ground row r shows lateral offset x at column
  # vx + x (r - horizon) / h.
  span = view.height - view.horizon

  def depth(x: float) -> float:
    extent = view.vx if x < 0 else view.width - view.vx
    lowest = min(1.15 * span, _CAMERA_HEIGHT * extent / max(abs(x), 1e-3))
    return view.depth_of_ground_row(view.horizon + rng.uniform(0.12 * span,
                                                               max(lowest, 0.12 * span)))

  def sidewalk(side: int, margin: float) -> float:
    kerb, wall = street.kerb(side), street.wall(side)
    return rng.uniform(min(kerb, wall) + margin, max(kerb, wall) - margin)

  objects = []
  for _ in range(rng.poisson(3.0)):
    x = rng.uniform(street.road_left + 1.0, street.road_right - 1.0)
    objects.append((depth(x), functools.partial(
        _paint_car, x=x, width=rng.uniform(1.7, 2.0), height=rng.uniform(1.4, 1.9))))
  for _ in range(rng.poisson(4.0)):
    x = sidewalk(rng.choice([-1, 1]), 0.3)
    objects.append((depth(x), functools.partial(_paint_person, x=x, height=rng.uniform(1.55, 1.9))))
  for _ in range(rng.poisson(3.0)):
    side = rng.choice([-1, 1])
    x = street.kerb(side) + side * rng.uniform(0.3, 0.8)
    sign = str(rng.choice(sorted(_SIGN_SHAPES))) if rng.random() < 0.6 else None
    arm = -side * rng.uniform(1.0, 2.5) if rng.random() < 0.35 else 0.0
    objects.append((depth(x), functools.partial(
        _paint_pole, x=x, height=rng.uniform(4.0, 8.0), width=rng.uniform(0.3, 0.5), sign=sign,
        sign_height=rng.uniform(2.2, 3.2), sign_size=rng.uniform(0.8, 1.2), arm=arm)))
  for side in (-1, 1):
    open_side = street.side(side) != "facade"
    for _ in range(rng.poisson(2.5 if open_side else 1.0)):
      # Trees stand on the sidewalk by a facade, or anywhere beyond a hedge or a field.
      if open_side and rng.random() < 0.7:
        x = street.wall(side) + side * rng.uniform(0.5, 8.0)
      else:
        x = sidewalk(side, 0.2)
      crowns = [(rng.uniform(-0.8, 0.8), rng.uniform(1.0, 2.0), rng.uniform(1.0, 2.5),
                 rng.uniform(1.0, 2.2)) for _ in range(rng.integers(1, 4))]
      objects.append((depth(x), functools.partial(
          _paint_tree, x=x, trunk=rng.uniform(1.5, 3.0), crowns=crowns)))
  for _ in range(rng.poisson(0.6)):
    x = sidewalk(rng.choice([-1, 1]), 0.3)
    objects.append((depth(x), functools.partial(
        _paint_clutter, x=x, width=rng.uniform(0.5, 1.0), height=rng.uniform(0.6, 1.2))))
  return objects


def sample_layout(rng: np.random.Generator, width: int, height: int) -> Layout:
  """Draws the layout of one street scene.

  Args:
    rng: The random generator; the layout is a pure function of its state and the size.
    width: Image width in pixels.
    height: Image height in pixels.

  Returns:
    The `Layout`.
  """
  view = _View(width, height, horizon=rng.uniform(0.36, 0.5) * height,
               vx=rng.uniform(0.38, 0.62) * width)
  street = _Street.sample(rng)
  canvas = _Canvas(height, width)
  _paint_skyline(canvas, view, rng)
  for side in (-1, 1):
    _paint_side(canvas, view, street, side, rng)
  _paint_ground(canvas, view, street)
  objects = _sample_objects(view, street, rng)
  # Far to near, so near things occlude far ones.
  for z, paint in sorted(objects, key=lambda item: -item[0]):
    paint(canvas, view=view, z=z)
  return Layout(canvas.label, canvas.instance, canvas.part,
                np.asarray(canvas.instance_label, np.uint8), view.horizon)


@dataclasses.dataclass(frozen=True)
class Style:
  """How one domain paints a layout.

  Args:
    colours: (label id, part) -> base RGB; a missing part falls back to the class's BODY colour.
    object_colours: Label id -> RGB choices; each object of that class (car, person, building)
      draws its BODY colour from them.
    class_jitter: Std of a per-image, per-class multiplicative colour gain.
    instance_jitter: Std of a per-object multiplicative colour gain.
    texture: Label id -> amplitude of a coarse multiplicative texture (stains, clouds, foliage).
    grain: Label id -> amplitude of a fine, pixel-scale multiplicative texture.
    texture_cell: Feature size of the coarse texture, as a fraction of the image width.
    lighting: Amplitude of a random linear illumination gradient across the image.
    sky_haze: How far the sky fades to white from the top of the image to the horizon.
    colour_cast: Std of a per-image, per-channel gain.
    blur: Gaussian blur sigma, in pixels per 256 pixels of width.
    noise: Std of per-pixel sensor noise, in 0..255 units.
  """

  colours: Mapping[tuple[int, int], tuple[int, int, int]]
  object_colours: Mapping[int, Sequence[tuple[int, int, int]]] = dataclasses.field(
      default_factory=dict)
  class_jitter: float = 0.0
  instance_jitter: float = 0.0
  texture: Mapping[int, float] = dataclasses.field(default_factory=dict)
  grain: Mapping[int, float] = dataclasses.field(default_factory=dict)
  texture_cell: float = 0.05
  lighting: float = 0.0
  sky_haze: float = 0.0
  colour_cast: float = 0.0
  blur: float = 0.0
  noise: float = 0.0


STYLES: Registry = Registry("scene style")

# Flat, saturated colours and sharp edges, like a game engine's unlit albedo.
STYLES.register("game")(Style(
    colours={
        (VOID, BODY): (255, 0, 255),
        (ROAD, BODY): (110, 110, 120), (ROAD, DETAIL): (250, 250, 250),
        (SIDEWALK, BODY): (215, 195, 165),
        (BUILDING, BODY): (190, 90, 70), (BUILDING, DETAIL): (60, 110, 170),
        (POLE, BODY): (130, 130, 140),
        (TRAFFIC_SIGN, BODY): (240, 200, 20), (TRAFFIC_SIGN, DETAIL): (200, 30, 30),
        (VEGETATION, BODY): (40, 160, 50), (VEGETATION, TRIM): (110, 70, 30),
        (TERRAIN, BODY): (150, 210, 90),
        (SKY, BODY): (110, 180, 250),
        (PERSON, BODY): (220, 40, 40), (PERSON, DETAIL): (240, 190, 150),
        (PERSON, TRIM): (50, 50, 90),
        (CAR, BODY): (220, 30, 30), (CAR, DETAIL): (40, 60, 80), (CAR, TRIM): (15, 15, 15),
    },
    object_colours={
        BUILDING: ((190, 90, 70), (200, 170, 120), (150, 150, 170), (230, 220, 200)),
        PERSON: ((220, 40, 40), (40, 40, 200), (240, 240, 40), (30, 30, 30)),
        CAR: ((220, 30, 30), (30, 60, 200), (240, 240, 240), (20, 20, 20), (240, 200, 0)),
    },
    class_jitter=0.03,
    instance_jitter=0.04,
))

# Muted natural colours with textures, lighting, haze, a colour cast, blur and sensor noise.
STYLES.register("real")(Style(
    colours={
        (VOID, BODY): (90, 80, 70),
        (ROAD, BODY): (88, 90, 96), (ROAD, DETAIL): (200, 200, 190),
        (SIDEWALK, BODY): (150, 145, 140),
        (BUILDING, BODY): (130, 120, 110), (BUILDING, DETAIL): (40, 45, 55),
        (POLE, BODY): (90, 90, 95),
        (TRAFFIC_SIGN, BODY): (50, 90, 190), (TRAFFIC_SIGN, DETAIL): (230, 230, 230),
        (VEGETATION, BODY): (55, 85, 35), (VEGETATION, TRIM): (70, 55, 40),
        (TERRAIN, BODY): (125, 115, 70),
        (SKY, BODY): (175, 195, 220),
        (PERSON, BODY): (40, 40, 45), (PERSON, DETAIL): (200, 160, 130),
        (PERSON, TRIM): (40, 40, 60),
        (CAR, BODY): (180, 180, 185), (CAR, DETAIL): (30, 35, 40), (CAR, TRIM): (20, 20, 20),
    },
    object_colours={
        BUILDING: ((130, 120, 110), (150, 130, 110), (100, 100, 105), (170, 160, 150)),
        PERSON: ((40, 40, 45), (70, 60, 90), (120, 30, 30), (150, 140, 120)),
        CAR: ((180, 180, 185), (40, 40, 45), (120, 20, 20), (30, 50, 100), (200, 200, 200)),
    },
    class_jitter=0.06,
    instance_jitter=0.08,
    texture={ROAD: 0.10, SIDEWALK: 0.12, BUILDING: 0.12, VEGETATION: 0.30, TERRAIN: 0.25,
             SKY: 0.05},
    grain={ROAD: 0.08, SIDEWALK: 0.05, VEGETATION: 0.30, TERRAIN: 0.20, BUILDING: 0.04},
    lighting=0.25,
    sky_haze=0.5,
    colour_cast=0.08,
    blur=0.8,
    noise=5.0,
))


def _fractal_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
  """Smooth zero-mean noise with unit std: three octaves of upsampled random grids.

  Args:
    rng: The random generator.
    height: Output height in pixels.
    width: Output width in pixels.
    cell: Feature size of the coarsest octave, in pixels.

  Returns:
    float32 [height, width].
  """
  field = np.zeros((height, width), np.float32)
  for octave in range(3):
    size = max(cell / 2 ** octave, 1.0)
    grid = rng.standard_normal((int(height / size) + 2, int(width / size) + 2)).astype(np.float32)
    up = cv2.resize(grid, (int(grid.shape[1] * size), int(grid.shape[0] * size)),
                    interpolation=cv2.INTER_LINEAR)
    field += up[:height, :width] * 0.5 ** octave
  return field / max(float(field.std()), 1e-6)


def _per_label(values: Mapping[int, float]) -> np.ndarray:
  table = np.zeros((256,), np.float32)
  for label, value in values.items():
    table[label] = value
  return table


def render(layout: Layout, style: Style | str, rng: np.random.Generator) -> np.ndarray:
  """Paints a layout in a style.

  Args:
    layout: The scene's `Layout`.
    style: A `Style` or the name of one in `STYLES` ("game", "real").
    rng: The random generator for colours, textures, lighting and noise.

  Returns:
    uint8 [H, W, 3] RGB image.
  """
  if isinstance(style, str):
    style = STYLES.get(style)
  label, part, instance = layout.label, layout.part, layout.instance
  height, width = label.shape
  table = np.zeros((256, 3, 3), np.float32)
  for (label_id, part_id), rgb in sorted(style.colours.items()):
    if part_id == BODY:
      table[label_id, :] = rgb
  for (label_id, part_id), rgb in sorted(style.colours.items()):
    table[label_id, part_id] = rgb
  # Per-object base colours, then per-class and per-object gains.
  objects = np.zeros((len(layout.instance_label), 3), np.float32)
  has_colour = np.zeros((len(layout.instance_label),), bool)
  for label_id, choices in sorted(style.object_colours.items()):
    members = np.flatnonzero(layout.instance_label == label_id)
    members = members[members > 0]
    picks = rng.integers(len(choices), size=len(members))
    objects[members] = np.asarray(choices, np.float32)[picks]
    has_colour[members] = True
  image = table[label, part]
  recoloured = has_colour[instance] & (part == BODY)
  image[recoloured] = objects[instance[recoloured]]
  class_gain = 1 + style.class_jitter * rng.standard_normal((256, 3)).astype(np.float32)
  object_gain = 1 + style.instance_jitter * rng.standard_normal(objects.shape).astype(np.float32)
  object_gain[0] = 1.0
  image *= class_gain[label] * object_gain[instance]
  # Textures, modulated per class (and one coarse field per image, so classes share lighting).
  scale = width / 256
  if style.texture:
    coarse = _fractal_noise(rng, height, width, style.texture_cell * width)
    image *= (1 + _per_label(style.texture)[label] * coarse)[..., None]
  if style.grain:
    fine = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0),
                            0.5 * scale)
    fine /= max(float(fine.std()), 1e-6)
    image *= (1 + _per_label(style.grain)[label] * fine)[..., None]
  rows = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / height
  cols = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / width
  if style.sky_haze:
    haze = style.sky_haze * np.clip(rows * height / max(layout.horizon, 1.0), 0.0, 1.0)
    haze = np.where(label == SKY, haze, 0.0)[..., None]
    image = image * (1 - haze) + 255.0 * haze
  if style.lighting:
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (cols - 0.5) * np.cos(angle) + (rows - 0.5) * np.sin(angle)
    image *= (1 + 2 * style.lighting * ramp)[..., None]
  if style.colour_cast:
    image *= 1 + style.colour_cast * rng.standard_normal(3).astype(np.float32)
  if style.blur:
    image = cv2.GaussianBlur(image, (0, 0), style.blur * scale)
  if style.noise:
    image += style.noise * rng.standard_normal(image.shape).astype(np.float32)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def draw_scene(seed: int | Sequence[int] | np.random.SeedSequence, style: Style | str,
               width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
  """Draws one scene: a layout from `seed`, painted in `style`.

  The layout and the appearance use separate streams spawned from `seed`, so one seed gives
  the same layout in every style (pixel-aligned pairs across domains).

  Args:
    seed: Anything `np.random.SeedSequence` accepts, e.g. [dataset_seed, stream, index].
    style: A `Style` or the name of one in `STYLES`.
    width: Image width in pixels.
    height: Image height in pixels.

  Returns:
    (image, label): uint8 [H, W, 3] RGB and uint8 [H, W] Cityscapes label ids.
  """
  if not isinstance(seed, np.random.SeedSequence):
    seed = np.random.SeedSequence(seed)
  layout_seed, appearance_seed = seed.spawn(2)
  layout = sample_layout(np.random.default_rng(layout_seed), width, height)
  image = render(layout, style, np.random.default_rng(appearance_seed))
  return image, layout.label

"""Seeded, composable pixel transformations: a content-aligned copy of a dataset in a new domain.

Benbihi et al. (arXiv 1805.04141) evaluate feature-map regression on PASCAL VOC against "a
synthetically transformed" copy of it: the same content, a shifted pixel distribution. Which
transformations they used is not public; this module's set and its defaults are ours.

A transformation chain is written `name[=strength],name[=strength],...`, applied left to right,
e.g. `gamma=1.8,hue_rotation=60,jpeg=30`. Each transformation draws its dataset-wide parameters
(a colour offset, a colour matrix, a white balance) once from the chain's seed and its position
in the chain, so every image of the copy shows the same domain; per-image randomness (sensor
noise) comes from the seed and the image's `image/filename`, so a re-run writes the same pixels
whatever the order or the process.

Example:
  >>> chain = parse_chain("gamma=1.8,noise=5")
  >>> out = apply_chain(chain, np.zeros((4, 6, 3), np.uint8), seed=0, filename="a.jpg")
  >>> out.shape, out.dtype
  ((4, 6, 3), dtype('uint8'))
"""

import dataclasses
import io
import zlib
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

from tfdaseg.registry import Registry

# A transformation: (float32 RGB image in [0, 255], strength, dataset rng, image rng) -> image.
Transform = Callable[[np.ndarray, float, np.random.Generator, np.random.Generator], np.ndarray]


@dataclasses.dataclass(frozen=True)
class TransformInfo:
  """A registered transformation.

  Args:
    apply: The function.
    default: Its strength when the chain gives none.
    meaning: What the strength is, for help texts.
  """

  apply: Transform
  default: float
  meaning: str


TRANSFORMS: Registry[TransformInfo] = Registry("transform")


def _register(name: str, default: float, meaning: str) -> Callable[[Transform], Transform]:
  def decorator(fn: Transform) -> Transform:
    TRANSFORMS.register(name)(TransformInfo(fn, default, meaning))
    return fn
  return decorator


@_register("colour_shift", 30.0, "largest per-channel offset (grey levels), drawn once")
def colour_shift(image, strength, dataset_rng, image_rng):
  del image_rng
  return image + dataset_rng.uniform(-strength, strength, size=3).astype(np.float32)


@_register("gamma", 1.8, "exponent of (x / 255)")
def gamma(image, strength, dataset_rng, image_rng):
  del dataset_rng, image_rng
  return 255.0 * np.power(np.clip(image, 0, 255) / 255.0, strength)


@_register("hue_rotation", 60.0, "rotation of the chroma plane in degrees")
def hue_rotation(image, strength, dataset_rng, image_rng):
  del dataset_rng, image_rng
  # Rotation about the grey axis (1, 1, 1): luminance-preserving for equal channel weights.
  angle = np.deg2rad(strength)
  axis = np.ones(3) / np.sqrt(3.0)
  cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
  rotation = (np.cos(angle) * np.eye(3) + np.sin(angle) * cross
              + (1 - np.cos(angle)) * np.outer(axis, axis))
  return image @ rotation.T.astype(np.float32)


@_register("contrast", 0.5, "factor on the deviation from the image's mean")
def contrast(image, strength, dataset_rng, image_rng):
  del dataset_rng, image_rng
  mean = image.mean(axis=(0, 1), keepdims=True)
  return mean + strength * (image - mean)


@_register("blur", 1.5, "Gaussian blur radius in pixels")
def blur(image, strength, dataset_rng, image_rng):
  del dataset_rng, image_rng
  pil = Image.fromarray(_to_uint8(image))
  return np.asarray(pil.filter(ImageFilter.GaussianBlur(strength)), np.float32)


@_register("noise", 10.0, "standard deviation of per-pixel Gaussian noise (grey levels)")
def noise(image, strength, dataset_rng, image_rng):
  del dataset_rng
  return image + image_rng.normal(0.0, strength, size=image.shape).astype(np.float32)


@_register("jpeg", 20.0, "JPEG quality (1-95) of a compress-decompress round trip")
def jpeg(image, strength, dataset_rng, image_rng):
  del dataset_rng, image_rng
  buffer = io.BytesIO()
  Image.fromarray(_to_uint8(image)).save(buffer, format="JPEG", quality=int(strength))
  return np.asarray(Image.open(buffer).convert("RGB"), np.float32)


@_register("style", 0.3, "spread of a fixed random colour matrix around the identity")
def style(image, strength, dataset_rng, image_rng):
  del image_rng
  # A fixed affine colour mapping (matrix and offset drawn once): a "style" of the domain.
  matrix = np.eye(3) + dataset_rng.normal(0.0, strength, size=(3, 3))
  matrix /= np.abs(matrix).sum(axis=1, keepdims=True)
  offset = dataset_rng.uniform(-40.0, 40.0, size=3) * strength
  return (image @ matrix.T + offset).astype(np.float32)


@_register("camera", 1.0, "size of the simulated camera change (0 = none)")
def camera(image, strength, dataset_rng, image_rng):
  del image_rng
  # Another camera: white balance gains, a different tone curve, lens vignetting.
  gains = 1.0 + dataset_rng.uniform(-0.25, 0.25, size=3) * strength
  tone = 1.0 + 0.4 * strength * dataset_rng.choice([-1.0, 1.0])
  height, width = image.shape[:2]
  rows = (np.arange(height) - (height - 1) / 2) / max(height / 2, 1)
  cols = (np.arange(width) - (width - 1) / 2) / max(width / 2, 1)
  radius2 = rows[:, None] ** 2 + cols[None, :] ** 2
  vignette = (1.0 - 0.25 * strength * radius2 / 2.0)[..., None]
  balanced = np.clip(image * gains, 0, 255) / 255.0
  return (255.0 * np.power(balanced, tone) * vignette).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Step:
  """One transformation of a chain.

  Args:
    name: A `TRANSFORMS` name.
    strength: Its strength.
  """

  name: str
  strength: float

  def __str__(self) -> str:
    return f"{self.name}={self.strength:g}"


def parse_chain(text: str) -> tuple[Step, ...]:
  """Parses `name[=strength],...` (strengths default to each transformation's).

  Raises:
    ValueError: naming the item, for an unknown name, a strength that is not a number, or an
      empty chain.
  """
  steps = []
  for item in filter(None, (part.strip() for part in text.split(","))):
    name, _, value = item.partition("=")
    if name not in TRANSFORMS:
      raise ValueError(f"unknown transform {name!r} in {text!r}; known: "
                       f"{', '.join(TRANSFORMS.names())}")
    try:
      strength = float(value) if value else TRANSFORMS.get(name).default
    except ValueError:
      raise ValueError(f"transform {item!r}: the strength {value!r} is not a number") from None
    if name == "jpeg" and not 1 <= strength <= 95:
      raise ValueError(f"transform {item!r}: JPEG quality must be within 1..95")
    steps.append(Step(name, strength))
  if not steps:
    raise ValueError(f"no transform in {text!r}; known: {', '.join(TRANSFORMS.names())}")
  return tuple(steps)


def chain_text(chain: Sequence[Step]) -> str:
  """The canonical text of a chain (every strength explicit), as recorded in manifests."""
  return ",".join(str(step) for step in chain)


def _to_uint8(image: np.ndarray) -> np.ndarray:
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def apply_chain(chain: Sequence[Step], image: np.ndarray, seed: int, filename: str) -> np.ndarray:
  """Transforms one image.

  Args:
    chain: The transformations, applied in order.
    image: uint8 [H, W, 3] RGB.
    seed: The chain's seed (dataset-wide parameters).
    filename: The image's `image/filename` (its per-image randomness).

  Returns:
    uint8 [H, W, 3] RGB of the same size.
  """
  image_seed = zlib.crc32(filename.encode()) & 0x7FFFFFFF
  out = image.astype(np.float32)
  for position, step in enumerate(chain):
    dataset_rng = np.random.default_rng([seed, position])
    image_rng = np.random.default_rng([seed, position, image_seed])
    out = np.clip(TRANSFORMS.get(step.name).apply(out, step.strength, dataset_rng, image_rng),
                  0, 255)
  return _to_uint8(out)

"""Segmenting image files, folders and videos: label PNGs, colourised PNGs, overlays.

For an image `name.ext`: `name_labels.png` (class ids), `name_colour.png` and `name_overlay.png`
(the image beside the colourised prediction blended over it). For a video: `name_overlay.mp4`
of side-by-side frames at the source frame rate. Files that are not images or videos are
skipped with a warning; unreadable ones are reported by name and the run goes on.
"""

import dataclasses
import io
import os
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image
from tqdm import tqdm

from tfdaseg.data.labels import ClassSet, colourise
from tfdaseg.evaluation.inference import InferenceOptions, output_channels, segment_images
from tfdaseg.evaluation.loading import LoadedModel
from tfdaseg.utils.files import atomic_write_bytes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")


class Segmenter:
  """Labels uint8 RGB images of any size with one traced graph.

  Args:
    model: The generator.
    class_set: The classes to predict (a subset of the model's is cut from its logits).
    options: Input size, scales, flip and resize method.
  """

  def __init__(self, model: LoadedModel, class_set: ClassSet, options: InferenceOptions):
    self.class_set = class_set
    channels = output_channels(class_set, model.class_set)
    self._segment = tf.function(
        lambda images: segment_images(model.forward, images, options, channels)["labels"],
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])

  def __call__(self, image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] RGB -> uint8 [H, W] class ids."""
    return self._segment(image[None]).numpy()[0].astype(np.uint8)


def overlay(image: np.ndarray, colour: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  """The image beside the colourised labels blended over it: uint8 [H, 2W, 3]."""
  blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colour.astype(np.float32)
  return np.concatenate([image, np.round(blend).astype(np.uint8)], axis=1)


def _png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="png")
  return buffer.getvalue()


@dataclasses.dataclass
class PredictionSummary:
  """Counts of a prediction run.

  Args:
    images: Image files segmented.
    videos: Videos segmented.
    frames: Video frames segmented.
    skipped: Files neither image nor video.
    failed: Files that could not be read or written, with the reason.
  """

  images: int = 0
  videos: int = 0
  frames: int = 0
  skipped: list[str] = dataclasses.field(default_factory=list)
  failed: dict[str, str] = dataclasses.field(default_factory=dict)


def predict_image(segmenter: Segmenter, path: str, output_dir: str,
                  summary: PredictionSummary) -> None:
  """Writes the label, colour and overlay PNGs of one image file."""
  with Image.open(path) as file:
    image = np.asarray(file.convert("RGB"))
  labels = segmenter(image)
  colour = colourise(labels, segmenter.class_set.palette)
  stem = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0])
  atomic_write_bytes(f"{stem}_labels.png", _png(labels))
  atomic_write_bytes(f"{stem}_colour.png", _png(colour))
  atomic_write_bytes(f"{stem}_overlay.png", _png(overlay(image, colour)))
  summary.images += 1


def predict_video(segmenter: Segmenter, path: str, output_dir: str,
                  summary: PredictionSummary) -> None:
  """Writes `name_overlay.mp4`: side-by-side frames (mp4v) at the source frame rate."""
  import cv2

  capture = cv2.VideoCapture(path)
  if not capture.isOpened():
    raise OSError("OpenCV cannot open it as a video")
  # Some containers report no rate; 25 fps is the common default of players.
  fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
  total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
  final = os.path.join(output_dir, f"{os.path.splitext(os.path.basename(path))[0]}_overlay.mp4")
  # OpenCV picks the container from the extension, so the temporary name keeps ".mp4".
  partial = f"{final[:-4]}.tmp-{os.getpid()}.mp4"
  writer = None
  frames = 0
  try:
    with tqdm(total=total, unit="frame", desc=os.path.basename(path), leave=False) as bar:
      while True:
        ok, frame = capture.read()
        if not ok:
          break
        image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        combined = overlay(image, colourise(segmenter(image), segmenter.class_set.palette))
        if writer is None:
          writer = cv2.VideoWriter(partial, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                   (combined.shape[1], combined.shape[0]))
          if not writer.isOpened():
            raise OSError(f"OpenCV cannot write {partial}")
        writer.write(cv2.cvtColor(combined, cv2.COLOR_RGB2BGR))
        frames += 1
        bar.update(1)
  finally:
    capture.release()
    if writer is not None:
      writer.release()
  if frames == 0:
    raise OSError("no frame could be decoded")
  os.replace(partial, final)
  summary.videos += 1
  summary.frames += frames


# Extension -> what to do with the file.
_HANDLERS: dict[str, Callable[[Segmenter, str, str, PredictionSummary], None]] = {
    **{ext: predict_image for ext in IMAGE_EXTENSIONS},
    **{ext: predict_video for ext in VIDEO_EXTENSIONS},
}


def list_inputs(path: str) -> list[str]:
  """The file itself, or every file under a folder (recursively, as Cityscapes' city folders).

  Raises:
    FileNotFoundError: when `path` does not exist.
  """
  if os.path.isdir(path):
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(path)
                  for name in names)
  if os.path.isfile(path):
    return [path]
  raise FileNotFoundError(f"{path}: no such file or folder")


def predict_paths(segmenter: Segmenter, paths: Sequence[str], output_dir: str,
                  root: str | None = None, limit: int | None = None) -> PredictionSummary:
  """Segments the images and videos among `paths` into `output_dir`.

  Args:
    segmenter: The model.
    paths: Files (`list_inputs`).
    output_dir: Where outputs go (created).
    root: The folder `paths` were listed from: outputs keep their subfolders under it.
    limit: Segment at most this many images and videos; all when None or 0.

  Returns:
    The `PredictionSummary`; failures are logged with the file name and the reason.
  """
  summary = PredictionSummary()
  for path in tqdm(paths, unit="file", desc="predicting"):
    if limit and summary.images + summary.videos + len(summary.failed) >= limit:
      break
    handler = _HANDLERS.get(os.path.splitext(path)[1].lower())
    if handler is None:
      logging.warning("%s: not an image or video (%s), skipped", path,
                      ", ".join(sorted(_HANDLERS)))
      summary.skipped.append(path)
      continue
    folder = output_dir
    if root is not None:
      folder = os.path.normpath(os.path.join(output_dir, os.path.relpath(os.path.dirname(path),
                                                                         root)))
    os.makedirs(folder, exist_ok=True)
    try:
      handler(segmenter, path, folder, summary)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
      logging.error("%s: cannot be segmented: %s", path, e)
      summary.failed[path] = str(e)
  return summary

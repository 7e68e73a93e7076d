"""Test helpers for evaluation, export and prediction: a tiny generator, a model_dir, a split.

The generator is the real multi-level DeepLab-v2 at its tiny test size (a few KB of weights).
"""

import os

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from tests.helpers import models
from tests.helpers.cli import run_cli  # noqa: F401  (the evaluation tests run their CLIs with it)
from tfdaseg.data import schema, shards
from tfdaseg.run_folder import write_generator_spec
from tfdaseg.utils.files import atomic_write_json

NUM_CLASSES = 19
# (width, height), as the CLIs take it.
INPUT_SIZE = (64, 32)


def tiny_generator(num_classes: int = NUM_CLASSES, seed: int = 0) -> keras.Model:
  """A tiny multi-level DeepLab-v2 (tests/helpers/models.py) with non-trivial BatchNorm.

  Args:
    num_classes: Channels of "logits".
    seed: Seed of the BatchNorm statistics.

  Returns:
    The Keras generator (output dict with "logits" at stride 8, "features", ...).
  """
  generator = models.tiny_generator("deeplab_v2_resnet101_multi", num_classes=num_classes)
  models.randomise_batch_norm(generator, seed)
  return generator


def make_model_dir(path: str, steps: tuple[int, ...] = (1,), class_set: str = "19",
                   num_classes: int = NUM_CLASSES) -> keras.Model:
  """Writes a run folder like training does: generator.json and one checkpoint per step.

  Each step's weights differ (perturbed), so evaluating steps gives different scores.

  Args:
    path: The model_dir to create.
    steps: Checkpoint numbers to save.
    class_set: Recorded class set.
    num_classes: Its number of classes.

  Returns:
    The generator holding the last step's weights.
  """
  generator = tiny_generator(num_classes)
  write_generator_spec(path, generator, class_set, INPUT_SIZE)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(generator=generator), path,
                                       max_to_keep=len(steps))
  rng = np.random.default_rng(0)
  for step in steps:
    for variable in generator.trainable_variables:
      variable.assign(variable + rng.normal(0, 0.05, variable.shape).astype(np.float32))
    manager.save(checkpoint_number=step)
  return generator


def random_images(count: int, height: int = 32, width: int = 64, seed: int = 0) -> np.ndarray:
  """uint8 [count, height, width, 3] smooth random RGB images (blocks, so predictions vary)."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (count, height // 8, width // 8, 3), dtype=np.uint8)
  return np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)


def random_labels(count: int, height: int = 32, width: int = 64, num_classes: int = NUM_CLASSES,
                  ignore_fraction: float = 0.1, seed: int = 1) -> np.ndarray:
  """uint8 [count, height, width] storage ids in [0, num_classes) with some 255 (ignore)."""
  rng = np.random.default_rng(seed)
  label = rng.integers(0, num_classes, (count, height, width)).astype(np.uint8)
  label[rng.random(label.shape) < ignore_fraction] = 255
  return label


def _png(array: np.ndarray) -> bytes:
  return tf.io.encode_png(array).numpy()


def write_split(output_dir: str, images: np.ndarray, labels: np.ndarray | None = None,
                dataset: str = "tiny", split: str = "val",
                class_space: str = "cityscapes19") -> str:
  """Writes a one-shard split in the tfdaseg schema, with its manifest.

  Args:
    output_dir: Where to write.
    images: uint8 [N, H, W, 3].
    labels: uint8 [N, h, w] storage ids (may be larger than the images), or None (unlabelled).
    dataset: Dataset name of the files.
    split: Split name of the files.
    class_space: The storage space recorded in the manifest.

  Returns:
    The split's shard glob.
  """
  os.makedirs(output_dir, exist_ok=True)
  name = shards.shard_name(dataset, split, 0, 1)
  with tf.io.TFRecordWriter(os.path.join(output_dir, name)) as writer:
    for i, image in enumerate(images):
      label = None if labels is None else _png(labels[i][..., None])
      example = schema.make_example(_png(image), "png", image.shape[0], image.shape[1],
                                    f"image_{i:03d}.png", label_png=label)
      writer.write(example.SerializeToString())
  atomic_write_json(shards.manifest_path(output_dir, dataset, split), {
      "format": shards.MANIFEST_FORMAT, "dataset": dataset, "split": split,
      "class_space": class_space, "labelled": labels is not None, "count": len(images),
      "num_shards": 1, "shards": [name], "shard_lengths": [len(images)]})
  return shards.shard_glob(output_dir, dataset, split)


def write_image_files(folder: str, images: np.ndarray) -> list[str]:
  """Saves images as PNG files image_000.png, ...; returns their paths."""
  os.makedirs(folder, exist_ok=True)
  paths = []
  for i, image in enumerate(images):
    paths.append(os.path.join(folder, f"image_{i:03d}.png"))
    Image.fromarray(image).save(paths[-1])
  return paths


def write_video(path: str, frames: np.ndarray, fps: float = 5.0) -> str:
  """Writes uint8 RGB frames [N, H, W, 3] as an mp4v video with OpenCV; returns `path`."""
  import cv2

  height, width = frames.shape[1:3]
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
  for frame in frames:
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  writer.release()
  return path


def eval_batches(images: np.ndarray, labels: np.ndarray, batch_size: int = 1) -> tf.data.Dataset:
  """Batches in the evaluation contract, straight from arrays (no TFRecords, no pipeline).

  Args:
    images: uint8 [N, H, W, 3] RGB.
    labels: [N, h, w] class ids (255 ignore), possibly larger than the images.
    batch_size: Images per batch.

  Returns:
    A dataset of {"image": caffe-preprocessed float32 [B, H, W, 3], "label": int32 [B, h, w]}.
  """
  from tfdaseg.data.preprocessing import caffe_preprocess

  dataset = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels.astype(np.int32)})
  dataset = dataset.map(lambda b: {"image": caffe_preprocess(b["image"]), "label": b["label"]})
  return dataset.batch(batch_size)

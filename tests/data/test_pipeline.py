"""The tf.data pipeline over converted shards: shapes, values, remaps, order, sharding, errors."""

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from tests.helpers import datasets
from tfdaseg.data import labels
from tfdaseg.data import pipeline
from tfdaseg.data.in_memory import write_arrays
from tfdaseg.data.preprocessing import CAFFE_BGR_MEAN

WIDTH, HEIGHT = 16, 12
NUM_IMAGES = 6


@pytest.fixture(scope="module")
def split(tmp_path_factory):
  """Six random 16x12 images with cityscapes19 labels, in three shards."""
  out = tmp_path_factory.mktemp("records")
  rng = np.random.default_rng(0)
  images = [datasets.random_image(rng, (WIDTH, HEIGHT)) for _ in range(NUM_IMAGES)]
  label_maps = [rng.choice(list(range(19)) + [255], (HEIGHT, WIDTH)).astype(np.uint8)
                for _ in range(NUM_IMAGES)]
  names = [f"img{i}.png" for i in range(NUM_IMAGES)]
  write_arrays(str(out), "toy", "train", images, label_maps, filenames=names, num_shards=3)
  return {"pattern": str(out / "toy-train-*.tfrecord"), "dir": out,
          "images": dict(zip(names, images)), "labels": dict(zip(names, label_maps))}


def caffe(rgb: np.ndarray) -> np.ndarray:
  return rgb[..., ::-1].astype(np.float32) - np.asarray(CAFFE_BGR_MEAN, np.float32)


def eval_batches(split, **kwargs) -> list[dict]:
  kwargs.setdefault("class_set", "19")
  ds = pipeline.make_dataset(split["pattern"], batch_size=1, training=False, **kwargs)
  return [{k: v.numpy()[0] for k, v in batch.items()} for batch in ds]


def test_training_batches_have_contract_shapes_and_dtypes(split):
  ds = pipeline.make_dataset(split["pattern"], class_set="19", image_size=(8, 6), batch_size=4,
                             training=True, seed=0)
  spec = ds.element_spec
  assert spec["image"] == tf.TensorSpec((4, 6, 8, 3), tf.float32)
  assert spec["label"] == tf.TensorSpec((4, 6, 8), tf.int32)
  assert spec["filename"] == tf.TensorSpec((4,), tf.string)
  batches = list(ds.take(3))  # 12 > 6 examples: training repeats
  assert len(batches) == 3


@pytest.mark.parametrize("image_size", [None, (WIDTH, HEIGHT)])
def test_eval_passes_once_in_order_with_exact_values(split, image_size):
  batches = eval_batches(split, image_size=image_size, interpolation="bicubic")
  # read_records reads the shards one after the other, in name order.
  assert [b["filename"].decode() for b in batches] == list(datasets.read_records(
      split["pattern"]))
  for batch in batches:
    name = batch["filename"].decode()
    np.testing.assert_allclose(batch["image"], caffe(split["images"][name]), atol=1e-4)
    np.testing.assert_array_equal(batch["label"], split["labels"][name])


def _remap(label: np.ndarray, storage_ids) -> np.ndarray:
  position = {storage: index for index, storage in enumerate(storage_ids)}
  return datasets.expected_ids(label, position)


@pytest.mark.parametrize("class_set, storage_ids", [
    ("16", labels.SYNTHIA16_TRAIN_IDS),
    ("13", labels.SYNTHIA13_TRAIN_IDS),
])
def test_class_set_remaps_storage_ids(split, class_set, storage_ids):
  for batch in eval_batches(split, class_set=class_set):
    stored = split["labels"][batch["filename"].decode()]
    np.testing.assert_array_equal(batch["label"], _remap(stored, storage_ids))


def test_camvid_grouping_of_cityscapes_ids(split):
  groups = labels.CITYSCAPES_TO_CAMVID
  for batch in eval_batches(split, class_set="cityscapes_as_camvid11"):
    stored = split["labels"][batch["filename"].decode()]
    np.testing.assert_array_equal(batch["label"], datasets.expected_ids(stored, groups))


def test_label_resized_nearest_with_the_image(split):
  for batch in eval_batches(split, image_size=(WIDTH // 2, HEIGHT // 2)):
    stored = split["labels"][batch["filename"].decode()]
    # Nearest with half-pixel centres takes the second pixel of every 2x2 block.
    np.testing.assert_array_equal(batch["label"], stored[1::2, 1::2])
    assert batch["image"].shape == (HEIGHT // 2, WIDTH // 2, 3)


def test_bicubic_matches_pil_bicubic(split):
  size = (10, 7)
  for batch in eval_batches(split, image_size=size, interpolation="bicubic"):
    rgb = Image.fromarray(split["images"][batch["filename"].decode()])
    expected = caffe(np.asarray(rgb.resize(size, Image.Resampling.BICUBIC)))
    # PIL computes in 8-bit fixed point, so single pixels of noise differ by a few levels.
    assert np.abs(batch["image"] - expected).mean() < 0.5


def test_seeded_training_is_reproducible(split):
  def run(seed):
    ds = pipeline.make_dataset(split["pattern"], class_set="19", image_size=(WIDTH, HEIGHT),
                               batch_size=2, training=True, seed=seed,
                               augment={"min_scale": 0.5, "max_scale": 2.0, "hflip": True})
    batches = list(ds.take(6))
    return (np.concatenate([b["filename"].numpy() for b in batches]),
            np.stack([b["image"].numpy() for b in batches]))

  names_a, images_a = run(7)
  names_b, images_b = run(7)
  names_c, images_c = run(8)
  np.testing.assert_array_equal(names_a, names_b)
  np.testing.assert_array_equal(images_a, images_b)
  assert not (np.array_equal(names_a, names_c) and np.array_equal(images_a, images_c))


def test_flip_moves_image_and_label_together(split):
  ds = pipeline.make_dataset(split["pattern"], class_set="19", image_size=(WIDTH, HEIGHT),
                             batch_size=1, training=True, seed=1, augment={"hflip": True})
  flips = set()
  for batch in ds.take(12):
    name = batch["filename"].numpy()[0].decode()
    image, label = batch["image"].numpy()[0], batch["label"].numpy()[0]
    flipped = not np.array_equal(label, split["labels"][name])
    stored_image, stored_label = caffe(split["images"][name]), split["labels"][name]
    if flipped:
      stored_image, stored_label = stored_image[:, ::-1], stored_label[:, ::-1]
    np.testing.assert_array_equal(label, stored_label)
    np.testing.assert_allclose(image, stored_image, atol=1e-4)
    flips.add(flipped)
  assert flips == {True, False}


def test_scale_and_crop_keep_ids_and_pad_with_ignore(split):
  ds = pipeline.make_dataset(split["pattern"], class_set="19", image_size=(WIDTH, HEIGHT),
                             batch_size=1, training=True, seed=2,
                             augment={"min_scale": 0.5, "max_scale": 0.5})
  for batch in ds.take(4):
    name = batch["filename"].numpy()[0].decode()
    label, image = batch["label"].numpy()[0], batch["image"].numpy()[0]
    assert label.shape == (HEIGHT, WIDTH)
    # Half size, padded at the bottom/right: the rest is ignore label and mean colour (0).
    np.testing.assert_array_equal(label[:HEIGHT // 2, :WIDTH // 2],
                                  split["labels"][name][1::2, 1::2])
    assert (label[HEIGHT // 2:] == 255).all() and (image[HEIGHT // 2:] == 0).all()


def test_input_context_shards_files_and_batch(split):
  names = []
  for pipeline_id in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                         num_replicas_in_sync=2)
    ds = pipeline.make_dataset(split["pattern"], class_set="19", batch_size=2, training=False,
                               input_context=context)
    assert ds.element_spec["image"].shape[0] is None  # per-replica batch 1, last may be short
    part = [n.decode() for batch in ds for n in batch["filename"].numpy()]
    assert all(len(batch["filename"]) == 1 for batch in ds)
    names.append(part)
  assert not set(names[0]) & set(names[1])
  assert sorted(names[0] + names[1]) == sorted(split["images"])
  too_many = tf.distribute.InputContext(num_input_pipelines=4, input_pipeline_id=0)
  with pytest.raises(ValueError, match="3 files cannot be split over 4"):
    pipeline.make_dataset(split["pattern"], class_set="19", batch_size=1, training=True,
                          input_context=too_many)


def test_adaptation_dataset_repeats_each_stream(split):
  source = pipeline.make_dataset(split["pattern"], class_set="19", image_size=(8, 6),
                                 batch_size=2, training=True, seed=0)
  target = pipeline.make_dataset(split["pattern"], class_set="16", batch_size=2, training=False)
  batches = list(pipeline.make_adaptation_dataset(source, target).take(5))  # target has 3
  assert len(batches) == 5
  assert batches[0]["source"]["image"].shape == (2, 6, 8, 3)
  assert batches[0]["target"]["image"].shape == (2, HEIGHT, WIDTH, 3)


def test_read_manifest(split):
  manifest = pipeline.read_manifest(split["pattern"])
  assert manifest["count"] == NUM_IMAGES and manifest["class_space"] == "cityscapes19"


def test_errors_name_the_problem(split, tmp_path):
  with pytest.raises(FileNotFoundError, match="no TFRecord files match"):
    pipeline.make_dataset(str(tmp_path / "none-*.tfrecord"), class_set="19", batch_size=1,
                          training=False)
  with pytest.raises(ValueError, match=r"toy-train\.json: the shards hold cityscapes19 labels"):
    pipeline.make_dataset(split["pattern"], class_set="11", batch_size=1, training=False)
  orphan = tmp_path / "orphan-train-00000-of-00001.tfrecord"
  orphan.write_bytes(b"")
  with pytest.raises(FileNotFoundError, match=r"orphan-train\.json"):
    pipeline.make_dataset(str(orphan), class_set="19", batch_size=1, training=False)
  with pytest.raises(ValueError, match="several splits"):
    pipeline.read_manifest([split["pattern"], str(orphan)])
  with pytest.raises(ValueError, match="label_size='same'"):
    pipeline.make_dataset(split["pattern"], class_set="19", label_size=None, batch_size=1,
                          training=True, augment={"hflip": True})

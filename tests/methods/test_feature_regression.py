"""Feature-map regression end to end: `python -m tfdaseg.train` and `tfdaseg.evaluate` on a
miniature VOC and its transformed copy; the aligned reading it needs; the unpaired case."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import evaluation as eval_helpers
from tests.helpers import training as helpers
from tfdaseg import evaluate, models
from tfdaseg.data import labels, pipeline
from tfdaseg.data.augment import AugmentConfig
from tfdaseg.data.converters import CONVERTERS, ConverterOptions
from tfdaseg.data.tfrecord_writer import WriteOptions, write_split
from tfdaseg.run_folder import list_checkpoints, restore_generator

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "voc_transformed", "feature_regression.cfg")
TINY_VOC = ["--blocks=1,1,1,1", "--base_width=4", "--bn_mode=train", "--input_size=32,32",
            "--input_size_target=32,32", "--batch_size=2", "--num_steps=20",
            "--num_steps_stop=2", "--save_pred_every=2", "--summary_every=1",
            "--image_summary_every=0", "--strategy=one_device", "--learning_rate=1e-2"]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
  return helpers.write_voc_and_transformed_copy(str(tmp_path_factory.mktemp("voc")))


@pytest.fixture(scope="module")
def source_model(tmp_path_factory) -> str:
  """A tiny 21-class generator saved as .keras: the "source-only" teacher."""
  tf.keras.utils.set_random_seed(0)
  generator = models.build("deeplab_v2_resnet101_multi", num_classes=21, blocks=(1, 1, 1, 1),
                           base_width=4, bn_mode="train", aspp_compat="full")
  path = str(tmp_path_factory.mktemp("teacher") / "source_only.keras")
  generator.save(path)
  return path


def _heads(model) -> list[np.ndarray]:
  return [np.array(v) for v in models.split_head_variables(model)[1]]


def test_trains_without_target_labels_keeps_the_classifier_and_evaluates(voc, source_model,
                                                                         tmp_path):
  model_dir = str(tmp_path / "run")
  helpers.run_train_main(f"--flagfile={CONFIG}", f"--model_dir={model_dir}",
                         f"--source_train={voc['train']}", f"--target_train={voc['copy_train']}",
                         f"--target_val={voc['copy_val']}", f"--restore_from={source_model}",
                         *TINY_VOC)
  assert [step for step, _ in list_checkpoints(model_dir)] == [2]
  student, spec = restore_generator(model_dir)
  assert spec["class_set"] == "21"
  teacher = keras.models.load_model(source_model, compile=False)
  for mine, theirs in zip(_heads(student), _heads(teacher)):
    np.testing.assert_array_equal(mine, theirs)
  moved = [np.abs(np.array(a) - np.array(b)).max() for a, b in
           zip(models.split_head_variables(student)[0], models.split_head_variables(teacher)[0])]
  assert max(moved) > 0
  eval_helpers.run_cli(evaluate.main, ["tfdaseg-evaluate", f"--model_dir={model_dir}",
                                       f"--data={voc['copy_val']}", "--input_size=32,32"])
  with open(os.path.join(model_dir, "eval", "metrics.json")) as f:
    assert json.load(f)["num_images"] == 1


def test_unpaired_target_or_no_teacher_is_refused(voc, source_model, tmp_path):
  data = [f"--flagfile={CONFIG}", f"--model_dir={tmp_path}", f"--source_train={voc['train']}",
          f"--target_val={voc['copy_val']}", *TINY_VOC]
  with pytest.raises(SystemExit, match=r"--target_train=.*voc_transformed-val.*not "
                                       r"content-aligned with --source_train="):
    helpers.run_train_main(*data, f"--target_train={voc['copy_val']}",
                           f"--restore_from={source_model}")
  with pytest.raises(SystemExit, match="starts from a trained generator.*--restore_from"):
    helpers.run_train_main(*data, f"--target_train={voc['copy_train']}", "--restore_from=")
  assert not list_checkpoints(str(tmp_path))


def test_aligned_reading_pairs_records_under_shuffle_and_augmentation(voc):
  classes = labels.get_class_set("21")
  augment = AugmentConfig(min_scale=0.8, max_scale=1.2, crop_size=(24, 24), hflip=True)
  parsers = [pipeline.Parser(classes, (32, 32), augment=augment) for _ in range(2)]
  dataset = pipeline.make_aligned_dataset([voc["train"], voc["copy_train"]], parsers,
                                          batch_size=1, training=True, seed=5)
  for original, copy in dataset.take(6):
    assert original["filename"].numpy() == copy["filename"].numpy()
    np.testing.assert_array_equal(original["label"], copy["label"])
    assert not np.array_equal(original["image"], copy["image"])


def test_records_of_other_images_fail_naming_the_patterns(voc, tmp_path):
  # One train image against the one val image: the same record counts, other filenames.
  list_file = tmp_path / "one.txt"
  list_file.write_text("2007_000032\n")
  raw = os.path.join(os.path.dirname(os.path.dirname(voc["train"])), "raw")
  converter = CONVERTERS.get("voc")(raw, ConverterOptions(list_file=str(list_file)))
  write_split(converter, "voc", "train", str(tmp_path), WriteOptions(num_workers=0))
  parsers = [pipeline.Parser(labels.get_class_set("21"), (32, 32))] * 2
  dataset = pipeline.make_aligned_dataset([str(tmp_path / "voc-train-*.tfrecord"), voc["val"]],
                                          parsers, batch_size=1, training=False)
  with pytest.raises(tf.errors.InvalidArgumentError, match="are not aligned"):
    next(iter(dataset))

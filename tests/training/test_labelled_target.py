"""A few labelled target images: the seeded choice, the list file, the filtered streams, the CLI."""

import os

import pytest

from tests.helpers import training as helpers
from tfdaseg.data import pipeline
from tfdaseg.training import labelled_target
from tfdaseg.training.inputs import DataError
from tfdaseg.training.labelled_target import LabelledTargetConfig

NAMES = [f"city/image_{i:03d}.png" for i in range(40)]


def test_the_choice_is_a_function_of_the_seed():
  config = LabelledTargetConfig(target_labeled_count=5)
  first = labelled_target.choose(NAMES, config, seed=3, flag="target_train")
  assert first == labelled_target.choose(list(reversed(NAMES)), config, 3, "target_train")
  assert first != labelled_target.choose(NAMES, config, 4, "target_train")
  assert len(set(first)) == 5 and set(first) <= set(NAMES) and first == sorted(first)
  with pytest.raises(DataError, match="--target_labeled_count=41: --target_train holds only 40"):
    labelled_target.choose(NAMES, LabelledTargetConfig(target_labeled_count=41), 0,
                           "target_train")


def test_a_list_file_names_the_images(tmp_path):
  path = tmp_path / "list.txt"
  path.write_text(f"{NAMES[7]}\n\n{NAMES[2]}\n")
  config = LabelledTargetConfig(target_labeled_list=str(path))
  assert labelled_target.choose(NAMES, config, 0, "target_train") == [NAMES[2], NAMES[7]]
  path.write_text("city/missing.png\n")
  with pytest.raises(DataError, match=r"list.txt: 1 names are not in --target_train"):
    labelled_target.choose(NAMES, config, 0, "target_train")
  with pytest.raises(DataError, match="no such file"):
    labelled_target.read_list(str(tmp_path / "absent.txt"))


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
  return helpers.write_tiny_tfrecords(str(tmp_path_factory.mktemp("data")))


def test_the_filter_keeps_or_drops_the_listed_images(tfrecords):
  pattern = tfrecords["target_val"]
  names = pipeline.list_filenames(pattern)
  assert len(names) == 3
  for keep, expected in ((True, {names[0]}), (False, set(names[1:]))):
    dataset = pipeline.make_dataset(pattern, class_set="19", image_size=(32, 32), batch_size=1,
                                    training=True, seed=0,
                                    filenames=pipeline.FilenameFilter((names[0],), keep))
    seen = {b["filename"].numpy()[0].decode() for b in dataset.take(8)}
    assert seen == expected


def test_train_reads_the_chosen_images_and_records_them(tfrecords, tmp_path):
  model_dir = str(tmp_path / "run")
  args = [f"--model_dir={model_dir}", "--method=source_and_target",
          f"--source_train={tfrecords['source_train']}",
          f"--target_train={tfrecords['target_val']}", *helpers.TINY_TRAIN_FLAGS,
          "--num_steps_stop=1", "--image_summary_every=0", "--target_labeled_count=2"]
  helpers.run_train_main(*args)
  with open(os.path.join(model_dir, labelled_target.LIST_NAME)) as f:
    chosen = f.read().split()
  assert len(chosen) == 2 and set(chosen) <= set(pipeline.list_filenames(tfrecords["target_val"]))
  with pytest.raises(SystemExit, match="lists other labelled target images"):
    helpers.run_train_main(*args[:-1], "--target_labeled_count=1", "--num_steps_stop=2")
  with pytest.raises(SystemExit, match="not both"):
    helpers.run_train_main(*args, f"--target_labeled_list={model_dir}/{labelled_target.LIST_NAME}")
  with pytest.raises(SystemExit, match="--method=source_only reads no labelled target stream"):
    helpers.run_train_main(*args, "--method=source_only")
  with pytest.raises(SystemExit, match="converted without labels"):
    helpers.run_train_main(*args[:-1], f"--model_dir={tmp_path / 'other'}",
             f"--target_train={tfrecords['target_train']}", "--target_labeled_count=1")

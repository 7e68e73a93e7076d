"""Rare class sampling: the statistics the converter writes, P(c), the draws and the re-crops."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import training as helpers
from tfdaseg.data import class_stats, integrity, labels, pipeline
from tfdaseg.data.in_memory import write_arrays
from tfdaseg.training import inputs
from tfdaseg.data.rare_class_sampling import (RareClassSampling, class_pixels,
                                              class_probabilities, make_rare_class_dataset,
                                              sampling_table)

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 16


def _split(tmp_path, num_images: int = 12, seed: int = 0):
  """Images whose labels hold a few classes in random blocks (class 18 in a corner of 2)."""
  rng = np.random.default_rng(seed)
  label_maps = []
  for i in range(num_images):
    label = rng.choice([0, 1, 2, labels.IGNORE_ID], size=(SIZE, SIZE), p=[0.6, 0.2, 0.1, 0.1])
    if i < 2:
      label[:8, :8] = 18
    label_maps.append(label.astype(np.uint8))
  images = [rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8) for _ in label_maps]
  write_arrays(str(tmp_path), "toy", "train", images, label_maps, num_shards=3)
  return str(tmp_path / "toy-train-*.tfrecord")


def _labels_by_filename(pattern: str) -> dict[str, np.ndarray]:
  batches = pipeline.make_dataset(pattern, class_set="19", batch_size=1, training=False)
  return {b["filename"].numpy()[0].decode(): b["label"].numpy()[0] for b in batches}


def test_converter_writes_per_image_counts_and_offsets_of_every_record(tmp_path):
  pattern = _split(tmp_path)
  stats, paths = class_stats.read_class_stats(pattern)
  by_name = _labels_by_filename(pattern)
  assert len(stats["records"]) == len(by_name) == 12
  seen = set()
  # The offset and length point at the record: it parses, and its label counts match numpy's.
  for name, (_, _, _, pixels) in zip(_record_names(stats, paths), stats["records"]):
    label = by_name[name]
    expected = {str(c): int((label == c).sum()) for c in np.unique(label) if c != labels.IGNORE_ID}
    assert pixels == expected
    seen.add(name)
  assert seen == set(by_name)


def test_probabilities_follow_daformer_and_candidates_need_more_than_min_pixels():
  counts = np.array([[100, 10, 0, 0], [50, 0, 0, 0], [30, 3, 0, 7]])
  p = class_probabilities(counts, temperature=0.5)
  f = counts.sum(0)[[0, 1, 3]] / counts.sum()
  expected = np.exp((1 - f) / 0.5) / np.exp((1 - f) / 0.5).sum()
  np.testing.assert_allclose(p[[0, 1, 3]], expected)
  assert p[2] == 0
  table = sampling_table(counts, RareClassSampling(temperature=0.5, min_pixels=7))
  # Class 3 has no image with more than 7 pixels (7 is not more): it is not drawn.
  assert table.classes.tolist() == [0, 1]
  assert [c.tolist() for c in table.candidates] == [[0, 1, 2], [0]]
  np.testing.assert_allclose(table.probabilities, expected[:2] / expected[:2].sum())
  with pytest.raises(ValueError, match="lower --rcs_min_pixels"):
    sampling_table(counts, RareClassSampling(min_pixels=1000))


def _draws(pattern, options, seed=3, count=600, crop=None):
  augment = None if crop is None else {"crop_size": [crop, crop]}
  parser = pipeline.Parser(labels.get_class_set("19"), (SIZE, SIZE), pipeline.SAME,
                           augment=pipeline.augment_lib.AugmentConfig.from_value(augment))
  dataset = make_rare_class_dataset(pattern, parser, batch_size=1, seed=seed, options=options)
  return [(b["filename"].numpy()[0].decode(), b["label"].numpy()[0])
          for b in dataset.take(count)]


def test_image_draws_follow_the_class_distribution(tmp_path):
  pattern = _split(tmp_path)
  options = RareClassSampling(temperature=0.05, min_pixels=10, min_crop_ratio=0.0)
  stats, paths = class_stats.read_class_stats(pattern)
  table = sampling_table(class_pixels(stats, labels.get_class_set("19")), options)
  # P(image) = sum over the classes it is a candidate of, of P(c) / |candidates(c)|.
  expected = np.zeros(len(stats["records"]))
  for p, candidates in zip(table.probabilities, table.candidates):
    expected[candidates] += p / len(candidates)
  names = _record_names(stats, paths)
  draws = _draws(pattern, options)
  observed = np.array([sum(drawn == name for drawn, _ in draws) for name in names], np.float64)
  expected_counts = expected * len(draws)
  # Chi-square goodness of fit, images expected fewer than 5 times pooled: below the 0.999
  # quantile for its degrees of freedom (Wilson-Hilferty approximation of the chi-square).
  keep = expected_counts >= 5
  obs = np.append(observed[keep], observed[~keep].sum())
  exp = np.append(expected_counts[keep], expected_counts[~keep].sum())
  obs, exp = obs[exp > 0], exp[exp > 0]
  chi2 = float(((obs - exp) ** 2 / exp).sum())
  dof = len(obs) - 1
  critical = dof * (1 - 2 / (9 * dof) + 3.09 * np.sqrt(2 / (9 * dof))) ** 3
  assert dof >= 3 and chi2 < critical, (chi2, critical, obs, exp)
  # The rare class (18, in 2 of 12 images) is drawn far more often than its pixel share.
  assert np.mean([(label == 18).any() for _, label in draws]) > 0.3


def _record_names(stats: dict, paths: list[str]) -> list[str]:
  """The filename of each record of the statistics, read at its offset."""
  names = []
  for shard, offset, length, _ in stats["records"]:
    record = integrity.read_record(paths[shard], offset, length)
    names.append(tf.train.Example.FromString(record).features.feature[
        "image/filename"].bytes_list.value[0].decode())
  return names


def test_recrops_until_the_crop_holds_enough_of_the_class(tmp_path):
  pattern = _split(tmp_path)
  # At T 1e-4 nearly every draw is for class 18, the rarest (an 8x8 corner of two images),
  # the others being orders of magnitude less likely.
  rare_only = RareClassSampling(temperature=1e-4, min_pixels=40, min_crop_ratio=0.5)
  recropped = _draws(pattern, rare_only, count=60, crop=8)
  single = _draws(pattern, RareClassSampling(temperature=1e-4, min_pixels=40,
                                             min_crop_ratio=0.0), count=60, crop=8)
  held = lambda draws: np.mean([(label == 18).sum() > 20 for _, label in draws])
  # 26 of the 81 offsets of an 8x8 crop of a 16x16 image hold more than 20 of the corner's
  # pixels (32%); the first crop and up to 10 more find one in 1 - 0.68^11 = 98.6% of draws.
  assert held(recropped) > 0.9 > 0.6 > held(single)


def test_same_seed_same_stream_other_seed_another(tmp_path):
  pattern = _split(tmp_path)
  options = RareClassSampling(temperature=0.05, min_pixels=20)
  first = [n for n, _ in _draws(pattern, options, seed=5, count=40, crop=8)]
  again = [n for n, _ in _draws(pattern, options, seed=5, count=40, crop=8)]
  other = [n for n, _ in _draws(pattern, options, seed=6, count=40, crop=8)]
  assert first == again != other


def test_missing_or_stale_statistics_name_the_file_and_the_tool(tmp_path):
  pattern = _split(tmp_path)
  path = class_stats.class_stats_path(str(tmp_path / "toy-train.json"))
  stats = json.loads(open(path).read())
  stats["fingerprint"] = "another"
  with open(path, "w") as f:
    json.dump(stats, f)
  with pytest.raises(ValueError, match="toy-train-class_stats.json: not the statistics"):
    class_stats.read_class_stats(pattern)
  os.remove(path)
  with pytest.raises(FileNotFoundError, match="toy-train-class_stats.json.*compute_class_stats"):
    class_stats.read_class_stats(pattern)
  result = subprocess.run([sys.executable, "tools/compute_class_stats.py", f"--data={pattern}"],
                          cwd=_REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  class_stats.read_class_stats(pattern)


def test_train_draws_the_source_by_rare_class_sampling(tmp_path, monkeypatch):
  patterns = helpers.write_tiny_tfrecords(str(tmp_path / "data"))
  model_dir = str(tmp_path / "run")
  args = [f"--flagfile={os.path.join(_REPO, 'configs', 'gta5_to_cityscapes', 'dacs.cfg')}",
          f"--model_dir={model_dir}", *(f"--{k}={v}" for k, v in patterns.items()),
          *helpers.TINY_TRAIN_FLAGS, "--num_steps_stop=2", "--image_summary_every=0",
          "--rare_class_sampling", "--rcs_min_pixels=10",
          '--source_augment={"crop_size": [24, 24]}', '--target_augment={"crop_size": [24, 24]}']
  drawn = []

  def recording(pattern, parser, **kwargs):
    drawn.append((pattern, kwargs["options"]))
    return make_rare_class_dataset(pattern, parser, **kwargs)

  monkeypatch.setattr(inputs, "make_rare_class_dataset", recording)
  helpers.run_train_main(*args)
  assert os.path.exists(os.path.join(model_dir, "ckpt-2.index"))
  assert drawn and {pattern for pattern, _ in drawn} == {patterns["source_train"]}
  assert drawn[0][1] == RareClassSampling(enabled=True, min_pixels=10)
  os.remove(class_stats.class_stats_path(patterns["source_train"].replace("-*.tfrecord", ".json")))
  with pytest.raises(SystemExit, match="--source_train=.*class_stats.json.*compute_class_stats"):
    helpers.run_train_main(*args, f"--model_dir={tmp_path / 'other'}")

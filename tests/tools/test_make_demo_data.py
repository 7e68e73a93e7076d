"""Tests for tools/make_demo_data.py and the scenes it draws (tfdaseg.data.synthetic_scenes)."""

import dataclasses
import glob
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tfdaseg.data import synthetic_scenes
from tfdaseg.data.labels import CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_PALETTE
from tools import make_demo_data

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PARAMS = make_demo_data.DemoParams(seed=3, num_source=6, num_target_train=6, num_target_val=4,
                                    width=64, height=32)
_VALID_LABEL_IDS = set(CITYSCAPES_ID_TO_TRAIN_ID) | {synthetic_scenes.VOID}


def _files(root: str) -> dict[str, bytes]:
  """Every file under `root`, by relative path, with its bytes."""
  files = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        files[os.path.relpath(path, root)] = f.read()
  return files


def _run_cli(out: str, *extra: str) -> subprocess.CompletedProcess:
  p = _PARAMS
  return subprocess.run(
      [sys.executable, "-m", "tools.make_demo_data", f"--output_dir={out}", f"--seed={p.seed}",
       f"--num_source={p.num_source}", f"--num_target_train={p.num_target_train}",
       f"--num_target_val={p.num_target_val}", f"--size={p.width}x{p.height}",
       "--num_workers=2", *extra],
      cwd=_REPO, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def cli_output(tmp_path_factory) -> str:
  """A folder made by the command line, with two worker processes."""
  out = str(tmp_path_factory.mktemp("cli") / "demo_data")
  _run_cli(out)
  return out


def test_gta5_layout(cli_output):
  images = sorted(glob.glob(os.path.join(cli_output, "gta5", "images", "*.png")))
  assert [os.path.basename(p) for p in images] == [f"{i:05d}.png" for i in range(1, 7)]
  palette = np.zeros((256, 3), np.uint8)
  for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
    palette[label_id] = CITYSCAPES_PALETTE[train_id]
  for path in images:
    image = Image.open(path)
    assert (image.mode, image.size) == ("RGB", (64, 32))
    label = Image.open(path.replace(os.sep + "images" + os.sep, os.sep + "labels" + os.sep))
    assert (label.mode, label.size) == ("P", (64, 32))
    ids = np.asarray(label)
    assert set(np.unique(ids)) <= _VALID_LABEL_IDS
    # Like the real GTA5 labels: the palette colours each label id as Cityscapes does.
    colours = np.asarray(label.getpalette(), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(colours[ids], palette[ids])


def test_cityscapes_layout(cli_output):
  root = os.path.join(cli_output, "cityscapes")
  stem = re.compile(r"([a-z]+)_(\d{6})_(\d{6})")
  cities = {}
  for split, count in (("train", 6), ("val", 4)):
    images = sorted(glob.glob(os.path.join(root, "leftImg8bit", split, "*", "*")))
    assert len(images) == count
    for path in images:
      city = os.path.basename(os.path.dirname(path))
      match = re.fullmatch(stem.pattern + "_leftImg8bit.png", os.path.basename(path))
      assert match and match[1] == city, path
      cities.setdefault(split, set()).add(city)
      assert Image.open(path).mode == "RGB"
      label = Image.open(os.path.join(root, "gtFine", split, city,
                                      f"{match[0][:-len('_leftImg8bit.png')]}_gtFine_labelIds.png"))
      assert (label.mode, label.size) == ("L", (64, 32))
      assert set(np.unique(np.asarray(label))) <= _VALID_LABEL_IDS
  # Cityscapes validates on cities it does not train on.
  assert cities["train"] and cities["val"] and not cities["train"] & cities["val"]


def test_same_seed_same_bytes_for_any_worker_count(cli_output, tmp_path):
  out = str(tmp_path / "again")
  assert make_demo_data.make_demo_data(out, _PARAMS, num_workers=1)
  first, second = _files(cli_output), _files(out)
  assert sorted(first) == sorted(second)
  assert all(first[name] == second[name] for name in first)
  other = str(tmp_path / "other_seed")
  make_demo_data.make_demo_data(other, dataclasses.replace(_PARAMS, seed=_PARAMS.seed + 1),
                                num_workers=1)
  third = _files(other)
  assert sum(first[name] != third[name] for name in first if name.endswith(".png")) >= 20


def test_cli_rerun_reuses_the_folder(cli_output):
  before = _files(cli_output)
  result = _run_cli(cli_output)
  assert "reusing" in result.stderr
  assert _files(cli_output) == before


def test_reuse_overwrite_and_new_parameters(tmp_path):
  out = str(tmp_path / "data")
  small = make_demo_data.DemoParams(num_source=2, num_target_train=1, num_target_val=1, width=32,
                                    height=16)
  assert make_demo_data.make_demo_data(out, small, num_workers=1)
  assert make_demo_data.read_stamp(out) == small.stamp()
  probe = os.path.join(out, "gta5", "images", "00001.png")
  os.utime(probe, (0, 0))
  assert not make_demo_data.make_demo_data(out, small, num_workers=1)
  assert os.stat(probe).st_mtime == 0  # reused, not rewritten
  assert make_demo_data.make_demo_data(out, small, overwrite=True, num_workers=1)
  assert os.stat(probe).st_mtime > 0
  bigger = dataclasses.replace(small, num_source=3)
  assert make_demo_data.make_demo_data(out, bigger, num_workers=1)
  assert len(os.listdir(os.path.join(out, "gta5", "images"))) == 3
  assert make_demo_data.read_stamp(out) == bigger.stamp()
  assert sorted(os.listdir(tmp_path)) == ["data"]  # no temporary folders left behind


def test_interrupted_run_leaves_nothing_trusted(tmp_path, monkeypatch):
  out = str(tmp_path / "data")
  small = make_demo_data.DemoParams(num_source=1, num_target_train=1, num_target_val=1, width=32,
                                    height=16)

  def crash(root, params, num_workers):
    make_demo_data.plan(params)  # as if drawing had begun
    open(os.path.join(root, "half-written.png"), "wb").close()
    raise KeyboardInterrupt

  monkeypatch.setattr(make_demo_data, "_draw_all", crash)
  with pytest.raises(KeyboardInterrupt):
    make_demo_data.make_demo_data(out, small, num_workers=1)
  assert os.listdir(tmp_path) == []


def test_refuses_a_folder_it_did_not_make(tmp_path):
  out = tmp_path / "mine"
  out.mkdir()
  (out / "notes.txt").write_text("keep me")
  small = make_demo_data.DemoParams(num_source=1, num_target_train=1, num_target_val=1, width=32,
                                    height=16)
  with pytest.raises(FileExistsError, match="DONE.json"):
    make_demo_data.make_demo_data(str(out), small, num_workers=1)
  assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("text", ["256", "256x", "0x128", "axb", "256x128x3"])
def test_parse_size_rejects(text):
  with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
    make_demo_data.parse_size(text)


def test_layout_does_not_depend_on_style():
  for index in range(5):
    _, game = synthetic_scenes.draw_scene([0, 0, index], "game", 64, 32)
    _, real = synthetic_scenes.draw_scene([0, 0, index], "real", 64, 32)
    np.testing.assert_array_equal(game, real)


def _domain_statistics(style: str, stream: int, count: int = 200):
  """Per-class pixel frequency in 4 horizontal bands, and the mean colour of each class."""
  classes = synthetic_scenes.SCENE_LABEL_IDS
  frequency = np.zeros((4, len(classes)))
  colour_sum = np.zeros((len(classes), 3))
  for index in range(count):
    image, label = synthetic_scenes.draw_scene([1, stream, index], style, 48, 24)
    for k, label_id in enumerate(classes):
      mask = label == label_id
      frequency[:, k] += mask.reshape(4, -1).mean(axis=1)
      colour_sum[k] += image[mask].sum(axis=0)
  pixels = frequency.sum(axis=0) * label.size / 4
  return frequency / count, colour_sum / np.maximum(pixels, 1)[:, None]


def test_domains_share_layout_statistics_but_not_colours():
  game_frequency, game_colour = _domain_statistics("game", stream=0)
  real_frequency, real_colour = _domain_statistics("real", stream=1)
  # Independent scenes of the two domains: every class covers about the same share of every
  # band of rows (sky at the top, road at the bottom, ...).
  assert np.abs(game_frequency - real_frequency).max() < 0.07
  assert game_frequency[0, synthetic_scenes.SCENE_LABEL_IDS.index(synthetic_scenes.SKY)] > 0.3
  assert game_frequency[3, synthetic_scenes.SCENE_LABEL_IDS.index(synthetic_scenes.ROAD)] > 0.3
  # ... while the classes look different: most mean class colours are far apart.
  frequent = game_frequency.sum(axis=0) > 0.02
  distance = np.linalg.norm(game_colour - real_colour, axis=1)[frequent]
  assert np.median(distance) > 40


def test_real_style_is_textured_and_game_style_is_flat():
  layout = synthetic_scenes.sample_layout(np.random.default_rng(0), 64, 32)
  game = synthetic_scenes.render(layout, "game", np.random.default_rng(1)).astype(float)
  real = synthetic_scenes.render(layout, "real", np.random.default_rng(1)).astype(float)
  road = layout.label == synthetic_scenes.ROAD
  assert game[road & (layout.part == synthetic_scenes.BODY)].std(axis=0).max() < 1.0
  assert real[road].std(axis=0).min() > 4.0

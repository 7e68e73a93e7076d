"""Prediction on images, folders and videos; bad files are skipped or reported, not fatal."""

import os

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.helpers import evaluation as helpers
from tfdaseg import predict
from tfdaseg.data import labels
from tfdaseg.evaluation import inference, loading, prediction


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("run"))
  helpers.make_model_dir(path)
  return path


@pytest.fixture(scope="module")
def segmenter(model_dir):
  model = loading.load_model("model_dir", model_dir)
  return prediction.Segmenter(model, model.class_set,
                              inference.InferenceOptions(input_size=model.input_size))


def test_folder_of_images_with_junk(segmenter, tmp_path):
  images = helpers.random_images(2, height=24, width=40)
  helpers.write_image_files(str(tmp_path / "in"), images)
  helpers.write_image_files(str(tmp_path / "in" / "city"), images[1:])
  (tmp_path / "in" / "notes.txt").write_text("not an image")
  (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG but not really")
  summary = prediction.predict_paths(segmenter, prediction.list_inputs(str(tmp_path / "in")),
                                     str(tmp_path / "out"), root=str(tmp_path / "in"))
  assert summary.images == 3
  # Subfolders are kept, so equal names in two folders do not overwrite each other.
  assert (tmp_path / "out" / "city" / "image_000_labels.png").exists()
  assert [os.path.basename(p) for p in summary.skipped] == ["notes.txt"]
  assert [os.path.basename(p) for p in summary.failed] == ["broken.png"]

  ids = np.asarray(Image.open(tmp_path / "out" / "image_000_labels.png"))
  colour = np.asarray(Image.open(tmp_path / "out" / "image_000_colour.png"))
  side_by_side = np.asarray(Image.open(tmp_path / "out" / "image_000_overlay.png"))
  assert ids.shape == (24, 40) and ids.max() < helpers.NUM_CLASSES
  np.testing.assert_array_equal(ids, segmenter(images[0]))
  np.testing.assert_array_equal(colour, labels.colourise(ids, labels.CITYSCAPES_PALETTE))
  assert side_by_side.shape == (24, 80, 3)
  np.testing.assert_array_equal(side_by_side[:, :40], images[0])


def test_video_gets_an_overlay_video_at_its_frame_rate(segmenter, tmp_path):
  frames = helpers.random_images(4, height=32, width=48)
  video = helpers.write_video(str(tmp_path / "clip.mp4"), frames, fps=7.0)
  summary = prediction.predict_paths(segmenter, [video], str(tmp_path / "out"))
  assert (summary.videos, summary.frames, summary.failed) == (1, 4, {})
  capture = cv2.VideoCapture(str(tmp_path / "out" / "clip_overlay.mp4"))
  assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(7.0)
  assert int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == 96
  assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
  capture.release()
  assert sorted(os.listdir(tmp_path / "out")) == ["clip_overlay.mp4"]


def test_cli_limits_and_reports_failures_in_its_exit_status(model_dir, tmp_path):
  helpers.write_image_files(str(tmp_path / "in"), helpers.random_images(2))
  argv = ["tfdaseg-predict", f"--model_dir={model_dir}", f"--input={tmp_path / 'in'}",
          f"--output_dir={tmp_path / 'out'}", "--flip"]
  assert helpers.run_cli(predict.main, argv + ["--max_images=1"]) == 0
  assert sorted(os.listdir(tmp_path / "out")) == [
      "image_000_colour.png", "image_000_labels.png", "image_000_overlay.png"]
  (tmp_path / "in" / "image_002.jpg").write_bytes(b"garbage")
  assert helpers.run_cli(predict.main, argv) == 1
  assert (tmp_path / "out" / "image_001_overlay.png").exists()

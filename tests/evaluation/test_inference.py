"""Inference: resizing to the input size, aligned-corner upsampling, flip and scale averaging."""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import datasets
from tfdaseg.data import labels
from tfdaseg.data import resizing
from tfdaseg.data.preprocessing import caffe_preprocess
from tfdaseg.evaluation import inference

C = 3


def _ramp_forward(calls: list | None = None):
  """Logits that depend on position only (channel 0 grows with x): not flip-equivariant."""

  def forward(images):
    if calls is not None:
      calls.append(tuple(images.shape[1:3]))
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    ramp = tf.linspace(-3.0, 3.0, width)[None, None, :, None]
    ramp = tf.tile(ramp, tf.stack([tf.shape(images)[0], height, 1, 1]))
    return {"logits": tf.concat([ramp, tf.zeros_like(ramp), -ramp], axis=-1)}

  return forward


def test_mmseg_generators_upsample_with_half_pixel_centres():
  images = tf.zeros([1, 8, 16, 3])
  output_size = tf.constant([32, 64])
  logits = _ramp_forward()(images)["logits"]
  for align_corners in (True, False):
    options = inference.InferenceOptions(align_corners=align_corners)
    expected = tf.nn.softmax(tf.raw_ops.ResizeBilinear(
        images=logits, size=output_size, align_corners=align_corners,
        half_pixel_centers=not align_corners))
    np.testing.assert_allclose(inference.predict_probabilities(
        _ramp_forward(), images, options, output_size=output_size), expected, rtol=1e-6)


def test_probabilities_at_the_output_size_from_the_input_size():
  calls = []
  images = tf.zeros([2, 20, 40, 3])
  options = inference.InferenceOptions(input_size=(16, 8), scales=(0.5, 1.0))
  probabilities = inference.predict_probabilities(_ramp_forward(calls), images, options,
                                                  output_size=tf.constant([40, 80]))
  assert probabilities.shape == (2, 40, 80, C)
  np.testing.assert_allclose(tf.reduce_sum(probabilities, -1), 1.0, rtol=1e-5)
  assert calls == [(4, 8), (8, 16)]


def test_flip_averages_the_mirrored_prediction():
  images = tf.zeros([1, 8, 16, 3])
  plain = inference.predict_probabilities(_ramp_forward(), images,
                                          inference.InferenceOptions()).numpy()
  flipped = inference.predict_probabilities(_ramp_forward(), images,
                                            inference.InferenceOptions(flip=True)).numpy()
  # Without flip the left/right ends differ; averaged with the mirror they are symmetric.
  assert not np.allclose(plain[..., 0], plain[..., ::-1, 0])
  np.testing.assert_allclose(flipped[..., 0], flipped[..., ::-1, 0], rtol=1e-5)
  np.testing.assert_allclose(flipped, (plain + plain[:, :, ::-1]) / 2, rtol=1e-5)


def test_channels_select_logits_before_the_softmax():
  images = tf.zeros([1, 8, 16, 3])
  options = inference.InferenceOptions()
  subset = inference.predict_probabilities(_ramp_forward(), images, options, channels=[2, 0])
  assert subset.shape[-1] == 2
  np.testing.assert_allclose(tf.reduce_sum(subset, -1), 1.0, rtol=1e-5)
  assert float(subset[0, 0, 0, 0]) > 0.5  # channel 2 (-ramp) wins on the left


def test_segment_images_labels_are_the_argmax():
  images = tf.constant(np.random.default_rng(0).integers(0, 255, (1, 8, 16, 3)), tf.uint8)
  out = inference.segment_images(_ramp_forward(), images, inference.InferenceOptions())
  assert out["labels"].dtype == tf.int32 and out["labels"].shape == (1, 8, 16)
  np.testing.assert_array_equal(out["labels"], tf.argmax(out["probabilities"], -1))


def test_default_resize_feeds_what_the_training_pipeline_feeds():
  # Evaluation resizes Caffe-preprocessed images in the graph, validation uint8 images in the
  # input pipeline: the same filter, rounding and clipping included.
  assert inference.InferenceOptions().resize == resizing.DEFAULT_INTERPOLATION == "bicubic"
  image = datasets.smooth_noisy_image(np.random.default_rng(0), (300, 160))
  size = tf.constant([72, 128])
  in_graph = inference.IMAGE_RESIZERS.get("bicubic")(caffe_preprocess(image[None]), size)
  in_pipeline = caffe_preprocess(resizing.resize_bicubic_like_pil(image, size))
  difference = np.abs(in_graph.numpy()[0] - in_pipeline.numpy())
  # Float reassociation can move a value across a rounding boundary: one level, rarely.
  assert difference.max() <= 1 + 1e-4 and np.mean(difference > 1e-3) < 1e-3


def test_images_at_the_model_size_are_not_resampled():
  images = tf.constant(np.random.default_rng(0).normal(0, 50, (1, 8, 16, 3)), tf.float32)
  seen = []

  def forward(inputs):
    seen.append(inputs)
    return _ramp_forward()(inputs)

  inference.predict_probabilities(forward, images, inference.InferenceOptions())
  np.testing.assert_array_equal(seen[0], images)


def test_output_channels_across_class_sets():
  get = labels.get_class_set
  assert inference.output_channels(get("19"), get("19")) is None
  assert inference.output_channels(get("16"), get("19")) == list(labels.SYNTHIA16_TRAIN_IDS)
  assert inference.output_channels(get("11"), get("cityscapes_as_camvid11")) is None
  with pytest.raises(ValueError):
    inference.output_channels(get("11"), get("19"))


@pytest.mark.parametrize("kwargs", [{"scales": ()}, {"scales": (0.0,)}, {"input_size": (0, 4)},
                                    {"resize": "lanczos9"}, {"slide_window": (0, 8)},
                                    {"slide_stride": (8, 8)}])
def test_bad_options_are_rejected(kwargs):
  with pytest.raises((ValueError, KeyError)):
    inference.InferenceOptions(**kwargs)


def _window_centred(images: tf.Tensor) -> dict[str, tf.Tensor]:
  # Position-dependent through the window: each window's pixels minus the window's mean.
  return {"logits": images - tf.reduce_mean(images, axis=[1, 2], keepdims=True)}


def test_sliding_windows_average_the_windows_logits_as_mmseg_slide_inference():
  images = np.random.default_rng(0).normal(size=(2, 40, 70, 3)).astype(np.float32)
  window, stride = (16, 24), (8, 12)
  total, count = np.zeros_like(images), np.zeros((40, 70))
  # mmseg encoder_decoder.py slide_inference's loops.
  for h_idx in range(max(40 - 16 + 8 - 1, 0) // 8 + 1):
    for w_idx in range(max(70 - 24 + 12 - 1, 0) // 12 + 1):
      y2, x2 = min(h_idx * 8 + 16, 40), min(w_idx * 12 + 24, 70)
      y1, x1 = max(y2 - 16, 0), max(x2 - 24, 0)
      crop = images[:, y1:y2, x1:x2]
      total[:, y1:y2, x1:x2] += crop - crop.mean(axis=(1, 2), keepdims=True)
      count[y1:y2, x1:x2] += 1
  expected = total / count[None, :, :, None]
  actual = inference.sliding_window_logits(_window_centred, tf.constant(images), window, stride)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
  options = inference.InferenceOptions(slide_window=(24, 16), slide_stride=(12, 8))
  probabilities = inference.predict_probabilities(_window_centred, tf.constant(images), options)
  np.testing.assert_allclose(probabilities, tf.nn.softmax(expected), rtol=1e-5, atol=1e-6)
  # The whole image at once is another prediction.
  whole = inference.predict_probabilities(_window_centred, tf.constant(images),
                                          inference.InferenceOptions())
  assert not np.allclose(whole, probabilities, atol=1e-3)

"""Caffe preprocessing: the reference loaders' RGB -> BGR minus mean, and its inverse."""

import numpy as np
import tensorflow as tf

from tfdaseg.data.preprocessing import CAFFE_BGR_MEAN, caffe_preprocess, caffe_unpreprocess


def test_caffe_preprocess_is_bgr_minus_mean_and_inverts():
  rgb = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
  bgr = caffe_preprocess(tf.constant(rgb)).numpy()
  # The reference: image[:, :, ::-1] (RGB -> BGR), then minus IMG_MEAN.
  expected = rgb[..., ::-1].astype(np.float32) - np.asarray(CAFFE_BGR_MEAN, np.float32)
  np.testing.assert_allclose(bgr, expected, atol=1e-4)
  assert bgr.dtype == np.float32
  np.testing.assert_array_equal(caffe_unpreprocess(tf.constant(bgr)).numpy(), rgb)

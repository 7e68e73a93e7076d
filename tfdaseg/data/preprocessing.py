"""The reference models' input preprocessing (Caffe style), shared by pipeline and export."""

import tensorflow as tf

# AdaptSegNet / ADVENT IMG_MEAN, in BGR order (the Caffe DeepLab ImageNet mean).
CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)


def caffe_preprocess(image_rgb: tf.Tensor) -> tf.Tensor:
  """RGB uint8/float [..., H, W, 3] -> float32 BGR minus the Caffe mean, as the reference loaders do."""
  # tf.reverse, not [..., ::-1]: the same values, about 3x less CPU (a strided slice with a
  # negative step is TF's generic slow path).
  image = tf.reverse(tf.cast(image_rgb, tf.float32), axis=[-1])
  return image - tf.constant(CAFFE_BGR_MEAN, tf.float32)


def caffe_unpreprocess(image_bgr: tf.Tensor) -> tf.Tensor:
  """Inverse of `caffe_preprocess`: float BGR minus mean -> uint8 RGB (for image summaries)."""
  image = tf.reverse(image_bgr + tf.constant(CAFFE_BGR_MEAN, tf.float32), axis=[-1])
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)

"""Test-wide set-up: quiet TensorFlow and two logical CPU devices (for MirroredStrategy tests).

The logical devices must be configured before TensorFlow runs any op, so it happens here, at
collection time, once per test process.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture
def mixed_bfloat16():
  """The mixed_bfloat16 Keras policy for one test (float32 restored after it)."""
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  yield
  keras.mixed_precision.set_global_policy("float32")

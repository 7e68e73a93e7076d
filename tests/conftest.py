"""Test-wide set-up: quiet TensorFlow and two logical CPU devices (for MirroredStrategy tests).

The logical devices must be configured before TensorFlow runs any op, so it happens here, at
collection time, once per test process.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

"""tfdaseg: domain adaptation for semantic segmentation in TensorFlow 2 / Keras 3.

Importing the package registers its Keras layers and models, so `.keras` files written by
tfdaseg load with `keras.models.load_model` after `import tfdaseg`.
"""

from tfdaseg import models  # noqa: F401  (registers serialisable layers and models)

__version__ = "0.1.0"

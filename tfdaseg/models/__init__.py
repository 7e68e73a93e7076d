"""Generators and discriminators, built by name: `tfdaseg.models.build(name, **options)`.

Importing this package registers every model with `MODELS` and every custom layer with Keras
serialisation (package "tfdaseg"), so saved `.keras` files load after `import tfdaseg`.
"""

from tfdaseg.models import (  # noqa: F401  (registration)
    class_wise_discriminator, daformer, deeplab_v2_resnet, deeplab_v2_vgg, fc_discriminator)
from tfdaseg.models.aspp_classifier import AsppClassifier  # noqa: F401
from tfdaseg.models.batch_norm import BN_MODES, ReferenceBatchNormalization  # noqa: F401
from tfdaseg.models.class_wise_discriminator import PerClassDense  # noqa: F401
from tfdaseg.models.head_variables import (  # noqa: F401
    head_learning_rate_multiplier, no_decay_variables, split_head_variables)
from tfdaseg.models.imagenet_init import load_imagenet_weights  # noqa: F401
from tfdaseg.models.output_conventions import OutputConventions, output_conventions  # noqa: F401
from tfdaseg.models.pooling import CeilModeMaxPooling2D  # noqa: F401
from tfdaseg.models.registry import MODELS, build  # noqa: F401

"""Feature-map regression (Benbihi, Geist, Pradalier, arXiv 1805.04141): transfer without target labels.

A teacher, the generator trained supervised on the source domain, is frozen; a student
initialised from it is trained on target images to regress the teacher's feature maps of the
content-aligned source images (L2), and the teacher's classifier then runs on the student's
features. Both start from `--restore_from` (the source-only run exported as .keras): the
teacher is a copy of the generator taken when the run starts, checkpointed with it. The
student's heads get no gradient (the loss stops at their input), so they stay the teacher's
classifier, and evaluation and export use the student.

The source and target streams are read in lockstep (`StreamSpec.aligned_with`): batch i of the
target stream holds the transformed copies of batch i of the source stream, e.g. VOC and its
copy by tools/make_transformed_dataset.py. The unpaired case (target images without an aligned
source image), which the paper does not cover, is refused: training stops before the first
step with one line naming both flags when the splits' shards do not hold the same records, and
while reading when an image meets a partner of another `image/filename`.

Details ours (not public): the regressed layers are the inputs of the generator's heads
(`--regress_layers=main` by default: layer4, what the main classifier reads; `aux` adds
layer3), each term the mean squared difference over all elements, summed over layers with
`--regression_weight`; the teacher runs in inference mode, the student in the run's
`--bn_mode` (with `train`, its BatchNorm statistics follow the target images).
"""

import dataclasses

import tensorflow as tf

from tfdaseg.methods.base import (FEATURES, GENERATOR, SOURCE, TARGET, Method, MethodConfig,
                                  NetworkSpec, Objective, StepContext, StreamSpec)
from tfdaseg.methods.registry import METHODS
from tfdaseg.models import outputs
from tfdaseg.utils.config_fields import ConfigError, field

TEACHER = "teacher"


@dataclasses.dataclass(frozen=True)
class FeatureRegressionConfig(MethodConfig):
  """Hyper-parameters of feature-map regression (details ours).

  Args:
    lambda_seg: Not used (no labels are read); 0.
    regress_layers: Levels whose head-input features are regressed ("main", "aux").
    regression_weight: Weight of the L2 regression.
  """

  lambda_seg: float = field(0.0, "Not used by feature_regression (no labels are read).",
                            minimum=0, maximum=0)
  regress_layers: tuple[str, ...] = field(("main",), "Levels whose head inputs the student "
                                          f"regresses onto the teacher's: {', '.join(FEATURES)} "
                                          "(ours: main).")
  regression_weight: float = field(1.0, "Weight of the L2 feature regression (ours).", above=0)


@METHODS.register("feature_regression")
class FeatureRegression(Method):
  """L2 between the student's features of target images and the frozen teacher's of the
  aligned source images; no labels."""

  config_class = FeatureRegressionConfig
  streams = {SOURCE: StreamSpec(labelled=False, domain=SOURCE),
             TARGET: StreamSpec(labelled=False, domain=TARGET, aligned_with=SOURCE)}
  trains_heads = False
  starts_from_trained_generator = True

  def __init__(self, config: FeatureRegressionConfig, num_classes: int):
    super().__init__(config, num_classes)
    unknown = sorted(set(config.regress_layers) - set(FEATURES))
    if unknown or not config.regress_layers:
      raise ConfigError(f"--regress_layers={','.join(config.regress_layers)}: expected one or "
                        f"more of {', '.join(FEATURES)}")

  def networks(self) -> dict[str, NetworkSpec]:
    return {TEACHER: NetworkSpec(build=lambda ctx: ctx.generator_copy())}

  def required_outputs(self) -> set[str]:
    return {outputs.LOGITS} | {FEATURES[level] for level in self.config.regress_layers}

  def generator_objective(self, ctx: StepContext) -> Objective:
    teacher = ctx.outputs(SOURCE, TEACHER, training=False)
    student = ctx.outputs(TARGET, GENERATOR)
    objective = Objective()
    for level in self.config.regress_layers:
      key = FEATURES[level]
      error = tf.square(student[key] - tf.stop_gradient(teacher[key]))
      objective.add_loss(f"regression_{level}", tf.reduce_mean(error),
                         self.config.regression_weight)
    return objective

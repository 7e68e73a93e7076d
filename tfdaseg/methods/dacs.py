"""DACS (Tran-Vu et al., WACV 2021): self-training with a mean teacher and ClassMix.

Per step (DACS trainUDA.py:395-486, DAFormer mmseg/models/uda/dacs.py:191-312): CE on the
source; the EMA teacher's pseudo-labels of the un-augmented target images, weighted by their
quality (the share of confident pixels); per image, half of the classes of the source label
pasted onto the target image (ClassMix), its label and pseudo-label mixed with the same mask
(source pixels weight 1); the mixed image strongly augmented (colour jitter, Gaussian blur); the
student's pixel-weighted CE on it, weight `consistency_weight`. `--mic` adds MIC's masked image
consistency on the same teacher's pseudo-labels (MIC's `mask_alpha='same'`).
`--feature_distance_weight` adds DAFormer's thing-class ImageNet feature distance: the L2
distance between the student's last-stage source features and those of a frozen copy of the
generator as initialised (ImageNet with --init_weights), over the feature pixels whose
downsampled source label is a thing class (DAFormer dacs.py:164-189).

The teacher averages the generator's trainable variables (`ema_teacher`). In --bn_mode=reference
BatchNorm's gamma/beta are fixed, so they stay the copied ones, and the teacher's running
statistics are not averaged: they are its own, updated by its training-mode forward passes on
target images, as DACS's and DAFormer's teacher in model.train() (`parameters()` are averaged,
buffers are not). Evaluation uses the student, as both references (`--network=teacher` loads the
teacher).
"""

import dataclasses

import tensorflow as tf

from tfdaseg.methods import augmentations, mean_teacher, self_training
from tfdaseg.methods.base import (SOURCE, TARGET, Method, NetworkSpec, Objective, StepContext,
                                  ema_teacher)
from tfdaseg.methods.registry import METHODS
from tfdaseg.models import outputs as keys
from tfdaseg.utils.config_fields import field

# The frozen copy of the initial generator the feature distance compares with.
IMAGENET = "imagenet"


@dataclasses.dataclass(frozen=True)
class DacsConfig(mean_teacher.MaskedConsistencyConfig):
  """MaskedConsistencyConfig plus the mixed images' loss weight and the feature distance.

  Args:
    consistency_weight: Weight of the CE on the mixed images (DACS configUDA.json 1).
    feature_distance_weight: Weight of the ImageNet feature distance (0 off; DAFormer 0.005).
    feature_distance_classes: Class ids whose pixels it covers (DAFormer's thing classes).
    feature_distance_min_ratio: Majority share a feature pixel's label cell needs (0.75).
  """

  consistency_weight: float = field(1.0, "Weight of the CE on the mixed images (DACS 1).",
                                    minimum=0)
  feature_distance_weight: float = field(0.0, "Thing-class ImageNet feature distance weight "
                                         "(DAFormer 0.005; 0 off).", minimum=0)
  # DAFormer configs/_base_/uda/dacs_a999_fdthings.py:10-12.
  feature_distance_classes: tuple[int, ...] = field(
      (6, 7, 11, 12, 13, 14, 15, 16, 17, 18), "Classes of the feature distance (DAFormer's "
      "Cityscapes thing classes 6,7,11-18).")
  feature_distance_min_ratio: float = field(0.75, "Feature distance: majority share of a label "
                                            "cell (DAFormer 0.75).", minimum=0, maximum=1)


@METHODS.register("dacs")
class Dacs(Method):
  """Source CE + pixel-weighted CE on ClassMix-ed, strongly augmented images (+ MIC)."""

  config_class = DacsConfig
  same_size_streams = (SOURCE, TARGET)

  def networks(self) -> dict[str, NetworkSpec]:
    networks = {mean_teacher.TEACHER: ema_teacher(self.config.alpha)}
    if self.config.feature_distance_weight:
      # The generator as built and initialised, never trained (checkpointed, so a resumed run
      # keeps the initial weights).
      networks[IMAGENET] = NetworkSpec(build=lambda ctx: ctx.generator_copy((keys.FEATURES,)),
                                       reads=(keys.FEATURES,))
    return networks

  def feature_distance(self, ctx: StepContext) -> tf.Tensor:
    """DAFormer's thing-class feature distance on the source images (dacs.py:164-189).

    The label is downscaled by H // h (DAFormer's scale factor) and both maps are cut to their
    common size: DeepLab-v2's ceil-mode pooling gives h = H / 8 + 1 (details ours).
    """
    student = ctx.outputs(SOURCE)[keys.FEATURES]
    reference = ctx.outputs(SOURCE, IMAGENET, training=False)[keys.FEATURES]
    labels = ctx.batch[SOURCE]["label"]
    scale = labels.shape[1] // student.shape[1]
    cells = self_training.downscale_label_ratio(labels, scale,
                                                self.config.feature_distance_min_ratio,
                                                self.num_classes)
    height = min(cells.shape[1], student.shape[1])
    width = min(cells.shape[2], student.shape[2])
    cells = cells[:, :height, :width]
    mask = tf.reduce_any(cells[..., tf.newaxis] == tf.constant(
        self.config.feature_distance_classes, tf.int32), axis=-1)
    return self_training.masked_feature_distance(student[:, :height, :width],
                                                 reference[:, :height, :width], mask)

  def mixed_batch(self, ctx: StepContext) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """ClassMix of source onto target, then the strong augmentation of the images.

    Returns:
      (float32 [B, H, W, 3] images, int32 [B, H, W] labels, float32 [B, H, W] weights).
    """
    source, target = ctx.batch[SOURCE], ctx.batch[TARGET]
    pseudo_labels, pseudo_weights = mean_teacher.teacher_pseudo_labels(ctx, self.config)
    mask = self_training.classmix_masks(source["label"], ctx.seed_for("classmix"),
                                        self.num_classes)
    images = self_training.mix(mask, source["image"], target["image"])
    labels = self_training.mix(mask, tf.cast(source["label"], tf.int32), pseudo_labels)
    # Source pixels weigh 1 (DACS trainUDA.py:474-478, DAFormer dacs.py:287-301).
    weights = self_training.mix(mask, tf.ones_like(pseudo_weights), pseudo_weights)
    images = augmentations.strong_augment(images, ctx.seed_for("strong_augment"),
                                          self.config.strong_augment_config())
    return images, labels, weights

  def adaptation_objective(self, ctx: StepContext) -> Objective:
    images, labels, weights = self.mixed_batch(ctx)
    objective = mean_teacher.weighted_segmentation_objective(
        ctx, "mix", images, labels, weights, self.config, self.config.consistency_weight)
    _, pseudo_weights = mean_teacher.teacher_pseudo_labels(ctx, self.config)
    objective.add_metric("pseudo_label_quality", tf.reduce_mean(pseudo_weights))
    if self.config.feature_distance_weight:
      objective.add_loss("feature_distance", self.feature_distance(ctx),
                         self.config.feature_distance_weight)
    if self.config.mic:
      objective = objective.merge(mean_teacher.masked_consistency_objective(ctx, self.config))
    return objective

"""Mean-teacher pieces shared by DACS and by MIC on any method: pseudo-labels, weighted CE, MIC.

`PseudoLabelConfig` holds the teacher's and the pseudo-labels' settings (DAFormer
configs/_base_/uda/dacs.py), `MaskedConsistencyConfig` adds MIC's (MIC
seg/configs/mic/gtaHR2csHR_mic_hrda.py:73-85). `teacher_pseudo_labels` and
`masked_consistency_objective` compute, from the step context, what both DACS and the MIC add-on
of the adversarial methods need.
"""

import dataclasses

import tensorflow as tf

from tfdaseg.data.augment import PSEUDO_VALID
from tfdaseg.methods import augmentations, self_training
from tfdaseg.methods.base import (GENERATOR, TARGET, MethodConfig, Objective, StepContext,
                                  Weight, segmentation_objective)
from tfdaseg.models import outputs as keys
from tfdaseg.models.output_conventions import upsample_bilinear
from tfdaseg.utils.config_fields import field

TEACHER = "teacher"


@dataclasses.dataclass(frozen=True)
class PseudoLabelConfig(MethodConfig):
  """The mean teacher, its pseudo-labels and the strong augmentation.

  Args:
    alpha: Ceiling of the teacher's EMA decay, min(1 - 1/(t+1), alpha).
    pseudo_threshold: Max-probability threshold of the quality weight.
    quality_scope: "batch" (the references) or "image": over what the share is taken.
    pseudo_ignore_top: Pseudo-label rows given weight 0 at the top, at a 512-row crop.
    pseudo_ignore_bottom: The same at the bottom (the ego-car).
    teacher_training_mode: Run the teacher in training mode (BatchNorm per bn_mode).
    color_jitter_strength: kornia ColorJitter strength of the strong augmentation.
    color_jitter_probability: DAFormer's threshold p (jitter when U > p).
    blur: Gaussian blur in the strong augmentation (p 0.5).
  """

  alpha: float = field(0.99, "Teacher EMA decay ceiling: min(1 - 1/(t+1), alpha) (DACS 0.99, "
                       "DAFormer 0.999).", minimum=0, below=1)
  pseudo_threshold: float = field(0.968, "Quality weight: share of target pixels whose max "
                                  "teacher probability is >= this (DACS/DAFormer 0.968).",
                                  minimum=0, maximum=1)
  quality_scope: str = field("batch", "Quality weight over the (replica's) batch, as DACS and "
                             "DAFormer, or per image.", choices=self_training.QUALITY_SCOPES)
  pseudo_ignore_top: int = field(0, "Pseudo-label rows with weight 0 at the top, counted at a "
                                 "512-row crop and scaled (DAFormer 15 for Cityscapes; 0 off).",
                                 minimum=0)
  pseudo_ignore_bottom: int = field(0, "Pseudo-label rows with weight 0 at the bottom (ego-car), "
                                    "at a 512-row crop, scaled (DAFormer 120; 0 off).", minimum=0)
  teacher_training_mode: bool = field(True, "Run the teacher in training mode, as DACS and "
                                      "DAFormer (model.train(): BatchNorm per --bn_mode; "
                                      "DeepLab-v2 has no dropout); false: inference mode.")
  color_jitter_strength: float = field(0.2, "Strong augmentation: colour-jitter strength "
                                       "(DAFormer 0.2).", minimum=0)
  color_jitter_probability: float = field(0.2, "Strong augmentation: jitter when U(0,1) > this "
                                          "(DAFormer 0.2, i.e. 80% of the steps).", minimum=0,
                                          maximum=1)
  blur: bool = field(True, "Strong augmentation: Gaussian blur with probability 0.5, sigma "
                     "U(0.15, 1.15) (DAFormer).")

  def strong_augment_config(self) -> augmentations.StrongAugmentConfig:
    """The strong augmentation these settings describe."""
    return augmentations.StrongAugmentConfig(
        color_jitter_strength=self.color_jitter_strength,
        color_jitter_probability=self.color_jitter_probability, blur=self.blur)


@dataclasses.dataclass(frozen=True)
class MaskedConsistencyConfig(PseudoLabelConfig):
  """PseudoLabelConfig plus MIC (Hoyer et al., CVPR 2023), off by default.

  Args:
    mic: Add the masked image consistency loss.
    mic_block_size: Side of the masked patches in pixels.
    mic_mask_ratio: Share of the patches masked.
    mic_weight: Weight of the loss.
  """

  mic: bool = field(False, "MIC: CE of the student on masked, strongly augmented target images "
                    "against the teacher's pseudo-labels of the unmasked ones.")
  mic_block_size: int = field(64, "MIC patch side in pixels (MIC 64 at full resolution, 32 at "
                              "half: seg/experiments.py:438-451).", minimum=1)
  mic_mask_ratio: float = field(0.7, "MIC share of masked patches (MIC 0.7).", minimum=0,
                                maximum=1)
  mic_weight: float = field(1.0, "MIC loss weight (MIC mask_lambda 1).", minimum=0)


def teacher_pseudo_labels(ctx: StepContext, config: PseudoLabelConfig,
                          teacher: str = TEACHER) -> tuple[tf.Tensor, tf.Tensor]:
  """The teacher's pseudo-labels of the un-augmented target images and their weights.

  Logits upsampled to the image size (DACS trainUDA.py:418 `interp`; DAFormer's `encode_decode`
  without aligned corners: `ctx.conventions`), softmax argmax, the
  quality weight broadcast over the pixels, the ignored rows at weight 0 (DAFormer
  dacs.py:264-286), and, where the target stream has pseudo-label margins, the margin mask
  (HRDA dacs.py: `pseudo_weight *= valid_pseudo_mask`). Memoised: DACS and MIC share them.

  Args:
    ctx: The step.
    config: The settings.
    teacher: The teacher network's name.

  Returns:
    (int32 [B, H, W] labels, float32 [B, H, W] weights).
  """
  def compute():
    images = ctx.batch[TARGET]["image"]
    logits = ctx.outputs(TARGET, teacher, training=config.teacher_training_mode)[keys.LOGITS]
    logits = upsample_bilinear(logits, tf.shape(images)[1:3], ctx.conventions.align_corners)
    labels, confidence = self_training.pseudo_labels(logits)
    weights = self_training.quality_weight(confidence, config.pseudo_threshold,
                                           config.quality_scope)
    weights = self_training.ignore_rows(weights, config.pseudo_ignore_top,
                                        config.pseudo_ignore_bottom)
    if PSEUDO_VALID in ctx.batch[TARGET]:
      weights = weights * ctx.batch[TARGET][PSEUDO_VALID]
    return labels, weights
  return ctx.memo(("pseudo_labels", teacher), compute)


def weighted_segmentation_objective(ctx: StepContext, name: str, images: tf.Tensor,
                                    labels: tf.Tensor, weights: tf.Tensor,
                                    config: MethodConfig, weight: Weight = 1.0) -> Objective:
  """The student's pixel-weighted CE on images built in the step, over all its heads
  (`segmentation_objective`: main, aux with lambda_seg, HRDA's detail crop).

  Averaged over all pixels, as DACS's CrossEntropyLoss2dPixelWiseWeighted (utils/loss.py:37-44,
  torch.mean) and mmseg's weighted CE in DAFormer/MIC.

  Args:
    ctx: The step.
    name: Loss name prefix ("mix", "mic").
    images: float32 [B, H, W, 3] Caffe-preprocessed images.
    labels: Integer [B, H, W] (255 ignored).
    weights: float32 [B, H, W].
    config: The method's settings (lambda_seg, detail_loss_weight).
    weight: Weight of the whole loss.

  Returns:
    The objective.
  """
  outputs = ctx.forward(GENERATOR, images, key=f"student:{name}")
  return segmentation_objective(outputs, labels, ctx.num_classes, config, name,
                                pixel_weights=weights, average_over_all_pixels=True,
                                weight=weight, conventions=ctx.conventions)


def masked_consistency_objective(ctx: StepContext, config: MaskedConsistencyConfig,
                                 teacher: str = TEACHER) -> Objective:
  """MIC's loss ('separatetrgaug', masking_consistency_module.py:110-143).

  The target images, strongly augmented with their own draws, are masked by a random patch grid
  (`self_training.block_mask`, masked pixels 0, the mean colour, as MIC's `imgs * mask` on
  normalised images) and the student's CE against the teacher's pseudo-labels of the unmasked
  images, weighted by their quality weight, is added with weight mic_weight.

  Args:
    ctx: The step.
    config: The settings (`config.mic` must be on).
    teacher: The teacher's name.

  Returns:
    The objective (terms "mic_main", and "mic_aux" when lambda_seg).
  """
  labels, weights = teacher_pseudo_labels(ctx, config, teacher)
  images = ctx.batch[TARGET]["image"]
  augmented = augmentations.strong_augment(images, ctx.seed_for("mic_augment"),
                                           config.strong_augment_config())
  mask = self_training.block_mask(tf.shape(images)[0], images.shape[1], images.shape[2],
                                  ctx.seed_for("mic_mask"), config.mic_block_size,
                                  config.mic_mask_ratio)
  return weighted_segmentation_objective(ctx, "mic", augmented * mask[..., tf.newaxis], labels,
                                         weights, config, config.mic_weight)

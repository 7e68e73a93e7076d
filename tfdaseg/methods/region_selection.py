"""Hierarchical region selection (Sun et al., CVPR 2019, "Not all areas are equal").

Transfer from abundant labelled synthetic data with a few labelled real images
(`--target_labeled_count`): weighting networks score how "real" each source pixel looks, and the
source cross-entropy is weighted by those scores, learning "selectively from realistic pixels".
Following the abstract and the supplement's notes (REFERENCE.md); details ours (no code or full
text was found):
- Input: the generator's softmax prediction at stride 8 (the supplement: predictions work
  better than images), detached.
- One weighting network with three heads on a shared two-conv trunk: pixel (a 1x1 conv),
  region (a 1x1 conv whose logits are averaged over each region, one score per region), image
  (global average pooling, then a dense layer). Regions (`--regions`): a fixed `--region_grid`
  of cells (the default; no input-pipeline work, XLA-compilable), or SLIC superpixels of the
  training image (`skimage.segmentation.slic` in the input pipeline,
  `tfdaseg.data.superpixels`; `--superpixel_segments`, `--superpixel_compactness`), read at the
  prediction's resolution. Each level's sigmoid is trained
  with BCE to say 0 on source predictions and 1 on labelled-target predictions (each half 1/2).
- The source pixel weight is the product of the three levels' scores, so it is in [0, 1] and
  high only where every level finds the pixel real; it is held fixed (stop-gradient) and
  normalised to mean 1 over the labelled source pixels of the batch, so the source loss keeps
  its scale (`normalised_weights`).
- `--weight_maps=shared`: one weight map; `per_class`: one map per class, a pixel weighted (and
  its BCE taken) by its ground-truth class's map (the supplement's per-class variant).
- Supervised cross-entropy on the labelled target images, unweighted.
"""

import dataclasses

import keras
import tensorflow as tf

from tfdaseg.data.superpixels import SUPERPIXELS, SlicSuperpixels
from tfdaseg.methods import cells, gan_losses
from tfdaseg.methods.base import (LABELLED_TARGET, LOGITS, SOURCE, TARGET, Method, MethodConfig,
                                  NetworkContext, NetworkSpec, Objective, OptimizerSpec,
                                  StepContext, StreamSpec)
from tfdaseg.methods.registry import METHODS
from tfdaseg.models.output_conventions import upsample_bilinear
from tfdaseg.utils.config_fields import field

WEIGHTING = "weighting"
LEVELS = ("pixel", "region", "image")
WEIGHT_MAPS = ("shared", "per_class")
REGIONS = ("grid", "superpixels")
BCE = gan_losses.GAN_LOSSES.get("vanilla")


@dataclasses.dataclass(frozen=True)
class RegionSelectionConfig(MethodConfig):
  """The weighting networks (details ours).

  Args:
    weight_maps: "shared" (one weight map) or "per_class" (one per class).
    regions: "grid" (a fixed grid of cells) or "superpixels" (SLIC segments of the image).
    region_grid: Rows, columns of the fixed grid of regions.
    superpixel_segments: SLIC's approximate number of segments per training image.
    superpixel_compactness: SLIC's compactness (colour / space balance).
    weighting_hidden: Width of the weighting network's trunk.
    learning_rate_w: The weighting network's Adam rate (poly-decayed).
  """

  weight_maps: str = field("shared", "Region selection: one shared weight map or one per class.",
                           choices=WEIGHT_MAPS)
  regions: str = field("grid", "Region selection: the regions of the region level, a fixed grid "
                       "(--region_grid) or SLIC superpixels of the training image (computed in "
                       "the input pipeline).", choices=REGIONS)
  region_grid: tuple[int, ...] = field((4, 4), "Region selection: rows,columns of the fixed grid "
                                       "of regions over the prediction.")
  superpixel_segments: int = field(64, "Region selection: SLIC's approximate number of "
                                   "superpixels per training image (--regions=superpixels).",
                                   minimum=1)
  superpixel_compactness: float = field(10.0, "Region selection: SLIC's compactness, higher "
                                        "for squarer superpixels (--regions=superpixels).",
                                        above=0)
  weighting_hidden: int = field(64, "Region selection: width of the weighting network's trunk.",
                                minimum=1)
  learning_rate_w: float = field(1e-4, "Region selection: the weighting network's Adam rate "
                                 "(poly-decayed; AdaptSegNet's discriminator rate).", above=0)


def weighting_network(num_classes: int, num_maps: int, hidden: int) -> keras.Model:
  """The weighting network: softmax prediction [B, h, w, C] -> per-level logits.

  Args:
    num_classes: C, the input's channels.
    num_maps: 1 (shared) or C (per class).
    hidden: Trunk width.

  Returns:
    A model whose outputs are {"pixel": [B, h, w, K], "region": [B, h, w, K] (per-pixel
    logits, averaged over regions by the method), "image": [B, K]}.
  """
  inputs = keras.Input((None, None, num_classes))
  x = inputs
  for _ in range(2):
    x = keras.layers.Conv2D(hidden, 3, padding="same")(x)
    x = keras.layers.LeakyReLU(0.2)(x)
  outputs = {
      "pixel": keras.layers.Conv2D(num_maps, 1, name="pixel")(x),
      "region": keras.layers.Conv2D(num_maps, 1, name="region")(x),
      "image": keras.layers.Dense(num_maps, name="image")(
          keras.layers.GlobalAveragePooling2D()(x)),
  }
  return keras.Model(inputs, outputs, name="weighting_network")


def grid_region_means(values: tf.Tensor, grid: tuple[int, int]) -> tf.Tensor:
  """Each pixel's mean of `values` [B, h, w, K] over its cell of a (rows, columns) grid."""
  return cells.spread(cells.cell_means(values, grid), tf.shape(values)[1:3])


def segment_region_means(values: tf.Tensor, segments: tf.Tensor, max_segments: int) -> tf.Tensor:
  """Each pixel's mean of `values` over its segment.

  Args:
    values: [B, h, w, K].
    segments: Integer [B, H, W] segment ids in [0, max_segments), read at [h, w] (nearest).
    max_segments: The id bound.

  Returns:
    float32 [B, h, w, K].
  """
  values = tf.cast(values, tf.float32)
  shape = tf.shape(values)
  segments = tf.image.resize(tf.cast(segments, tf.int32)[..., None], shape[1:3],
                             method="nearest")[..., 0]
  # One id range per image, so that a segment never pools two images.
  ids = segments + tf.range(shape[0])[:, None, None] * max_segments
  total = shape[0] * max_segments
  sums = tf.math.unsorted_segment_sum(values, ids, total)
  counts = tf.math.unsorted_segment_sum(tf.ones_like(values[..., :1]), ids, total)
  return tf.gather(sums / tf.maximum(counts, 1.0), ids)


def level_logits(outputs: dict[str, tf.Tensor], region_means) -> dict[str, tf.Tensor]:
  """Each level's logits, the regions' spread over their pixels.

  Args:
    outputs: The weighting network's outputs.
    region_means: [B, h, w, K] -> each pixel's mean over its region (`grid_region_means`,
      `segment_region_means`).

  Returns:
    float32 {"pixel": [B, h, w, K], "region": [B, h, w, K] (a region's mean logit on each of
    its pixels), "image": [B, 1, 1, K]}.
  """
  return {"pixel": tf.cast(outputs["pixel"], tf.float32),
          "region": region_means(tf.cast(outputs["region"], tf.float32)),
          "image": tf.cast(outputs["image"], tf.float32)[:, None, None, :]}


def broadcast_scores(scores: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
  """A level's scores (or logits) [B, h, w, K] or [B, 1, 1, K] at every pixel of [B, size, K]."""
  shape = tf.shape(scores)
  return tf.broadcast_to(scores, tf.concat([shape[:1], size, shape[3:]], axis=0))


def combined_weights(scores: dict[str, tf.Tensor]) -> tf.Tensor:
  """The product of the levels' scores at the pixel level's resolution: [B, h, w, K] in [0, 1]."""
  return scores["pixel"] * scores["region"] * broadcast_scores(
      scores["image"], tf.shape(scores["pixel"])[1:3])


def select_map(maps: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  """The map of each pixel's class ([B, H, W, K] -> [B, H, W]); the only map when K = 1.

  Ignored pixels (and ids outside [0, K)) take map 0; their terms are masked by the callers.
  """
  if maps.shape[-1] == 1:
    return maps[..., 0]
  labels = tf.cast(labels, tf.int32)
  valid = (labels >= 0) & (labels < tf.shape(maps)[-1])
  return tf.gather(maps, tf.where(valid, labels, 0), axis=-1, batch_dims=3)


def normalised_weights(weights: tf.Tensor, labels: tf.Tensor, num_classes: int) -> tf.Tensor:
  """Pixel weights divided by their mean over the labelled pixels (mean 1 there).

  With them, `losses.segmentation_loss` is sum(w * CE) / sum(w) over the labelled pixels: the
  weighted average of the pixels' cross-entropy, on the unweighted loss's scale.

  Args:
    weights: float32 [B, H, W] in [0, 1].
    labels: Integer [B, H, W] class ids (255 ignored).
    num_classes: C.

  Returns:
    float32 [B, H, W].
  """
  labels = tf.cast(labels, tf.int32)
  valid = tf.cast((labels >= 0) & (labels < num_classes), tf.float32)
  mean = tf.reduce_sum(weights * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)
  return weights / tf.maximum(mean, 1e-6)


@METHODS.register("region_selection")
class RegionSelection(Method):
  """Source CE weighted by learned pixel/region/image realism scores + CE on labelled target."""

  config_class = RegionSelectionConfig
  streams = {SOURCE: StreamSpec(labelled=True, domain=SOURCE),
             LABELLED_TARGET: StreamSpec(labelled=True, domain=TARGET)}

  def __init__(self, config, num_classes):
    super().__init__(config, num_classes)
    if len(config.region_grid) != 2 or min(config.region_grid) < 1:
      raise ValueError(f"--region_grid={','.join(map(str, config.region_grid))}: expected "
                       "rows,columns >= 1")
    self.superpixels = SlicSuperpixels(config.superpixel_segments,
                                       config.superpixel_compactness)

  def stream_features(self) -> dict[str, tuple]:
    if self.config.regions != "superpixels":
      return {}
    return {stream: (self.superpixels,) for stream in self.streams}

  def region_means(self, ctx: StepContext, stream: str, values: tf.Tensor) -> tf.Tensor:
    """Each pixel's mean of `values` [B, h, w, K] over its region of `stream`'s images."""
    if self.config.regions == "superpixels":
      return segment_region_means(values, ctx.batch[stream][SUPERPIXELS],
                                  self.superpixels.max_segments)
    return grid_region_means(values, tuple(self.config.region_grid))

  @property
  def num_maps(self) -> int:
    """K: one map (shared) or one per class."""
    return self.num_classes if self.config.weight_maps == "per_class" else 1

  def networks(self) -> dict[str, NetworkSpec]:
    config, num_maps = self.config, self.num_maps

    def build(ctx: NetworkContext) -> keras.Model:
      return weighting_network(ctx.num_classes, num_maps, config.weighting_hidden)

    # Adam with AdaptSegNet's discriminator betas (base.discriminator), poly-decayed.
    return {WEIGHTING: NetworkSpec(build=build, optimizer=OptimizerSpec(
        "adam", config.learning_rate_w, "poly", {"beta_1": 0.9, "beta_2": 0.99}),
        reads=(LOGITS["main"],))}

  def logits(self, ctx: StepContext, stream: str) -> dict[str, tf.Tensor]:
    """`level_logits` of the weighting network on `stream`'s detached prediction."""
    prediction = tf.stop_gradient(tf.nn.softmax(ctx.outputs(stream)[LOGITS["main"]]))
    outputs = ctx.forward(WEIGHTING, prediction, key=f"weighting:{stream}")
    return level_logits(outputs, lambda values: self.region_means(ctx, stream, values))

  def source_weights(self, ctx: StepContext) -> tf.Tensor:
    """The fixed, normalised weight of every source label pixel: [B, H, W]."""
    labels = ctx.batch[SOURCE]["label"]
    scores = {level: tf.sigmoid(logits) for level, logits in self.logits(ctx, SOURCE).items()}
    maps = upsample_bilinear(combined_weights(scores), tf.shape(labels)[1:3])
    weights = tf.clip_by_value(select_map(maps, labels), 0.0, 1.0)
    return tf.stop_gradient(normalised_weights(weights, labels, ctx.num_classes))

  def generator_objective(self, ctx: StepContext) -> Objective:
    weights = self.source_weights(ctx)
    objective = self.supervised_objective(ctx, pixel_weights={SOURCE: weights})
    objective.add_metric("source_weight_max", tf.reduce_max(weights))
    return objective

  def level_loss(self, ctx: StepContext, stream: str, level: str, label: float) -> tf.Tensor:
    """BCE of one level's scores on `stream` against `label`, over its labelled pixels.

    Every level is scored at the prediction's resolution (regions and images spread over their
    pixels), so that the per-class variant takes each pixel's ground-truth class's score.
    """
    logits = self.logits(ctx, stream)
    size = tf.shape(logits["pixel"])[1:3]
    labels = tf.image.resize(ctx.batch[stream]["label"][..., None], size, method="nearest")[
        ..., 0]  # the label of each prediction pixel
    valid = (labels >= 0) & (labels < ctx.num_classes)
    return BCE.masked_loss(select_map(broadcast_scores(logits[level], size), labels), label,
                           valid)

  def network_objectives(self, ctx: StepContext) -> dict[str, Objective]:
    objective = Objective()
    for stream, label in ((SOURCE, gan_losses.SOURCE_LABEL),
                          (LABELLED_TARGET, gan_losses.TARGET_LABEL)):
      for level in LEVELS:
        objective.add_loss(f"w_{level}_{stream}", self.level_loss(ctx, stream, level, label), 0.5)
    return {WEIGHTING: objective}

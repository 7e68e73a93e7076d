"""Cross-domain retrieval with the generator's features (the seed slides' alignment check).

Every image is embedded as the global average of the generator's "features" map (the main
head's input), L2-normalised, so the dot product is the cosine similarity. Pooling both domains,
the share of an image's k nearest neighbours that come from the *other* domain measures how
domain-invariant the features are: near 0 when the domains separate, near the chance level
n_other / (n - 1) when they mix. Queries of one domain against the other show what the
nearest cross-domain images look like.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tfdaseg.data.preprocessing import caffe_unpreprocess
from tfdaseg.evaluation.inference import IMAGE_RESIZERS, InferenceOptions
from tfdaseg.evaluation.loading import LoadedModel
from tfdaseg.models import outputs as keys

DOMAINS = ("source", "target")


@dataclasses.dataclass
class Embeddings:
  """Embedded images of one domain.

  Args:
    vectors: float32 [N, D], unit length.
    thumbnails: uint8 [N, h, w, 3] RGB, for figures.
    filenames: The N record filenames.
  """

  vectors: np.ndarray
  thumbnails: np.ndarray
  filenames: list[str]


def embed(model: LoadedModel, dataset: tf.data.Dataset, options: InferenceOptions,
          limit: int | None = None, thumbnail_height: int = 96) -> Embeddings:
  """Embeds the images of `dataset` ({"image": caffe-preprocessed [B, H, W, 3], "filename"}).

  Args:
    model: The generator; its output dict must hold "features".
    dataset: Batches from `tfdaseg.data.pipeline.make_dataset` (one pass).
    options: `input_size` and `resize` give the size the model sees.
    limit: Embed at most this many images.
    thumbnail_height: Height of the thumbnails kept.

  Returns:
    The `Embeddings`.

  Raises:
    KeyError: when the generator has no "features" output.
  """
  resize = IMAGE_RESIZERS.get(options.resize)

  @tf.function
  def step(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    if options.input_size is not None:
      images = resize(images, tf.constant([options.input_size[1], options.input_size[0]]))
    outputs = model.forward(images)
    if keys.FEATURES not in outputs:
      raise KeyError(f"{model.description}: the generator has no 'features' output "
                     f"(it has {sorted(outputs)})")
    pooled = tf.reduce_mean(tf.cast(outputs[keys.FEATURES], tf.float32), axis=[1, 2])
    shape = tf.cast(tf.shape(images)[1:3], tf.float32)
    size = tf.cast(tf.round(shape * thumbnail_height / shape[0]), tf.int32)
    thumbnails = caffe_unpreprocess(tf.image.resize(images, size, antialias=True))
    return tf.math.l2_normalize(pooled, axis=-1), thumbnails

  vectors, thumbnails, filenames = [], [], []
  if limit is not None:
    dataset = dataset.unbatch().take(limit).batch(1)
  for batch in dataset:
    pooled, small = step(batch["image"])
    vectors.append(pooled.numpy())
    thumbnails.extend(small.numpy())
    filenames.extend(name.decode() for name in batch["filename"].numpy())
  if not vectors:
    raise ValueError(f"{model.description}: the dataset to embed is empty")
  return Embeddings(np.concatenate(vectors), np.stack(thumbnails), filenames)


@dataclasses.dataclass
class RetrievalResult:
  """Neighbour statistics of two embedded domains.

  Args:
    k: Neighbours per query.
    other_domain_fraction: {"source", "target", "all"}: mean share of a query's k nearest
      neighbours (both domains pooled, itself excluded) from the other domain.
    chance: The same share if domains were indistinguishable: n_other / (n - 1).
    cross_neighbours: {"source": [Ns, k] indices into target, "target": [Nt, k] into source}:
      each query's nearest images of the other domain, best first.
    cross_similarity: The cosine similarities of `cross_neighbours`.
  """

  k: int
  other_domain_fraction: dict[str, float]
  chance: dict[str, float]
  cross_neighbours: dict[str, np.ndarray]
  cross_similarity: dict[str, np.ndarray]


def _top_k(similarity: np.ndarray, k: int) -> np.ndarray:
  # Stable sort on the negated similarity: ties go to the lower index, deterministically.
  return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def cross_domain_retrieval(source: np.ndarray, target: np.ndarray, k: int) -> RetrievalResult:
  """Cosine k-nearest neighbours within the pooled domains and across them.

  Args:
    source: [Ns, D] unit vectors.
    target: [Nt, D] unit vectors.
    k: Neighbours per query (at most Ns + Nt - 1 and at most each domain's size).

  Returns:
    The `RetrievalResult`.

  Raises:
    ValueError: for a k the domains are too small for.
  """
  sizes = {"source": len(source), "target": len(target)}
  if k < 1 or k > min(sizes.values()):
    raise ValueError(f"k={k} needs 1 <= k <= the smaller domain's size ({min(sizes.values())})")
  pooled = np.concatenate([source, target]).astype(np.float64)
  domain = np.array([0] * sizes["source"] + [1] * sizes["target"])
  similarity = pooled @ pooled.T
  np.fill_diagonal(similarity, -np.inf)
  other = domain[_top_k(similarity, k)] != domain[:, None]
  fraction = {name: float(other[domain == d].mean()) for d, name in enumerate(DOMAINS)}
  fraction["all"] = float(other.mean())
  total = len(pooled) - 1
  chance = {"source": sizes["target"] / total, "target": sizes["source"] / total}
  chance["all"] = (sizes["source"] * chance["source"] + sizes["target"] * chance["target"]) / len(
      pooled)

  across = {"source": source @ target.T, "target": target @ source.T}
  neighbours = {name: _top_k(s, k) for name, s in across.items()}
  scores = {name: np.take_along_axis(across[name], neighbours[name], axis=1) for name in across}
  return RetrievalResult(k, fraction, chance, neighbours, scores)

"""Training: the model and its step (`model`), the loop (`loop`), and what a run needs around them.

  config      flags of `python -m tfdaseg.train` and their validation
  runner      a run from a config: strategy, models, data, loop
  model       DomainAdaptationModel: generator + a method's discriminators + optimisers + step
  loop        the custom loop for every strategy: checkpoints, resume, summaries, validation
  inputs      the training streams and their checks against the data manifests
  optimizers  PyTorch-semantics SGD (heads at 10x) and the discriminators' Adam
  schedules   the poly learning-rate decay
  losses      cross-entropy with ignore, align-corners upsampling, entropy
  precision   mixed-precision policies and loss scaling
  strategies  distribution strategies by name, chief detection, XLA choice
  summaries   TensorBoard scalars and prediction grids
  validation  periodic mIoU on a labelled target split
  checkpoints generator.json and restoring a run's generator
"""

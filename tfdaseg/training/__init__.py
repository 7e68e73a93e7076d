"""Training: the model and its step (`model`), the loop (`loop`), and what a run needs around them.

  config      the nested TrainConfig; its flags derived from the sections' and methods' fields
  runner      a run from a config: strategy, models, data, loop
  model       DomainAdaptationModel: generator + a method's networks + optimisers + EMA + step
  loop        the custom loop for every strategy: checkpoints, resume, summaries, validation
  inputs      the streams as data: their flags, their checks against the manifests, the datasets
  optimizers  PyTorch-semantics SGD (heads at the model's multiplier), Adam, by name
  schedules   the poly learning-rate decay
  precision   mixed-precision policies and loss scaling
  strategies  distribution strategies by name, chief detection, XLA choice
  summaries   TensorBoard scalars and prediction grids
  validation  periodic mIoU on a labelled target split

The losses live with the methods (`tfdaseg.methods.losses`), the run-folder format below training
and evaluation (`tfdaseg.run_folder`).
"""

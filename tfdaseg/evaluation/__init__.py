"""Evaluation, prediction and analysis of trained generators.

  metrics.py    confusion matrix (graph mode), IoU / mIoU (the reference protocol)
  inference.py  resize -> generator -> upsample -> softmax (+ flip / multi-scale averaging),
                shared by evaluation, prediction, training validation and the export
  loading.py    model sources: --model_dir, --model (.keras), --saved_model
  evaluator.py  scoring plans (e.g. 13 classes read off a 16-class matrix), the evaluation loop
  reports.py    metrics.json, confusion_matrix.npy, figures, checkpoint tables
  plots.py      figures (per-class IoU, confusion, curves, image grids)
  events.py     scalar curves from TensorBoard event files
  prediction.py images, folders and videos -> label / colour / overlay files
  retrieval.py  cross-domain nearest neighbours on pooled generator features
  cli_flags.py  the flags the commands share
"""

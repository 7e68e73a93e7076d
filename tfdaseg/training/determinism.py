"""What `--deterministic` turns off, so that the same command gives bit-identical checkpoints.

Sources of run-to-run differences found on CPU (2-core AMD EPYC, TensorFlow 2.21), each fixed here:
  * Inter-op parallelism. With several inter-op threads, two identical runs in one process
    diverged in the last bits of a gradient by step 4 (the rate-24 ASPP kernel of the aux head
    first): the same kernel then runs its contraction on another thread pool (or inline), and the
    parallel GEMM splits its sums differently. One inter-op thread removes it (7 identical steps
    where the default diverged twice at step 4); kernels still use every intra-op thread.
  * Op-level nondeterminism (`tf.config.experimental.enable_op_determinism`): deterministic
    kernels where TensorFlow has them, and an error for the ops that have none.
  * oneDNN's custom CPU ops (on by default on CPUs with AVX-512 VNNI/BF16 or AMX; off on this
    machine): they choose kernels and blockings at run time. `restart_without_onednn` re-runs the
    command with them off, unless the user set `TF_ENABLE_ONEDNN_OPTS` themselves. Not verified
    on such a CPU: none was available.
The data order and every in-step draw are seeded already (tfdaseg.data.pipeline,
`DomainAdaptationModel.step_seed`), so they need no switch. GPU kernels are covered by op
determinism only.
"""

import os
import sys

import tensorflow as tf
from absl import logging

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def onednn_custom_ops_enabled() -> bool:
  """Whether TensorFlow's oneDNN custom CPU ops are on in this process (decided at import)."""
  # The only query TensorFlow has; private, so a build without it counts as "off".
  try:
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return bool(_pywrap_util_port.IsMklEnabled())


def restart_without_onednn() -> None:
  """Re-executes this command with `TF_ENABLE_ONEDNN_OPTS=0` when oneDNN's custom ops are on.

  TensorFlow reads the variable once, when it is imported, so the only way to turn the ops off
  for a command that has already parsed its flags is to run it again. Nothing happens when the
  ops are off already or when the user set the variable (their choice wins, with a warning).
  """
  if not onednn_custom_ops_enabled():
    return
  if ONEDNN_VARIABLE in os.environ:
    logging.warning("--deterministic with %s=%s: oneDNN's custom ops stay on, so checkpoints "
                    "may differ between runs", ONEDNN_VARIABLE, os.environ[ONEDNN_VARIABLE])
    return
  logging.info("--deterministic: restarting with %s=0 (oneDNN's custom ops off)", ONEDNN_VARIABLE)
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
            {**os.environ, ONEDNN_VARIABLE: "0"})


def enable_determinism() -> None:
  """Op determinism and one inter-op thread; call before the first TensorFlow op runs.

  In a process that already ran ops (a notebook, a test), the thread count cannot change any more:
  then a warning says that determinism is not guaranteed.
  """
  tf.config.experimental.enable_op_determinism()
  if tf.config.threading.get_inter_op_parallelism_threads() == 1:
    return
  try:
    tf.config.threading.set_inter_op_parallelism_threads(1)
  except RuntimeError:
    logging.warning("--deterministic: TensorFlow is already running with %d inter-op threads; "
                    "runs may differ in the last bits (start a fresh process)",
                    tf.config.threading.get_inter_op_parallelism_threads())

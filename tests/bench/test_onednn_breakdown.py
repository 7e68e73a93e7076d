"""bench/onednn_breakdown.py: oneDNN verbose lines of both frameworks summed into the step's parts."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "bench"))
from onednn_breakdown import (REFERENCE, PrimitiveLog, convolution_flops,  # noqa: E402
                              matmul_flops, summarise, table)

# Lines as TensorFlow 2.21 (oneDNN 3.7) and torch 2.13 (oneDNN 3.12) print them.
TF_LINES = [
    "onednn_verbose,v1,info,oneDNN v3.7.3 (commit N/A)",
    "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,forward_training,"
    "src:f32::blocked:acdb::f0 wei:f32::blocked:cdba::f0 bia:undef::undef::: "
    "dst:f32::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct,"
    "mb1_ic256oc256_ih21oh21kh3sh1dh1ph2_iw41ow41kw3sw1dw1pw2,4.0",
    "onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx512_core,backward_weights,"
    "src:f32::blocked:acdb::f0 wei:f32:ap:blocked:Acdb16a::f0 bia:undef::undef::: "
    "dst:f32::blocked:abcd::f0,,alg:convolution_direct,"
    "mb1_ic1024oc256_ih21oh21kh1sh1dh0ph0_iw41ow41kw1sw1dw0pw0,3.0",
    "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:cdba::f0 "
    "dst:f32::blocked:Bcda64b::f0,,,256x256x3x3,0.5",
    "onednn_verbose,v1,primitive,exec,cpu,batch_normalization,bnorm_jit:avx512_core,"
    "forward_training,data:f32::blocked:acdb::f0 diff:undef::undef:::,,flags:GS,"
    "mb1ic256ih21iw41,0.25",
    "onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,brg_conv_fwd:avx512_core,"
    "forward_training,src:f32::blocked:acdb::f0,,alg:convolution_direct,"
    "mb1_ic256oc256_ih21oh21kh3sh1dh1ph2_iw41ow41kw3sw1dw1pw2,0.9",
    "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core_bf16,undef,"
    "src:bf16::blocked:ba::f0 wei:bf16::blocked:ab::f0 dst:bf16::blocked:ab::f0,"
    "attr-scratchpad:user,,2304x861:861x256,1.5",
    "onednn_verbose,v1,primitive,exec,cpu,gemm_api,,undef,src_f32::blocked:ba:f0 "
    "wei_f32::blocked:ab:f0 dst_f32::blocked:ab:f0,,,256x861:861x1024,2.5",
    "I0000 00:00:1 port.cc:153] oneDNN custom operations are on.",
]
TORCH_LINES = [
    "onednn_verbose,v1,primitive,exec,cpu,convolution,x64:gemm:jit,backward_data,"
    "src:f32::blocked:abcd::f0 wei:f32::blocked:abcd::f0 bia:undef::undef::: "
    "dst:f32::blocked:abcd::f0,,alg:convolution_direct,"
    "g2mb1_ic2048oc38_ih21oh21kh3sh1dh11ph12_iw41ow41kw3sw1dw11pw12,2.0",
    "onednn_verbose,v1,primitive,exec,cpu,softmax,jit:avx512_core,forward_inference,"
    "src:f32::blocked:abcd::f0 dst:f32::blocked:abcd::f0,,alg:softmax_accurate axis:1,1x19x160x320,"
    "1.0",
]


def _log(lines):
  log = PrimitiveLog()
  for line in lines:
    log.add(line)
  return log


def test_convolution_flops_counts_every_tap_per_group():
  assert convolution_flops("mb1_ic256oc256_ih21oh21kh3sh1dh1ph2_iw41ow41kw3sw1dw1pw2") == (
      2 * 256 * 21 * 41 * 256 * 9)
  # Two groups: each output channel sees half the input channels.
  assert convolution_flops("g2mb2_ic2048oc38_ih21oh21kh3sh1dh11ph12_iw41ow41kw3sw1dw11pw12") == (
      2 * 2 * 38 * 21 * 41 * 1024 * 9)
  assert convolution_flops("mb1_ic8oc4_id5od3kd3_ih5oh3kh3_iw5ow3kw3") == 2 * 4 * 27 * 8 * 27


def test_matmul_flops_multiply_the_batch_rows_depth_and_columns():
  assert matmul_flops("2304x861:861x256") == 2 * 2304 * 861 * 256
  assert matmul_flops("4x3x5:4x5x7") == 2 * 4 * 3 * 5 * 7


def test_only_executions_are_counted_each_in_its_row():
  log = _log(TF_LINES + TORCH_LINES)
  assert log.milliseconds == {"conv_forward": 4.0, "conv_backward_weights": 3.0,
                              "conv_backward_data": 2.0, "matmul": 4.0, "reorder": 0.5,
                              "batch_normalization": 0.25, "other_onednn": 1.0}
  # The cache-miss creation line adds neither time nor FLOPs to the forward row.
  assert log.flops["conv_forward"] == 2 * 256 * 21 * 41 * 256 * 9


def test_summary_splits_the_step_and_bounds_the_speedup_by_the_arithmetic():
  log = _log(TF_LINES)
  # Two steps of 20 ms: 11.75 ms of oneDNN per 2 steps, the rest outside it; the sgemm API's
  # line counts as a matmul.
  record = summarise("tfdaseg bf16", log, [0.02, 0.02], reference_s_per_step=0.035)
  assert record["ms_per_step"] == {"conv_forward": 2.0, "conv_backward_data": 0.0,
                                   "conv_backward_weights": 1.5, "matmul": 2.0, "reorder": 0.2,
                                   "batch_normalization": 0.1, "other_onednn": 0.0,
                                   "rest": 14.1}
  # 0.035 s of reference step over 5.5 ms of convolutions and matmuls per step.
  assert record["ceiling_speedup"] == pytest.approx(0.035 / 0.0055, abs=1e-3)
  flops = 2 * 256 * 21 * 41 * 256 * 9
  assert record["gflops"]["conv_forward"] == pytest.approx(flops / 4.0 / 1e6, abs=0.1)
  assert record["gflops"]["matmul"] == pytest.approx(
      (2 * 2304 * 861 * 256 + 2 * 256 * 861 * 1024) / 4.0 / 1e6, abs=0.1)
  assert "conv_backward_data" not in record["gflops"]
  reference = summarise(REFERENCE, _log(TORCH_LINES), [0.035], reference_s_per_step=0.035)
  assert "ceiling_speedup" not in reference
  rendered = table([reference, record])
  assert "| conv_forward | 0 | 2 |" in rendered
  assert "| matmul | 0 | 2 |" in rendered
  assert "| ceiling speedup |  | 6.364 |" in rendered

// Schemas of the dfanet ops, defined once. Each backend file (csrc/cpu/*.cpp, csrc/cuda/*_glue.cpp) adds only its own
// TORCH_LIBRARY_IMPL block. Fake (meta) implementations live in dfanet_kernels/_fake.py.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing dfanet_kernels._C runs the static initialisers below, which register the ops.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(dfanet, m) {
  m.def(
      "dwsep_conv(Tensor x, Tensor dw_weight, Tensor? dw_bias, Tensor pw_weight, Tensor? pw_bias, int stride, "
      "bool act_in, bool act_mid, bool act_out, Tensor? residual) -> Tensor");
  m.def(
      "fc_attention(Tensor x, Tensor fc_weight, Tensor? fc_bias, Tensor conv_weight, Tensor? conv_bias) -> Tensor");
  m.def("upsample_concat(Tensor[] inputs, SymInt[2] size) -> Tensor");
  m.def("upsample_add(Tensor[] inputs, SymInt[2] size) -> Tensor");
  // The instruction-set path of the CPU kernels ("avx512", "avx2" or "scalar"), honouring DFANET_CPU_ISA.
  m.def("cpu_isa() -> str");
}

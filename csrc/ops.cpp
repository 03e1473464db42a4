// Schemas of the dfanet ops, defined once. Each backend file (csrc/cpu/*.cpp, csrc/cuda/*_glue.cpp) adds only its own
// TORCH_LIBRARY_IMPL block. Fake (meta) implementations live in dfanet_kernels/_fake.py.
// No Python here: loading the library (torch.ops.load_library in Python, dlopen in C++) runs the static initialisers
// below, which register the ops.
#include <torch/library.h>

TORCH_LIBRARY(dfanet, m) {
  m.def(
      "dwsep_conv(Tensor x, Tensor dw_weight, Tensor? dw_bias, Tensor pw_weight, Tensor? pw_bias, int stride, "
      "bool act_in, bool act_mid, bool act_out, Tensor? residual) -> Tensor");
  m.def(
      "fc_attention(Tensor x, Tensor fc_weight, Tensor? fc_bias, Tensor conv_weight, Tensor? conv_bias) -> Tensor");
  m.def("upsample_concat(Tensor[] inputs, SymInt[2] size) -> Tensor");
  m.def("upsample_add(Tensor[] inputs, SymInt[2] size) -> Tensor");
  // argmax(bilinear(x, size), dim=1): N x H x W labels, uint8 for up to 256 channels, else int64; the resized map is
  // never written (DFANet.predict).
  m.def("upsample_labels(Tensor x, SymInt[2] size) -> Tensor");
  // A whole Xception block: sep3(sep2(sep1(x))) + shortcut(x), sep_i = ReLU -> depthwise 3x3 (no bias) -> 1x1 + pb_i;
  // sep1 and the shortcut (a 1x1 conv + bias, or the identity when shortcut_weight is None) have the stride.
  // x = upsample_concat(inputs, inputs[0]'s H x W): usually one tensor; several form a concatenation that the CPU
  // kernel reads without writing it out.
  m.def(
      "xception_block(Tensor[] inputs, Tensor dw1, Tensor pw1, Tensor? pb1, Tensor dw2, Tensor pw2, Tensor? pb2, "
      "Tensor dw3, Tensor pw3, Tensor? pb3, int stride, Tensor? shortcut_weight, Tensor? shortcut_bias) -> Tensor");
  // Dense convolutions with bias and optional ReLU, padding k / 2: 1x1 (the decoder) and 3x3 (conv1).
  m.def("conv1x1(Tensor x, Tensor weight, Tensor? bias, int stride, bool relu) -> Tensor");
  m.def("conv3x3(Tensor x, Tensor weight, Tensor? bias, int stride, bool relu) -> Tensor");
  // DFANet's decoder up to the quarter-size logits: classifier(relu(fuse(sum_i up(relu(low_i @ low_weights[i])))) +
  // sum_j up(relu(high_j @ high_weights[j]))), 1x1 convs with biases, each map bilinearly resized to low[0]'s size.
  m.def(
      "decoder_head(Tensor[] low, Tensor[] high, Tensor[] low_weights, Tensor?[] low_biases, Tensor fuse_weight, "
      "Tensor? fuse_bias, Tensor[] high_weights, Tensor?[] high_biases, Tensor classifier_weight, "
      "Tensor? classifier_bias) -> Tensor");
  // The instruction-set path of the CPU kernels ("avx512", "avx2" or "scalar"), honouring DFANET_CPU_ISA.
  m.def("cpu_isa() -> str");
}

// Launchers of the CUDA kernels (csrc/cuda/*.cu), callable from plain C++: raw pointers, a params struct, a stream.
// No torch types here, so the .cu files build with CUDA headers only (seconds, and compile-checked in CI without a
// GPU or a CUDA torch); the torch glue (*_glue.cpp) checks the tensors and fills these structs.
//
// Every tensor is dense (but conv3x3's input, read through its strides): activations NHWC (channels_last), weights
// in their PyTorch layout flattened row-major.
// Kernels read and write `dtype` and accumulate in fp32. Each launcher queues its kernels on `stream` and returns
// the launch status (cudaGetLastError); callers skip empty outputs, so every launch has work to do.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dfanet::cuda {

enum class DType { kFloat32, kFloat16, kBFloat16 };

// out = act_out(pw(act_mid(dw3x3(act_in(x), stride, padding 1) + dw_bias)) + pw_bias) + residual
struct DwsepConvParams {
  const void* x;          // N x H x W x C
  const void* dw_weight;  // C x 9 (C x 1 x 3 x 3)
  const void* dw_bias;    // C, or nullptr
  const void* pw_weight;  // Cout x C (Cout x C x 1 x 1)
  const void* pw_bias;    // Cout, or nullptr
  const void* residual;   // N x Ho x Wo x Cout, or nullptr
  void* out;              // N x Ho x Wo x Cout
  int64_t N, H, W, C, Cout, Ho, Wo;
  int stride;  // 1 or 2
  bool act_in, act_mid, act_out;
  DType dtype;
};
cudaError_t launch_dwsep_conv(const DwsepConvParams& p, cudaStream_t stream);

// out = x * relu(conv_weight @ (fc_weight @ mean_hw(x) + fc_bias) + conv_bias), per sample.
struct FcAttentionParams {
  const void* x;            // N x HW x C
  const void* fc_weight;    // K x C
  const void* fc_bias;      // K, or nullptr
  const void* conv_weight;  // C x K (C x K x 1 x 1)
  const void* conv_bias;    // C, or nullptr
  void* out;                // N x HW x C
  float* workspace;         // fc_attention_workspace_floats(N, HW, C, K) floats of scratch
  unsigned* counters;       // kFcAttentionCounters zeros, left at zero by every launch (see fc_attention.cu)
  int64_t N, HW, C, K;
  DType dtype;
};
// The counters the first kernel synchronises its tiles with: zeroed once per (device, stream), never per call.
constexpr int kFcAttentionCounters = 4;
// Pooling splits the HW pixels of a sample into this many parts, summed by separate blocks (one block per 32
// channels alone would give a 192-channel batch-1 map 6 blocks on a GPU of 132 SMs): about 128 pixels each, at
// most 32 parts. Their partial sums are added, in a fixed order, where the first mat-vec reads them.
inline int64_t fc_attention_pool_splits(int64_t HW) {
  const int64_t splits = (HW + 127) / 128;
  return splits < 32 ? splits : 32;
}
// Scratch for the partial sums (N x splits x C), hidden (N x K) and scale (N x C) vectors, all fp32.
inline int64_t fc_attention_workspace_floats(int64_t N, int64_t HW, int64_t C, int64_t K) {
  return N * (fc_attention_pool_splits(HW) * C + K + C);
}
cudaError_t launch_fc_attention(const FcAttentionParams& p, cudaStream_t stream);

// Bilinear resize to Ho x Wo (align_corners=False, PyTorch's source-index rule; a source already at Ho x Wo is
// copied), then concatenated along channels (add=false) or summed (add=true: every source has Cout channels).
struct UpsampleSource {
  const void* data;  // N x H x W x C
  int64_t C, H, W;
};
struct UpsampleParams {
  const UpsampleSource* sources;  // host array
  int64_t num_sources;
  void* out;  // N x Ho x Wo x Cout
  int64_t N, Ho, Wo, Cout;
  bool add;
  DType dtype;
};
cudaError_t launch_upsample(const UpsampleParams& p, cudaStream_t stream);

// out[n, h, w] = argmax over c of the source resized to Ho x Wo (as launch_upsample computes it): the first channel
// holding the maximum, or the first NaN (as torch.argmax).
struct UpsampleLabelsParams {
  UpsampleSource source;
  void* out;  // N x Ho x Wo: int64_t where int64_labels, else uint8_t
  int64_t N, Ho, Wo;
  bool int64_labels;
  DType dtype;
};
cudaError_t launch_upsample_labels(const UpsampleLabelsParams& p, cudaStream_t stream);

// A whole Xception block in one kernel:
//   out = sep3(sep2(sep1(x))) + shortcut(x), sep_i(y) = pw_i(dw3x3_i(relu(y), stride for sep1 else 1)) + pw_bias_i
// (no depthwise bias), shortcut = a 1x1 conv of the block's stride + sc_bias, or the identity (sc_weight nullptr:
// stride 1, C3 == C0). x is the concatenation along channels of `sources`, each bilinearly resized to H x W as
// launch_upsample resizes it (a source already at H x W is read as is), read in place: one source at H x W is a
// plain input. The mid widths C1, C2 are at most kXceptionBlockMaxMid and the sources at most
// kXceptionBlockMaxSources (xception_block_supported); other blocks are the caller's to compose.
constexpr int64_t kXceptionBlockMaxMid = 64;
constexpr int64_t kXceptionBlockMaxSources = 8;
struct XceptionBlockParams {
  const UpsampleSource* sources;  // host array
  int64_t num_sources;
  const void* dw_weight[3];  // C_i x 9, C = {C0, C1, C2}
  const void* pw_weight[3];  // C_{i+1} x C_i
  const void* pw_bias[3];    // C_{i+1}, or nullptr
  const void* sc_weight;     // C3 x C0, or nullptr (identity)
  const void* sc_bias;       // C3, or nullptr
  void* out;                 // N x Ho x Wo x C3
  int64_t N, H, W, C0, C1, C2, C3, Ho, Wo;
  int stride;  // 1 or 2
  DType dtype;
};
inline bool xception_block_supported(int64_t C1, int64_t C2, int64_t num_sources) {
  return C1 <= kXceptionBlockMaxMid && C2 <= kXceptionBlockMaxMid && num_sources <= kXceptionBlockMaxSources;
}
cudaError_t launch_xception_block(const XceptionBlockParams& p, cudaStream_t stream);

// out = relu(conv3x3(x, weight, stride, padding 1) + bias) (ReLU where `relu`): DFANet's stem. x is read through its
// element strides in whatever layout it comes, so an NCHW image needs no conversion first.
struct Conv3x3Params {
  const void* x;       // N x C x H x W at element strides sN, sC, sH, sW
  const void* weight;  // Cout x C x 9 (Cout x C x 3 x 3)
  const void* bias;    // Cout, or nullptr
  void* out;           // N x Ho x Wo x Cout
  int64_t N, C, H, W, Cout, Ho, Wo;
  int64_t sN, sC, sH, sW;
  int stride;  // 1 or 2
  bool relu;
  DType dtype;
};
cudaError_t launch_conv3x3(const Conv3x3Params& p, cudaStream_t stream);

// DFANet's decoder head in one kernel (decoder.cu):
//   out = classifier(relu(fuse(sum_i resize(relu(low_i @ Wl_i + bl_i))) + bf) + sum_j resize(relu(high_j @ Wh_j +
//   bh_j)))
// every @ a 1x1 conv, every map resized (bilinear, as launch_upsample) to H x W, low[0]'s size, sums in list order.
// At most kDecoderHeadMaxMaps low and as many high maps, D at most kDecoderHeadMaxWidth (decoder_head_supported).
constexpr int64_t kDecoderHeadMaxMaps = 8;
constexpr int64_t kDecoderHeadMaxWidth = 128;
struct DecoderMap {
  const void* data;    // N x H x W x C
  const void* weight;  // D x C (D x C x 1 x 1)
  const void* bias;    // D, or nullptr
  int64_t C, H, W;
};
struct DecoderHeadParams {
  const DecoderMap* low;  // host array, num_low >= 1
  int64_t num_low;
  const DecoderMap* high;  // host array
  int64_t num_high;
  const void* fuse_weight;        // D x D
  const void* fuse_bias;          // D, or nullptr
  const void* classifier_weight;  // K x D
  const void* classifier_bias;    // K, or nullptr
  void* out;                      // N x H x W x K
  int64_t N, H, W, D, K;
  DType dtype;
};
inline bool decoder_head_supported(int64_t num_low, int64_t num_high, int64_t D) {
  return num_low >= 1 && num_low <= kDecoderHeadMaxMaps && num_high <= kDecoderHeadMaxMaps &&
         D <= kDecoderHeadMaxWidth;
}
cudaError_t launch_decoder_head(const DecoderHeadParams& p, cudaStream_t stream);

}  // namespace dfanet::cuda

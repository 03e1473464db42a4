// Instruction-set paths of the CPU kernels and the plain-C++ interface between the torch glue and them.
//
// The SIMD kernels live in translation units that include no torch header (kernels/*.h, compiled three times by
// isa_avx512.cpp, isa_avx2.cpp and isa_scalar.cpp, each under its own target). They see only raw pointers and the
// argument structs below, so no inline function of torch or the standard library is ever compiled for AVX-512 and
// then picked by the linker for code that runs on an older CPU. The glue (dwsep_conv.cpp, ...) checks and packs the
// arguments, splits the work with at::parallel_for and calls the path that `active_isa()` chooses.
#pragma once

#include <cstdint>

namespace dfanet::cpu {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// Every packed weight / bias vector is padded with zeros to a multiple of this many floats (the widest vector),
// so one packing serves every path.
constexpr int64_t kPad = 16;
constexpr int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// One depthwise-separable conv, all tensors NHWC fp32, weights packed by the glue.
struct DwsepArgs {
  const float* x = nullptr;  // [N][H][W][C]
  int64_t N = 0, H = 0, W = 0, C = 0;
  int64_t Ho = 0, Wo = 0, Cout = 0, stride = 1;
  const float* dw_w = nullptr;      // [9][round_up(C, kPad)], tap-major (kh * 3 + kw), zero padded
  const float* dw_b = nullptr;      // [round_up(C, kPad)] or nullptr
  const float* pw_w = nullptr;      // [C][round_up(Cout, kPad)]: the transposed 1x1 weight, zero padded
  const float* pw_b = nullptr;      // [round_up(Cout, kPad)], zeros when the op has no bias (never nullptr)
  const float* residual = nullptr;  // [N][Ho][Wo][Cout] or nullptr
  float* out = nullptr;             // [N][Ho][Wo][Cout]
  bool act_in = false, act_mid = false, act_out = false;
  int64_t tile_w = 0;  // output pixels per depthwise tile (see dwsep_scratch_floats)
};

// Row stride (floats) of the depthwise tile of C channels. The pointwise micro-kernel is compiled for the two
// fixed strides, so that its MR broadcasts per input channel address one moving pointer plus constant offsets
// (see pointwise_micro in kernels/dwsep_conv.h); wider tiles use round_up(C, kPad) at run time. 304 = 19 cache
// lines, an odd number, so the MR rows of a micro-tile fall in different L1 sets.
constexpr int64_t tile_stride(int64_t C) {
  return round_up(C, kPad) <= 64 ? 64 : round_up(C, kPad) <= 304 ? 304 : round_up(C, kPad);
}

// Floats of per-thread scratch that dwsep_rows needs: one depthwise tile of tile_w pixels, plus kPad rows so that
// the micro-kernel's last pixel group may read past the tile.
inline int64_t dwsep_scratch_floats(const DwsepArgs& a) { return (a.tile_w + kPad) * tile_stride(a.C); }

// Bilinear upsample + concat / + add (align_corners=False), all tensors NHWC fp32. Axis taps are computed by the
// glue with PyTorch's formula: output index d reads source indices i0[d], i1[d] with weights w0[d], w1[d].
struct UpsampleSource {
  const float* data = nullptr;  // [N][H][W][C]
  int64_t C = 0, H = 0, W = 0;
  int64_t channel_offset = 0;  // first output channel (concat); 0 for add
  bool same = false;           // H, W equal the output's: copied exactly
  const int64_t* row_i0 = nullptr;
  const int64_t* row_i1 = nullptr;
  const float* row_w0 = nullptr;
  const float* row_w1 = nullptr;
  const int64_t* col_i0 = nullptr;
  const int64_t* col_i1 = nullptr;
  const float* col_w0 = nullptr;
  const float* col_w1 = nullptr;
};

constexpr int64_t kMaxUpsampleSources = 16;  // more are folded in by the glue, a group at a time

struct UpsampleArgs {
  const UpsampleSource* src = nullptr;
  int64_t count = 0;
  int64_t N = 0, Ho = 0, Wo = 0, Cout = 0;
  bool add = false;
  bool stream = false;   // an add of one source: the output written with non-temporal stores
  float* out = nullptr;  // [N][Ho][Wo][Cout]
};

// The argmax over channels of one source bilinearly resized to Ho x Wo, as upsample_add of it computes the values:
// one label per output pixel, never the resized map. The first maximum wins, and a NaN over any number (as
// torch.argmax).
struct LabelsArgs {
  UpsampleSource src;  // channel_offset 0
  int64_t N = 0, Ho = 0, Wo = 0;
  void* out = nullptr;  // [N][Ho][Wo]: uint8_t where u8, else int64_t
  bool u8 = true;
};

// A 1x1 convolution of stride 1 or 2 (+ bias, ReLU), NHWC fp32: DFANet's decoder convs.
struct PointwiseArgs {
  const float* x = nullptr;  // [N][H][W][C]
  int64_t N = 0, H = 0, W = 0, C = 0;
  int64_t Ho = 0, Wo = 0, Cout = 0, stride = 1;
  const float* w = nullptr;  // [C][round_up(Cout, kPad)], zero padded
  const float* b = nullptr;  // [round_up(Cout, kPad)], never nullptr
  bool relu = false;
  float* out = nullptr;  // [N][Ho][Wo][Cout]
  int64_t tile_w = 0;
};
inline int64_t pointwise_scratch_floats(const PointwiseArgs& a) { return (a.tile_w + kPad) * tile_stride(a.C); }

// A whole Xception block: y = sep3(sep2(sep1(x))) + shortcut(x), each sep = ReLU -> depthwise 3x3 (no bias) ->
// pointwise + bias; sep1 has the block's stride; shortcut = identity or a 1x1 conv of that stride + bias.
struct BlockSep {
  const float* dw_w = nullptr;  // [9][round_up(C_in, kPad)]
  const float* pw_w = nullptr;  // [C_in][round_up(C_out, kPad)]
  const float* pw_b = nullptr;  // [round_up(C_out, kPad)], never nullptr
  int64_t Cout = 0;
};
struct BlockArgs {
  const float* x = nullptr;  // [N][H][W][C0], or nullptr for a virtual input (src below)
  int64_t N = 0, H = 0, W = 0, C0 = 0;
  int64_t Ho = 0, Wo = 0, stride = 1;
  BlockSep sep[3];
  const float* sc_w = nullptr;  // [C0][round_up(C3, kPad)], or nullptr for the identity shortcut
  const float* sc_b = nullptr;  // [round_up(C3, kPad)]
  float* out = nullptr;         // [N][Ho][Wo][C3]
  int64_t tile_w = 0;
  // A virtual input instead of x (x == nullptr): the concatenation along channels of src[0 .. src_count), each
  // bilinearly resized to H x W exactly as upsample_concat does (channel_offset, `same` and the axis taps set for
  // an H x W output). Its rows are built per thread as the block needs them (kernels/xception_block.h,
  // InputRows).
  const UpsampleSource* src = nullptr;
  int64_t src_count = 0;
  // The 1x1 shortcut, split where a virtual input makes part of it cheaper (see xception_block.cpp): the input
  // channel ranges [begin, end) multiplied at the pixels the shortcut reads (input (oh * stride, ow * stride)) with
  // their rows of sc_w, and the resized sources whose product with their rows of sc_w the glue computed at their
  // own, smaller size (data: N x Hs x Ws x C3, taps as in src), resized here at those pixels. Linear maps commute
  // with the bilinear resize (its weights sum to 1), so the sum is the shortcut of the concatenation.
  const int64_t* sc_ranges = nullptr;  // [2 * sc_range_count]: begin, end
  int64_t sc_range_count = 0;
  const UpsampleSource* sc_resized = nullptr;
  int64_t sc_resized_count = 0;
  const float* sc_zero = nullptr;  // [round_up(C3, kPad)] zeros: the bias of every range after the first
};
// Input rows the block keeps built at once for a virtual input (see InputRows in kernels/xception_block.h).
constexpr int64_t block_input_ring(int64_t stride) { return 2 * stride + 2; }
// The block's depthwise / gathered tile (floats).
inline int64_t block_tile_floats(const BlockArgs& a) {
  int64_t ld = tile_stride(a.C0);
  for (int i = 0; i < 2; ++i) ld = ld > tile_stride(a.sep[i].Cout) ? ld : tile_stride(a.sep[i].Cout);
  return (a.tile_w + kPad) * ld;
}
// The shortcut's vertical blend of two rows of a resized product (the last part of block_rows' scratch).
inline int64_t block_shortcut_blend_floats(const BlockArgs& a) {
  int64_t n = 0;
  for (int64_t i = 0; i < a.sc_resized_count; ++i) {
    const int64_t row = a.sc_resized[i].W * a.sc_resized[i].C;
    n = n > row ? n : row;
  }
  return n;
}
// Per-thread scratch of block_rows: two rings of three rows (ReLU(y1), ReLU(y2)) and one tile; for a virtual
// input also its ring of built rows and one source row's vertical blend, and one of the shortcut's resized products.
inline int64_t block_scratch_floats(const BlockArgs& a) {
  int64_t n = 3 * a.Wo * (a.sep[0].Cout + a.sep[1].Cout) + block_tile_floats(a);
  if (a.src_count > 0) {
    int64_t blend = 0;
    for (int64_t i = 0; i < a.src_count; ++i) {
      const int64_t row = a.src[i].W * a.src[i].C;
      blend = blend > row ? blend : row;
    }
    n += block_input_ring(a.stride) * a.W * a.C0 + blend;
  }
  return n + block_shortcut_blend_floats(a);
}

// A dense 3x3 convolution (padding 1, stride 1 or 2, + bias, ReLU) for few input channels, input in any layout
// (element strides), output NHWC fp32: DFANet's conv1.
struct Conv3x3Args {
  const float* x = nullptr;
  int64_t N = 0, C = 0, H = 0, W = 0;
  int64_t sN = 0, sC = 0, sH = 0, sW = 0;  // element strides of x
  int64_t Ho = 0, Wo = 0, Cout = 0, stride = 1;
  const float* w = nullptr;  // [C * 9][round_up(Cout, kPad)], row (ci * 3 + kh) * 3 + kw, zero padded
  const float* b = nullptr;  // [round_up(Cout, kPad)], never nullptr
  bool relu = false;
  float* out = nullptr;  // [N][Ho][Wo][Cout]
};

// Floats of the two horizontally resized rows of a source that an add or the labels cache (ResizedRows in
// kernels/upsample.h); none for a source of the output's width, read in place.
inline int64_t resized_rows_floats(const UpsampleSource& s, int64_t Wo) { return s.W == Wo ? 0 : 2 * Wo * s.C; }

// Per-thread scratch of upsample_rows: a concat's vertical blend of one row per source, an add's resized rows.
inline int64_t upsample_scratch_floats(const UpsampleArgs& a) {
  int64_t n = 0;
  for (int64_t i = 0; i < a.count; ++i) n += a.add ? resized_rows_floats(a.src[i], a.Wo) : a.src[i].W * a.src[i].C;
  return n;
}

// DFANet's decoder head (dfanet::decoder_head), NHWC fp32, one output row at a time: low = ReLU(x @ low_w + low_b)
// at the output's pixels plus each low source resized; fused = ReLU(low @ fuse_w + fuse_b) plus each high source
// resized; out = fused @ cls_w + cls_b. The sources are the other maps already reduced to D channels (with their
// ReLU) at their own sizes; low and fused live in two rows of scratch, never in memory.
struct DecoderArgs {
  const float* x = nullptr;  // [N][Ho][Wo][C]: the first low-level map
  int64_t N = 0, Ho = 0, Wo = 0, C = 0;
  int64_t D = 0, Cout = 0;  // the decoder's width, the classes
  const float* low_w = nullptr;  // [C][round_up(D, kPad)]
  const float* low_b = nullptr;  // [round_up(D, kPad)], never nullptr (as every bias below)
  const float* fuse_w = nullptr;  // [D][round_up(D, kPad)]
  const float* fuse_b = nullptr;
  const float* cls_w = nullptr;  // [D][round_up(Cout, kPad)]
  const float* cls_b = nullptr;
  const UpsampleSource* low_src = nullptr;  // D channels each, at most kMaxUpsampleSources
  int64_t low_count = 0;
  const UpsampleSource* high_src = nullptr;
  int64_t high_count = 0;
  float* out = nullptr;  // [N][Ho][Wo][Cout]
  int64_t tile_w = 0;
};

// Per-thread scratch of decoder_rows: the low and fused rows, a gathered tile of the pointwise GEMM, and each
// source's resized rows.
inline int64_t decoder_scratch_floats(const DecoderArgs& a) {
  int64_t n = 2 * a.Wo * a.D + (a.tile_w + kPad) * tile_stride(a.C > a.D ? a.C : a.D);
  for (int64_t i = 0; i < a.low_count; ++i) n += resized_rows_floats(a.low_src[i], a.Wo);
  for (int64_t i = 0; i < a.high_count; ++i) n += resized_rows_floats(a.high_src[i], a.Wo);
  return n;
}

// Per-thread scratch of upsample_labels_rows: one pixel's channel values (a whole number of vectors) and the
// source's resized rows.
inline int64_t labels_scratch_floats(const LabelsArgs& a) {
  return round_up(a.src.C, kPad) + resized_rows_floats(a.src, a.Wo);
}

// Computes output rows [begin, end) of the flattened N * Ho rows, with `scratch` (dwsep_scratch_floats(a) floats,
// zero-initialised) private to the calling thread. One function per path; the AVX ones exist only on x86-64
// builds and may be called only when the CPU has the instructions (see active_isa()).
#define DFANET_CPU_PATH_FUNCTIONS                                                             \
  void dwsep_rows(const DwsepArgs& a, int64_t begin, int64_t end, float* scratch);            \
  void pointwise_rows(const PointwiseArgs& a, int64_t begin, int64_t end, float* scratch);    \
  void block_rows(const BlockArgs& a, int64_t begin, int64_t end, float* scratch);            \
  void conv3x3_rows(const Conv3x3Args& a, int64_t begin, int64_t end, float* scratch);        \
  void upsample_rows(const UpsampleArgs& a, int64_t begin, int64_t end, float* scratch);      \
  void upsample_labels_rows(const LabelsArgs& a, int64_t begin, int64_t end, float* scratch);  \
  void decoder_rows(const DecoderArgs& a, int64_t begin, int64_t end, float* scratch);

namespace scalar {
DFANET_CPU_PATH_FUNCTIONS
}
namespace avx2 {
DFANET_CPU_PATH_FUNCTIONS
}
namespace avx512 {
DFANET_CPU_PATH_FUNCTIONS
}

// The path the kernels take now: the best this CPU runs, or a lower one forced with the environment variable
// DFANET_CPU_ISA=avx512|avx2|scalar (read at every call, so tests can cover each path in one process). Raises a
// c10::Error naming the variable if its value is unknown or names a path this CPU (or this build) lacks.
Isa active_isa();
const char* isa_name(Isa isa);

// The functions of one path.
struct CpuPath {
  void (*dwsep_rows)(const DwsepArgs&, int64_t, int64_t, float*);
  void (*pointwise_rows)(const PointwiseArgs&, int64_t, int64_t, float*);
  void (*block_rows)(const BlockArgs&, int64_t, int64_t, float*);
  void (*conv3x3_rows)(const Conv3x3Args&, int64_t, int64_t, float*);
  void (*upsample_rows)(const UpsampleArgs&, int64_t, int64_t, float*);
  void (*upsample_labels_rows)(const LabelsArgs&, int64_t, int64_t, float*);
  void (*decoder_rows)(const DecoderArgs&, int64_t, int64_t, float*);
};
// The functions of active_isa()'s path (same errors).
const CpuPath& cpu_path();

}  // namespace dfanet::cpu

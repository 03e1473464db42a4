// Runs one csrc/cuda launcher under the CPU emulator (emu.h) on arrays read from a file; driven by
// tests/test_cuda_emulated.py, which writes the input file and checks the output against dfanet_kernels.reference.
//
//   runner <conv3x3|dwsep_conv|fc_attention|upsample|upsample_labels|xception_block|decoder_head> <input> <output>
//
// input: int64 count, that many int64 header values (dtype code first, then the op's sizes and flags, in the order
// read below), then the arrays, dense, in the dtype. Every array gets its own exact-size heap buffer, so ASan flags
// any access past it; the output and the fc_attention workspace start as NaN (labels: 255 or -1), so a value never
// written shows. The output file holds the output in its own type (labels: uint8 or int64).
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "emu.h"
#include "launchers.h"

using namespace dfanet::cuda;

extern "C" {
cudaError_t cudaGetLastError(void) {
  const cudaError_t err = emu::g_last_error;
  emu::g_last_error = cudaSuccess;
  return err;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
// An H100; EMU_SMS overrides its 132 SMs (launchers that size their grid by it take other tiles on fewer SMs) and
// EMU_CC_MAJOR its compute capability 9 (launchers send older GPUs down other paths).
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  const auto env = [](const char* name, int fallback) {
    const char* v = std::getenv(name);
    return v ? std::atoi(v) : fallback;
  };
  *value = attr == cudaDevAttrComputeCapabilityMajor ? env("EMU_CC_MAJOR", 9)
           : attr == cudaDevAttrMultiProcessorCount  ? env("EMU_SMS", 132)
                                                     : 0;
  return cudaSuccess;
}
// Raising a kernel's dynamic shared memory limit: any size up to an H100's 227 KB per block.
cudaError_t cudaFuncSetAttribute(const void*, cudaFuncAttribute attr, int value) {
  return attr == cudaFuncAttributeMaxDynamicSharedMemorySize && value <= 227 * 1024 ? cudaSuccess
                                                                                    : cudaErrorInvalidValue;
}
}

namespace {

struct Input {
  std::ifstream file;
  std::vector<int64_t> header;
  size_t next = 0;
  size_t elem = 4;
  std::vector<std::unique_ptr<unsigned char[]>> buffers;

  explicit Input(const char* path) : file(path, std::ios::binary) {
    int64_t count = 0;
    file.read(reinterpret_cast<char*>(&count), sizeof count);
    header.resize(count);
    file.read(reinterpret_cast<char*>(header.data()), count * sizeof(int64_t));
    EMU_CHECK(file.good(), "cannot read the input header");
  }
  int64_t value() {
    EMU_CHECK(next < header.size(), "header too short");
    return header[next++];
  }
  const void* array(int64_t count) {
    buffers.push_back(std::make_unique<unsigned char[]>(count * elem));
    file.read(reinterpret_cast<char*>(buffers.back().get()), count * elem);
    EMU_CHECK(file.good(), "input file too short");
    return buffers.back().get();
  }
  const void* optional_array(bool present, int64_t count) { return present ? array(count) : nullptr; }
};

std::unique_ptr<unsigned char[]> nan_buffer(size_t bytes) {
  auto buf = std::make_unique<unsigned char[]>(bytes);
  std::memset(buf.get(), 0xff, bytes);  // NaN in fp32, fp16 and bf16
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  EMU_CHECK(argc == 4, "usage: runner <op> <input> <output>");
  const std::string op = argv[1];
  Input in(argv[2]);
  const int64_t dtype_code = in.value();
  const DType dtype = dtype_code == 0 ? DType::kFloat32 : dtype_code == 1 ? DType::kFloat16 : DType::kBFloat16;
  in.elem = dtype == DType::kFloat32 ? 4 : 2;

  std::unique_ptr<unsigned char[]> out, workspace;
  int64_t out_count = 0;
  size_t out_elem = in.elem;
  cudaError_t err = cudaErrorInvalidValue;
  if (op == "conv3x3") {
    Conv3x3Params p{};
    p.dtype = dtype;
    p.N = in.value(), p.C = in.value(), p.H = in.value(), p.W = in.value(), p.Cout = in.value();
    p.stride = static_cast<int>(in.value());
    p.relu = in.value();
    const bool bias = in.value();
    // The input's layout: 0 NCHW, 1 NHWC, 2 NCHW with every other element of a twice-as-wide row (a strided view).
    const int64_t layout = in.value();
    const int64_t w_pitch = layout == 2 ? 2 * p.W : p.W;
    if (layout == 1) {
      p.sN = p.H * p.W * p.C, p.sC = 1, p.sH = p.W * p.C, p.sW = p.C;
    } else {
      p.sN = p.C * p.H * w_pitch, p.sC = p.H * w_pitch, p.sH = w_pitch, p.sW = layout == 2 ? 2 : 1;
    }
    p.Ho = (p.H - 1) / p.stride + 1;
    p.Wo = (p.W - 1) / p.stride + 1;
    out_count = p.N * p.Ho * p.Wo * p.Cout;
    p.x = in.array(p.N * p.C * p.H * w_pitch);
    p.weight = in.array(p.Cout * p.C * 9);
    p.bias = in.optional_array(bias, p.Cout);
    out = nan_buffer(out_count * in.elem);
    p.out = out.get();
    err = launch_conv3x3(p, nullptr);
  } else if (op == "dwsep_conv") {
    DwsepConvParams p{};
    p.dtype = dtype;
    p.N = in.value(), p.H = in.value(), p.W = in.value(), p.C = in.value(), p.Cout = in.value();
    p.stride = static_cast<int>(in.value());
    p.act_in = in.value(), p.act_mid = in.value(), p.act_out = in.value();
    const bool dw_bias = in.value(), pw_bias = in.value(), residual = in.value();
    p.Ho = (p.H - 1) / p.stride + 1;
    p.Wo = (p.W - 1) / p.stride + 1;
    out_count = p.N * p.Ho * p.Wo * p.Cout;
    p.x = in.array(p.N * p.H * p.W * p.C);
    p.dw_weight = in.array(p.C * 9);
    p.dw_bias = in.optional_array(dw_bias, p.C);
    p.pw_weight = in.array(p.Cout * p.C);
    p.pw_bias = in.optional_array(pw_bias, p.Cout);
    p.residual = in.optional_array(residual, out_count);
    out = nan_buffer(out_count * in.elem);
    p.out = out.get();
    err = launch_dwsep_conv(p, nullptr);
  } else if (op == "fc_attention") {
    FcAttentionParams p{};
    p.dtype = dtype;
    p.N = in.value(), p.HW = in.value(), p.C = in.value(), p.K = in.value();
    const bool fc_bias = in.value(), conv_bias = in.value();
    out_count = p.N * p.HW * p.C;
    p.x = in.array(out_count);
    p.fc_weight = in.array(p.K * p.C);
    p.fc_bias = in.optional_array(fc_bias, p.K);
    p.conv_weight = in.array(p.C * p.K);
    p.conv_bias = in.optional_array(conv_bias, p.C);
    workspace = nan_buffer(fc_attention_workspace_floats(p.N, p.HW, p.C, p.K) * sizeof(float));
    p.workspace = reinterpret_cast<float*>(workspace.get());
    unsigned counters[kFcAttentionCounters] = {};
    p.counters = counters;
    out = nan_buffer(out_count * in.elem);
    p.out = out.get();
    // Twice back to back (the second output is written): each launch must leave the counters at zero for the next.
    for (int launch = 0; launch < 2; ++launch) {
      if ((err = launch_fc_attention(p, nullptr)) != cudaSuccess) break;
      for (unsigned c : counters) EMU_CHECK(c == 0, "fc_attention left a counter set");
      if (launch == 0) std::memset(out.get(), 0xff, out_count * in.elem);  // NaN again: the second must write it
    }
  } else if (op == "upsample") {
    UpsampleParams p{};
    p.dtype = dtype;
    p.add = in.value();
    p.N = in.value(), p.Ho = in.value(), p.Wo = in.value();
    p.num_sources = in.value();
    std::vector<UpsampleSource> sources(p.num_sources);
    for (UpsampleSource& s : sources) s.C = in.value(), s.H = in.value(), s.W = in.value();
    p.Cout = 0;
    for (UpsampleSource& s : sources) {
      s.data = in.array(p.N * s.H * s.W * s.C);
      p.Cout = p.add ? s.C : p.Cout + s.C;
    }
    p.sources = sources.data();
    out_count = p.N * p.Ho * p.Wo * p.Cout;
    out = nan_buffer(out_count * in.elem);
    p.out = out.get();
    err = launch_upsample(p, nullptr);
  } else if (op == "upsample_labels") {
    UpsampleLabelsParams p{};
    p.dtype = dtype;
    p.N = in.value(), p.Ho = in.value(), p.Wo = in.value();
    UpsampleSource& s = p.source;
    s.C = in.value(), s.H = in.value(), s.W = in.value();
    s.data = in.array(p.N * s.H * s.W * s.C);
    p.int64_labels = s.C > 256;
    out_elem = p.int64_labels ? sizeof(int64_t) : sizeof(uint8_t);
    out_count = p.N * p.Ho * p.Wo;
    out = nan_buffer(out_count * out_elem);
    p.out = out.get();
    err = launch_upsample_labels(p, nullptr);
  } else if (op == "xception_block") {
    XceptionBlockParams p{};
    p.dtype = dtype;
    p.N = in.value();
    p.num_sources = in.value();
    std::vector<UpsampleSource> sources(p.num_sources);
    p.C0 = 0;
    for (UpsampleSource& s : sources) {
      s.C = in.value(), s.H = in.value(), s.W = in.value();
      p.C0 += s.C;
    }
    p.H = sources[0].H, p.W = sources[0].W;
    p.C1 = in.value(), p.C2 = in.value(), p.C3 = in.value();
    p.stride = static_cast<int>(in.value());
    bool has_bias[3];
    for (bool& b : has_bias) b = in.value();
    const bool projection = in.value(), sc_bias = in.value();
    p.Ho = (p.H - 1) / p.stride + 1;
    p.Wo = (p.W - 1) / p.stride + 1;
    for (UpsampleSource& s : sources) s.data = in.array(p.N * s.H * s.W * s.C);
    p.sources = sources.data();
    const int64_t C[4] = {p.C0, p.C1, p.C2, p.C3};
    for (int i = 0; i < 3; ++i) {
      p.dw_weight[i] = in.array(C[i] * 9);
      p.pw_weight[i] = in.array(C[i + 1] * C[i]);
      p.pw_bias[i] = in.optional_array(has_bias[i], C[i + 1]);
    }
    p.sc_weight = in.optional_array(projection, p.C3 * p.C0);
    p.sc_bias = in.optional_array(sc_bias, p.C3);
    out_count = p.N * p.Ho * p.Wo * p.C3;
    out = nan_buffer(out_count * in.elem);
    p.out = out.get();
    err = launch_xception_block(p, nullptr);
  } else if (op == "decoder_head") {
    DecoderHeadParams p{};
    p.dtype = dtype;
    p.N = in.value(), p.D = in.value(), p.K = in.value();
    p.num_low = in.value(), p.num_high = in.value();
    std::vector<DecoderMap> maps(p.num_low + p.num_high);
    std::vector<bool> has_bias;
    for (DecoderMap& m : maps) m.C = in.value(), m.H = in.value(), m.W = in.value(), has_bias.push_back(in.value());
    const bool fuse_bias = in.value(), classifier_bias = in.value();
    p.H = maps[0].H, p.W = maps[0].W;
    for (DecoderMap& m : maps) m.data = in.array(p.N * m.H * m.W * m.C);
    for (size_t i = 0; i < maps.size(); ++i) {
      maps[i].weight = in.array(p.D * maps[i].C);
      maps[i].bias = in.optional_array(has_bias[i], p.D);
    }
    p.fuse_weight = in.array(p.D * p.D);
    p.fuse_bias = in.optional_array(fuse_bias, p.D);
    p.classifier_weight = in.array(p.K * p.D);
    p.classifier_bias = in.optional_array(classifier_bias, p.K);
    p.low = maps.data();
    p.high = maps.data() + p.num_low;
    out_count = p.N * p.H * p.W * p.K;
    out = nan_buffer(out_count * in.elem);
    p.out = out.get();
    err = launch_decoder_head(p, nullptr);
  }
  if (err != cudaSuccess) {
    std::fprintf(stderr, "launcher returned cudaError_t %d\n", static_cast<int>(err));
    return 2;
  }
  std::ofstream(argv[3], std::ios::binary).write(reinterpret_cast<const char*>(out.get()), out_count * out_elem);
  return 0;
}

// A caching allocator for the outputs of the CPU kernels (see pool.cpp for why and how).
#pragma once

#include <ATen/ATen.h>

namespace dfanet::cpu {

// An uninitialised N x C x H x W float32 CPU tensor in channels_last layout whose storage comes from the pool.
at::Tensor pooled_empty_nhwc(at::IntArrayRef shape);

}  // namespace dfanet::cpu

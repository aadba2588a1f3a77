// The one place that knows LibTorch version differences. Lethe builds against Debian's LibTorch
// 1.13 (CPU) and LibTorch 2.x with CUDA (the GPU machine); code elsewhere calls these wrappers.
// Header-only and included only by translation units that already use ATen (base/ itself stays
// torch-free).
#pragma once

#include <ATen/ATen.h>
#include <torch/version.h>

#include <optional>

#define LETHE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace lethe::compat {

// Attention over q [B,H,T,Dh], k and v [B,H,S,Dh] with an additive or boolean mask broadcastable to
// [B,H,T,S] (true / 0 = attend). Fused scaled-dot-product attention where LibTorch has it (2.0+),
// the explicit softmax path otherwise; both compute softmax(q kᵀ / sqrt(Dh) + mask) v.
inline at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& bool_mask) {
#if LETHE_TORCH_AT_LEAST(2, 0)
  return at::scaled_dot_product_attention(q, k, v, bool_mask);
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  auto scores = at::matmul(q, k.transpose(-2, -1)).mul_(scale);
  scores.masked_fill_(bool_mask.logical_not(), -std::numeric_limits<float>::infinity());
  return at::matmul(at::softmax(scores, -1, at::kFloat).to(v.scalar_type()), v);
#endif
}

inline constexpr const char* kTorchVersion = TORCH_VERSION;

}  // namespace lethe::compat

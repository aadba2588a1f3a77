// Scaled dot-product attention with grouped-query heads, the one entry point of the model.
#pragma once

#include <ATen/ATen.h>

namespace lethe {

// softmax(q kᵀ / sqrt(d) + mask) v for q [B, h, T, d] and k, v [B, g, S, d] with g dividing h
// (each KV head serves h / g consecutive query heads), a boolean mask [B, 1, T, S] (true = attend)
// or, undefined, plain causal attention (T == S). Returns [B, h, T, d] in q's dtype.
// fp32 and bf16 on the CPU: Notes [CPU attention] and [bf16 products] (runtime/attention.cc).
// Otherwise scaled-dot-product attention (compat): fused where LibTorch has it, the explicit
// softmax on LibTorch 1.13.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask);

}  // namespace lethe

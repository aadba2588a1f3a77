// RMSNorm, rotary embeddings and SwiGLU, each one pass over its rows forward and one backward for
// fp32 and bf16 on the CPU (Note [Fused CPU kernels]), and the gradient norm's sum of squares;
// other dtypes and devices run them as ATen's elementwise ops.
#pragma once

#include <ATen/ATen.h>

namespace lethe {

// x / sqrt(mean(x²) + eps) · w over the last dimension, in fp32, returned in x's dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps);

// Rotary embedding of x [B, h, T, d] (any strides) with cos, sin [B, 1, T, d] (fp32, Hugging Face
// layout: each half holds the same angles): x · cos + rotate_half(x) · sin, in x's dtype.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// silu(a) ∘ b (SwiGLU's product of the gate and up projections), in a's dtype; one pass each way
// for fp32 and bf16 on the CPU.
at::Tensor swiglu(const at::Tensor& a, const at::Tensor& b);

// Σ x² in fp64, a 0-dim fp64 tensor on x's device; one deterministic pass for fp32 and bf16 on the
// CPU (Note [Sum of squares]).
at::Tensor sum_of_squares(const at::Tensor& x);

}  // namespace lethe

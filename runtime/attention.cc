#include "runtime/attention.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "base/torch_compat.h"

namespace lethe {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Note [CPU attention]: LibTorch's CPU bmm without MKL multiplies one batch entry after another,
// each a small BLAS call that keeps one core busy, and grouped-query attention first copies every
// KV head h / g times. Here the h / g query heads of a KV head attend as one matrix of (h / g)·T
// rows, so keys and values are read in place, and the B·g groups are split into one range per
// intra-op thread, each running its range's products, mask and softmax on one core. Backward is
// written out: dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − rowsum(dP ∘ P)), dQ = dS K / √d,
// dK = dSᵀ Q / √d, saving q, k, v and the probabilities P, as autograd's graph of the same ops
// would (less the repeated keys and values). The products and the softmax are ATen's own kernels,
// in q's dtype (fp32 or bf16; the bf16 softmax computes in fp32 and rounds its output once, as the
// explicit path's fp32 softmax cast to bf16 does).
struct Groups {
  int64_t B, h, g, r, T, S, d;
  double scale;
  Groups(const at::Tensor& q, const at::Tensor& k)
      : B(q.size(0)),
        h(q.size(1)),
        g(k.size(1)),
        r(h / g),
        T(q.size(2)),
        S(k.size(2)),
        d(q.size(3)),
        scale(1.0 / std::sqrt(static_cast<double>(d))) {}
  int64_t count() const { return B * g; }
};

// Which scores are masked out, per group: [1 (causal, shared) or B·g, r·T, S], row i of a group
// being query position i mod T.
at::Tensor masked_out(const at::Tensor& mask, const Groups& s, const at::TensorOptions& opts) {
  if (!mask.defined()) {
    const at::Tensor future = at::ones({s.T, s.S}, opts.dtype(at::kBool)).triu(1);
    return future.unsqueeze(0).expand({s.r, s.T, s.S}).reshape({1, s.r * s.T, s.S});
  }
  const at::Tensor out = mask.select(1, 0).logical_not().expand({s.B, s.T, s.S});
  return out.unsqueeze(1).unsqueeze(1).expand({s.B, s.g, s.r, s.T, s.S}).reshape({s.count(), s.r * s.T, s.S});
}

// Runs f(first, last) on one range of groups per intra-op thread, each on one core without autograd.
template <typename F>
void for_group_ranges(int64_t count, const F& f) {
  at::parallel_for(0, count, 1, [&](int64_t first, int64_t last) {
    at::NoGradGuard no_grad;
    f(first, last);
  });
}

// The attention of q, k, v grouped (Note [CPU attention]): its output [B, h, T, d], and the grouped
// qg [B·g, r·T, d], kg, vg [B·g, S, d] and, when kept for backward, P [B·g, r·T, S].
struct Grouped {
  at::Tensor out, qg, kg, vg, P;
};

Grouped grouped_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                        bool keep_p) {
  const Groups s(q, k);
  Grouped r{at::Tensor(), q.contiguous().view({s.count(), s.r * s.T, s.d}), k.reshape({s.count(), s.S, s.d}),
            v.reshape({s.count(), s.S, s.d}),
            keep_p ? at::empty({s.count(), s.r * s.T, s.S}, q.options()) : at::Tensor()};
  const at::Tensor out_mask = masked_out(mask, s, q.options());
  at::Tensor O = at::empty({s.count(), s.r * s.T, s.d}, v.options());
  for_group_ranges(s.count(), [&](int64_t a, int64_t b) {
    at::Tensor scores = at::bmm(r.qg.slice(0, a, b), r.kg.slice(0, a, b).transpose(1, 2)).mul_(s.scale);
    scores.masked_fill_(out_mask.size(0) == 1 ? out_mask : out_mask.slice(0, a, b),
                        -std::numeric_limits<float>::infinity());
    at::Tensor p = keep_p ? r.P.slice(0, a, b) : at::empty_like(scores);
    at::_softmax_out(p, scores, -1, false);
    at::Tensor o = O.slice(0, a, b);
    at::bmm_out(o, p, r.vg.slice(0, a, b));
  });
  r.out = O.view({s.B, s.h, s.T, s.d});
  return r;
}

// Note [Decoding attention]: a decode step has one query position, so each group's products are
// (h / g) rows against S keys: bmm's per-matrix BLAS calls (two per group and layer, 256 groups at
// the default generation batch) cost more than the arithmetic. Here, for a few query rows per
// group and without a graph, each group is one loop on one core: the scores q·k / √d of the keys
// the mask lets it see (masked keys are neither multiplied nor exponentiated), the softmax with its
// maximum subtracted, and Σ p v; fp32 tensors only (bf16 keeps the grouped products), groups split
// over the intra-op threads. The cache's keys and values are read in place (any batch and head
// strides, rows of d contiguous).
constexpr int64_t kFewQueryRows = 8;  // (h / g) · T at most

// One query row against its group's keys and values: out = Σ softmax(q·k / √d) v over the keys
// `seen` lets it see (zeros when it sees none). `p` holds S scores. Compiled for AVX2 as well
// (chosen at run time where the CPU has it); the arithmetic is the same, lane by lane.
__attribute__((target_clones("avx2", "default"))) void attend_row(const float* __restrict q, const float* __restrict k,
                                                                  int64_t k_row, const float* __restrict v,
                                                                  int64_t v_row, const bool* __restrict seen, int64_t S,
                                                                  int64_t d, float scale, float* __restrict p,
                                                                  float* __restrict out) {
  float top = -std::numeric_limits<float>::infinity();
  for (int64_t key = 0; key < S; ++key) {
    if (!seen[key]) continue;
    const float* kr = k + key * k_row;
    float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= d; i += 8) {
      for (int l = 0; l < 8; ++l) lane[l] += q[i + l] * kr[i + l];
    }
    for (; i < d; ++i) lane[0] += q[i] * kr[i];
    p[key] = (((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]))) * scale;
    top = std::max(top, p[key]);
  }
  for (int64_t i = 0; i < d; ++i) out[i] = 0;
  if (top == -std::numeric_limits<float>::infinity()) return;
  float total = 0;
  for (int64_t key = 0; key < S; ++key) {
    if (!seen[key]) continue;
    const float e = std::exp(p[key] - top);
    total += e;
    const float* vr = v + key * v_row;
    for (int64_t i = 0; i < d; ++i) out[i] += e * vr[i];
  }
  const float inv = 1.0f / total;
  for (int64_t i = 0; i < d; ++i) out[i] *= inv;
}

at::Tensor few_query_attention(const at::Tensor& q_in, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& mask_in) {
  const Groups s(q_in, k);
  const at::Tensor q = q_in.contiguous();
  // attend[b][t][j]: the mask [B, 1, T, S], or causal when there is none (T == S).
  const at::Tensor attend = mask_in.defined()
                                ? mask_in.expand({s.B, 1, s.T, s.S}).contiguous()
                                : at::ones({s.T, s.S}, at::kBool).tril().expand({s.B, 1, s.T, s.S}).contiguous();
  at::Tensor out = at::empty({s.B, s.h, s.T, s.d}, q.options());
  const float* qp = q.data_ptr<float>();
  const float *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>();
  const bool* ap = attend.data_ptr<bool>();
  float* op = out.data_ptr<float>();
  const auto scale = static_cast<float>(s.scale);
  at::parallel_for(0, s.count(), 4, [&](int64_t first, int64_t last) {
    std::vector<float> p(static_cast<size_t>(s.S));
    for (int64_t grp = first; grp < last; ++grp) {
      const int64_t b = grp / s.g, j = grp % s.g;
      const float *kg = kp + b * k.stride(0) + j * k.stride(1), *vg = vp + b * v.stride(0) + j * v.stride(1);
      for (int64_t head = j * s.r; head < (j + 1) * s.r; ++head) {
        for (int64_t t = 0; t < s.T; ++t) {
          const int64_t row = (b * s.h + head) * s.T + t;
          attend_row(qp + row * s.d, kg, k.stride(2), vg, v.stride(2), ap + (b * s.T + t) * s.S, s.S, s.d, scale,
                     p.data(), op + row * s.d);
        }
      }
    }
  });
  return out;
}

struct CpuAttention : torch::autograd::Function<CpuAttention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            std::optional<at::Tensor> mask) {  // optional: autograd takes no undefined tensor
    const Grouped r = grouped_forward(q.detach(), k.detach(), v.detach(), mask.value_or(at::Tensor()), true);
    ctx->save_for_backward({r.qg, r.kg, r.vg, r.P});
    return r.out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &qg = saved[0], &kg = saved[1], &vg = saved[2], &P = saved[3];
    const int64_t count = qg.size(0), rows = qg.size(1), S = kg.size(1), d = qg.size(2);
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    const at::Tensor dO = grad_out[0].contiguous().view({count, rows, d});
    at::Tensor dQ = at::empty_like(qg), dK = at::empty({count, S, d}, kg.options()),
               dV = at::empty({count, S, d}, vg.options());
    for_group_ranges(count, [&](int64_t a, int64_t b) {
      const at::Tensor p = P.slice(0, a, b), dO_ab = dO.slice(0, a, b);
      at::Tensor dq = dQ.slice(0, a, b), dk = dK.slice(0, a, b), dv = dV.slice(0, a, b);
      at::bmm_out(dv, p.transpose(1, 2), dO_ab);
      const at::Tensor dP = at::bmm(dO_ab, vg.slice(0, a, b).transpose(1, 2));
      const at::Tensor dS = at::_softmax_backward_data(dP, p, -1, p.scalar_type()).mul_(scale);
      at::bmm_out(dq, dS, kg.slice(0, a, b));
      at::bmm_out(dk, dS.transpose(1, 2), qg.slice(0, a, b));
    });
    const auto& o = grad_out[0];
    const int64_t B = o.size(0), h = o.size(1), T = o.size(2), g = count / B;
    return {dQ.view({B, h, T, d}), dK.view({B, g, S, d}), dV.view({B, g, S, d}), at::Tensor()};
  }
};

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  const Groups s(q, k);
  if (q.device().is_cpu() && (q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16)) {
    if (at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad())) {
      return CpuAttention::apply(q, k, v, std::optional<at::Tensor>(mask));
    }
    if (q.scalar_type() == at::kFloat && s.r * s.T <= kFewQueryRows && k.stride(3) == 1 && v.stride(3) == 1) {
      return few_query_attention(q, k, v, mask);  // decoding: Note [Decoding attention]
    }
    return grouped_forward(q, k, v, mask, false).out;  // without a graph: nothing kept for backward
  }
  if (s.g == s.h) return compat::attention(q, k, v, mask);
  if (!mask.defined()) {  // plain causal attention: the fused kernels need one query head per KV head
    return compat::attention(q, k.repeat_interleave(s.r, 1), v.repeat_interleave(s.r, 1), mask);
  }
  // Note [Grouped decoding]: the h / g query heads of a KV head attend as one group of (h / g)·T
  // query rows, so the keys and values (a cache's, in place) are not repeated; the mask repeats
  // per query head.
  const at::Tensor grouped_mask = mask.unsqueeze(2).expand({s.B, 1, s.r, s.T, s.S}).reshape({s.B, 1, s.r * s.T, s.S});
  return compat::attention(q.reshape({s.B, s.g, s.r * s.T, s.d}), k, v, grouped_mask).view({s.B, s.h, s.T, s.d});
}

}  // namespace lethe

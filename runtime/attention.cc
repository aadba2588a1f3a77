#include "runtime/attention.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "base/torch_compat.h"
#include "runtime/simd.h"

namespace lethe {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Note [CPU attention]: on the CPU, fp32 attention (and bf16 without AVX-512 BF16: Note [bf16
// products]) is one kernel per KV-head group, not ATen ops: LibTorch's CPU bmm without MKL
// multiplies one small matrix after another through BLAS, and grouped-query attention first copies
// every KV head h / g times. Here the h / g query heads of a KV head attend as one group of
// (h / g)·T query rows, and the B·g groups are split into one range per intra-op thread, each group
// on one core, its operands copied once into fp32 scratch (rows padded to 16 floats, keys to a
// multiple of 16; bf16 is read as fp32 and rounded once on the way out). Each query row only
// multiplies the keys it can see: a causal row t the keys [0, t], a packed row those of its own
// sample (Ranges), so causal attention does about half the products of the full score matrix. The
// products are register tiles of 4 rows by 16 keys (dots) or by 16 columns (combine) in eight-float
// vectors (simd.h), built for AVX2 with FMA as well as the baseline and chosen at run time; the
// softmax subtracts the row's maximum and uses a vectorised exp.
// Forward:  S = q kᵀ, P = softmax(S / √d) (masked keys 0), O = P v; P is kept for backward.
// Backward: dV = Pᵀ dO, dP = dO vᵀ, dS = P ∘ (dP − rowsum(dP ∘ P)) / √d, dQ = dS k, dK = dSᵀ q.
// Each group is computed by one thread in a fixed order, so results do not depend on the thread
// count.
struct Groups {
  int64_t B, h, g, r, T, S, d;
  double scale;
  Groups(int64_t B, int64_t h, int64_t g, int64_t T, int64_t S, int64_t d)
      : B(B), h(h), g(g), r(h / g), T(T), S(S), d(d), scale(1.0 / std::sqrt(static_cast<double>(d))) {}
  Groups(const at::Tensor& q, const at::Tensor& k)
      : Groups(q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3)) {}
  int64_t count() const { return B * g; }
};

using simd::f8, simd::kLane, simd::load8, simd::store8;
constexpr int64_t kTile = 16, kRows = 4;  // keys or columns per tile; rows per tile
int64_t padded(int64_t n) { return (n + kTile - 1) / kTile * kTile; }

// Which keys each query position sees, per batch row b: keys [lo, hi) of position t, of which all
// are seen when `exact` (causal, or causal within packed samples), else those `seen` marks; and the
// positions [first, last) that see key j.
struct Ranges {
  int64_t T, S;
  std::vector<int32_t> lo, hi, first, last;  // [B·T], [B·S]
  std::vector<uint8_t> exact;                // [B]
  at::Tensor seen;                           // [B, T, S] bool, contiguous (with a mask)

  Ranges(const at::Tensor& mask, const Groups& s)
      : T(s.T), S(s.S), lo(s.B * s.T, 0), hi(s.B * s.T, 0), first(s.B * s.S, 0), last(s.B * s.S, 0), exact(s.B, 1) {
    if (mask.defined()) seen = mask.select(1, 0).expand({s.B, s.T, s.S}).contiguous();
    for (int64_t b = 0; b < s.B; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        int32_t a = 0, e = static_cast<int32_t>(std::min(t + 1, S)), n = e;  // no mask: causal (keys ≤ t)
        if (seen.defined()) {
          const bool* row = seen.data_ptr<bool>() + (b * T + t) * S;
          a = static_cast<int32_t>(S), e = 0, n = 0;
          for (int32_t j = 0; j < S; ++j) {
            if (!row[j]) continue;
            a = std::min(a, j), e = j + 1, ++n;
          }
          if (n == 0) a = e = 0;
          if (e - a != n) exact[b] = 0;
        }
        lo[b * T + t] = a, hi[b * T + t] = e;
        for (int32_t j = a; j < e; ++j) {
          int32_t& f = first[b * S + j];
          if (last[b * S + j] == 0) f = static_cast<int32_t>(t);
          last[b * S + j] = static_cast<int32_t>(t + 1);
        }
      }
    }
  }
  const bool* seen_row(int64_t b, int64_t t) const {
    return exact[b] ? nullptr : seen.data_ptr<bool>() + (b * T + t) * S;
  }
};

// Dots: c[i][j] = Σ_x a[i][x] · bt[x][j] for R rows of a (row stride lda) and the 16 columns
// [j0, j0 + 16) of bt (row stride ldb), x < dp.
template <int R>
LETHE_INLINE void dots(const float* a, int64_t lda, const float* bt, int64_t ldb, int64_t dp, float* c, int64_t ldc,
                       int64_t j0) {
  f8 acc[R][2] = {};
  for (int64_t x = 0; x < dp; ++x) {
    const f8 b0 = load8(bt + x * ldb + j0), b1 = load8(bt + x * ldb + j0 + kLane);
    for (int i = 0; i < R; ++i) {
      const float ai = a[i * lda + x];
      acc[i][0] += ai * b0, acc[i][1] += ai * b1;
    }
  }
  for (int i = 0; i < R; ++i) store8(c + i * ldc + j0, acc[i][0]), store8(c + i * ldc + j0 + kLane, acc[i][1]);
}

// Combine: c[i][:] += Σ_{x in [x0, x1)} w(i, x) · v[x][:] for R rows, w(i, x) = w[i·wi + x·wx], v
// rows of dp floats (row stride ldv), c rows of dp floats (row stride ldc).
template <int R>
LETHE_INLINE void combine(const float* w, int64_t wi, int64_t wx, const float* v, int64_t ldv, int64_t x0, int64_t x1,
                          int64_t dp, float* c, int64_t ldc) {
  for (int64_t c0 = 0; c0 < dp; c0 += kTile) {
    f8 acc[R][2];
    for (int i = 0; i < R; ++i) acc[i][0] = load8(c + i * ldc + c0), acc[i][1] = load8(c + i * ldc + c0 + kLane);
    for (int64_t x = x0; x < x1; ++x) {
      const f8 v0 = load8(v + x * ldv + c0), v1 = load8(v + x * ldv + c0 + kLane);
      for (int i = 0; i < R; ++i) {
        const float wix = w[i * wi + x * wx];
        acc[i][0] += wix * v0, acc[i][1] += wix * v1;
      }
    }
    for (int i = 0; i < R; ++i) store8(c + i * ldc + c0, acc[i][0]), store8(c + i * ldc + c0 + kLane, acc[i][1]);
  }
}

// Runs f.template operator()<R>(i0) over the tiles of n rows, R = kRows but for the last tile.
template <typename F>
LETHE_INLINE void row_tiles(int64_t n, const F& f) {
  int64_t i0 = 0;
  for (; i0 + kRows <= n; i0 += kRows) f.template operator()<kRows>(i0);
  switch (n - i0) {
    case 3:
      f.template operator()<3>(i0);
      break;
    case 2:
      f.template operator()<2>(i0);
      break;
    case 1:
      f.template operator()<1>(i0);
      break;
  }
}

// One group's operands and results, fp32, padded: rows of dp = padded(d) floats, keys to Sp =
// padded(S). Query rows are (head, position), h / g heads of T positions.
struct GroupCore {
  const Groups& s;
  const Ranges& m;
  int64_t b, M, dp, Sp;
  const int32_t *lo, *hi, *first, *last;

  GroupCore(const Groups& s, const Ranges& m, int64_t grp)
      : s(s),
        m(m),
        b(grp / s.g),
        M(s.r * s.T),
        dp(padded(s.d)),
        Sp(padded(s.S)),
        lo(m.lo.data() + b * s.T),
        hi(m.hi.data() + b * s.T),
        first(m.first.data() + b * s.S),
        last(m.last.data() + b * s.S) {}

  // The keys [j0, j1) that rows [t, t + R) of one head see together.
  std::pair<int64_t, int64_t> keys(int64_t t, int R) const {
    int64_t j0 = s.S, j1 = 0;
    for (int i = 0; i < R; ++i) {
      if (lo[t + i] < hi[t + i]) j0 = std::min<int64_t>(j0, lo[t + i]), j1 = std::max<int64_t>(j1, hi[t + i]);
    }
    return {j0, j1};
  }
  // The positions [t0, t1) that see some key of [j, j + R).
  std::pair<int64_t, int64_t> positions(int64_t j, int R) const {
    int64_t t0 = s.T, t1 = 0;
    for (int i = 0; i < R; ++i) {
      if (first[j + i] < last[j + i]) t0 = std::min<int64_t>(t0, first[j + i]), t1 = std::max<int64_t>(t1, last[j + i]);
    }
    return {t0, t1};
  }

  // c[row][j] = a[row] · bt[:, j] [M × Sp] for the keys each row's tile sees (16-aligned).
  void row_dots(const float* a, const float* bt, float* c) const {
    for (int64_t head = 0; head < s.r; ++head) {
      row_tiles(s.T, [&]<int R>(int64_t t) {
        const auto [j0, j1] = keys(t, R);
        const int64_t row = head * s.T + t;
        for (int64_t j = j0 / kTile * kTile; j < j1; j += kTile)
          dots<R>(a + row * dp, dp, bt, Sp, dp, c + row * Sp, Sp, j);
      });
    }
  }
  // c[row] += Σ_j w[row][j] · v[j] [M × dp] over the keys each row's tile sees (w zero elsewhere).
  void row_combine(const float* w, const float* v, float* c) const {
    for (int64_t head = 0; head < s.r; ++head) {
      row_tiles(s.T, [&]<int R>(int64_t t) {
        const auto [j0, j1] = keys(t, R);
        const int64_t row = head * s.T + t;
        combine<R>(w + row * Sp, Sp, 1, v, dp, j0, j1, dp, c + row * dp, dp);
      });
    }
  }
  // c[j] += Σ_row w[row][j] · x[row] [Sp × dp] over the positions that see each key tile.
  void key_combine(const float* w, const float* x, float* c) const {
    for (int64_t head = 0; head < s.r; ++head) {
      row_tiles(s.S, [&]<int R>(int64_t j) {
        const auto [t0, t1] = positions(j, R);
        combine<R>(w + head * s.T * Sp + j, 1, Sp, x + head * s.T * dp, dp, t0, t1, dp, c + j * dp, dp);
      });
    }
  }

  // Row `row` of the scores becomes its softmax over the keys it sees (zeros elsewhere in its Sp).
  void softmax_row(int64_t row, float* p) const {
    const int64_t t = row % s.T, a = lo[t] / kLane * kLane, e = (hi[t] + kLane - 1) / kLane * kLane;
    if (lo[t] == hi[t]) return (void)std::fill(p, p + Sp, 0.0f);
    const bool* seen = m.seen_row(b, t);
    for (int64_t j = a; j < e; ++j) {
      if (j < lo[t] || j >= hi[t] || (seen && !seen[j])) p[j] = -std::numeric_limits<float>::infinity();
    }
    f8 top = f8{} - std::numeric_limits<float>::infinity();
    for (int64_t j = a; j < e; j += kLane) top = top > load8(p + j) ? top : load8(p + j);
    const float max = simd::lane_max(top), scale = static_cast<float>(s.scale);
    f8 total{};
    for (int64_t j = a; j < e; j += kLane) {
      const f8 x = simd::exp8((load8(p + j) - max) * scale);
      store8(p + j, x), total += x;
    }
    const float inv = 1.0f / simd::lane_total(total);
    for (int64_t j = a; j < e; j += kLane) store8(p + j, load8(p + j) * inv);
    std::fill(p, p + a, 0.0f), std::fill(p + e, p + Sp, 0.0f);
  }
  // Row `row` of dP becomes dS = P ∘ (dP − rowsum(dP ∘ P)) / √d (zeros where P is).
  void softmax_grad_row(int64_t row, const float* p, float* dp_row) const {
    const int64_t t = row % s.T, a = lo[t] / kLane * kLane, e = (hi[t] + kLane - 1) / kLane * kLane;
    if (lo[t] == hi[t]) return (void)std::fill(dp_row, dp_row + Sp, 0.0f);
    f8 dot{};
    for (int64_t j = a; j < e; j += kLane) dot += load8(p + j) * load8(dp_row + j);
    const float rowsum = simd::lane_total(dot), scale = static_cast<float>(s.scale);
    for (int64_t j = a; j < e; j += kLane) store8(dp_row + j, load8(p + j) * (load8(dp_row + j) - rowsum) * scale);
    std::fill(dp_row, dp_row + a, 0.0f), std::fill(dp_row + e, dp_row + Sp, 0.0f);
  }
};

// Copies n rows of d floats (row stride ld) into rows of dp floats, zero-padded, n_pad rows in all;
// or, transposed, into dp rows of n_pad floats.
void pad_rows(const float* x, int64_t ld, int64_t n, int64_t d, float* out, int64_t n_pad, int64_t dp) {
  std::fill(out, out + n_pad * dp, 0.0f);
  for (int64_t i = 0; i < n; ++i) std::copy(x + i * ld, x + i * ld + d, out + i * dp);
}
void pad_transposed(const float* x, int64_t ld, int64_t n, int64_t d, float* out, int64_t n_pad, int64_t dp) {
  std::fill(out, out + dp * n_pad, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t c = 0; c < d; ++c) out[c * n_pad + i] = x[i * ld + c];
  }
}
void unpad_rows(const float* x, int64_t n, int64_t dp, int64_t d, float* out) {
  for (int64_t i = 0; i < n; ++i) std::copy(x + i * dp, x + i * dp + d, out + i * d);
}

// One group forward (fp32 [M, d] q, [S, d] k and v, rows contiguous): o [M, d] and, where p is
// given, the probabilities [M, Sp].
__attribute__((target_clones("arch=x86-64-v3", "default"), flatten)) void group_forward(const GroupCore& c,
                                                                                        const float* q, const float* k,
                                                                                        const float* v, float* o,
                                                                                        float* p,
                                                                                        std::vector<float>& scratch) {
  const int64_t M = c.M, S = c.s.S, d = c.s.d, dp = c.dp, Sp = c.Sp;
  scratch.resize(static_cast<size_t>(M * dp * 2 + 2 * dp * Sp + (p ? 0 : M * Sp)));
  float *qs = scratch.data(), *kt = qs + M * dp, *vs = kt + dp * Sp, *os = vs + Sp * dp, *ps = p ? p : os + M * dp;
  pad_rows(q, d, M, d, qs, M, dp), pad_transposed(k, d, S, d, kt, Sp, dp), pad_rows(v, d, S, d, vs, Sp, dp);
  c.row_dots(qs, kt, ps);
  for (int64_t row = 0; row < M; ++row) c.softmax_row(row, ps + row * Sp);
  std::fill(os, os + M * dp, 0.0f);
  c.row_combine(ps, vs, os);
  unpad_rows(os, M, dp, d, o);
}

// One group backward: dq [M, d], dk and dv [S, d] from do_ [M, d] and the forward's p [M, Sp].
__attribute__((target_clones("arch=x86-64-v3", "default"), flatten)) void group_backward(
    const GroupCore& c, const float* q, const float* k, const float* v, const float* p, const float* do_, float* dq,
    float* dk, float* dv, std::vector<float>& scratch) {
  const int64_t M = c.M, S = c.s.S, d = c.s.d, dp = c.dp, Sp = c.Sp;
  scratch.resize(static_cast<size_t>(3 * M * dp + 3 * Sp * dp + 2 * dp * Sp + M * Sp));
  float *qs = scratch.data(), *dos = qs + M * dp, *dqs = dos + M * dp, *ks = dqs + M * dp, *dks = ks + Sp * dp;
  float *dvs = dks + Sp * dp, *kt = dvs + Sp * dp, *vt = kt + dp * Sp, *ds = vt + dp * Sp;
  pad_rows(q, d, M, d, qs, M, dp), pad_rows(do_, d, M, d, dos, M, dp), pad_rows(k, d, S, d, ks, Sp, dp);
  pad_transposed(k, d, S, d, kt, Sp, dp), pad_transposed(v, d, S, d, vt, Sp, dp);
  std::fill(dqs, dqs + M * dp, 0.0f), std::fill(dks, dks + 2 * Sp * dp, 0.0f);  // dK and dV
  c.key_combine(p, dos, dvs);                                                   // dV = Pᵀ dO
  c.row_dots(dos, vt, ds);                                                      // dP = dO vᵀ
  for (int64_t row = 0; row < M; ++row) c.softmax_grad_row(row, p + row * Sp, ds + row * Sp);
  c.row_combine(ds, ks, dqs);  // dQ = dS k
  c.key_combine(ds, qs, dks);  // dK = dSᵀ q
  unpad_rows(dqs, M, dp, d, dq), unpad_rows(dks, S, dp, d, dk), unpad_rows(dvs, S, dp, d, dv);
}

// fp32 [count, rows, d] contiguous: the group layout of q [B, h, T, d] (or k, v [B, g, S, d]).
at::Tensor group_rows(const at::Tensor& x, int64_t count) {
  return x.to(at::kFloat).contiguous().view({count, -1, x.size(3)});
}

// Group grp's rows of a contiguous fp32 [count, …] tensor.
float* of_group(const at::Tensor& x, int64_t grp) { return x.data_ptr<float>() + grp * x.stride(0); }

// Runs f(first, last) on one range of groups per intra-op thread, each on one core without autograd.
template <typename F>
void for_group_ranges(int64_t count, const F& f) {
  at::parallel_for(0, count, 1, [&](int64_t first, int64_t last) {
    at::NoGradGuard no_grad;
    f(first, last);
  });
}

// Runs f(group, scratch) for every group (for_group_ranges), with one scratch buffer per range.
template <typename F>
void for_groups(int64_t count, const F& f) {
  for_group_ranges(count, [&](int64_t first, int64_t last) {
    std::vector<float> scratch;
    for (int64_t grp = first; grp < last; ++grp) f(grp, scratch);
  });
}

// The attention of q, k, v (Note [CPU attention]): its output [B, h, T, d] in q's dtype, and, for
// backward, the fp32 group rows of q, k, v and the probabilities P [B·g, (h / g)·T, padded(S)].
struct Grouped {
  at::Tensor out, qg, kg, vg, P;
};

Grouped grouped_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Ranges& m, bool keep_p) {
  const Groups s(q, k);
  Grouped r{at::Tensor(), group_rows(q, s.count()), group_rows(k, s.count()), group_rows(v, s.count()),
            keep_p ? at::empty({s.count(), s.r * s.T, padded(s.S)}, q.options().dtype(at::kFloat)) : at::Tensor()};
  at::Tensor O = at::empty({s.count(), s.r * s.T, s.d}, r.qg.options());
  for_groups(s.count(), [&](int64_t grp, std::vector<float>& scratch) {
    const GroupCore c(s, m, grp);
    group_forward(c, of_group(r.qg, grp), of_group(r.kg, grp), of_group(r.vg, grp), of_group(O, grp),
                  keep_p ? of_group(r.P, grp) : nullptr, scratch);
  });
  r.out = O.view({s.B, s.h, s.T, s.d}).to(q.scalar_type());
  return r;
}

// Note [bf16 products]: where the CPU multiplies bf16 natively (AVX-512 BF16), bf16 attention runs
// its products as ATen's bf16 bmm over each thread's range of groups (oneDNN), the scores masked
// and softmaxed in fp32 and rounded once, P kept in bf16: there a bf16 product runs at about four
// times the fp32 kernel's rate (on the project's AVX-512 BF16 instance the ~10M model's bf16 step
// took 284 ms with the fp32 kernel, 251 ms with these products). Without those instructions bf16
// bmm runs at a few GFLOP/s, and bf16 takes the fp32 kernel above.
bool native_bf16() {
  static const bool yes = __builtin_cpu_supports("avx512bf16");
  return yes;
}

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

// Note [bf16 products]'s forward: the output [B, h, T, d] and the grouped bf16 qg [B·g, r·T, d],
// kg, vg [B·g, S, d] and, when kept for backward, P [B·g, r·T, S].
Grouped bmm_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                    bool keep_p) {
  const Groups s(q, k);
  Grouped r{at::Tensor(), q.contiguous().view({s.count(), s.r * s.T, s.d}), k.reshape({s.count(), s.S, s.d}),
            v.reshape({s.count(), s.S, s.d}),
            keep_p ? at::empty({s.count(), s.r * s.T, s.S}, q.options()) : at::Tensor()};
  const at::Tensor out_mask = masked_out(mask, s, q.options());
  const at::Tensor sees_none = mask.defined() ? out_mask.all(-1, true) : at::Tensor();  // their P is 0, as above
  at::Tensor O = at::empty({s.count(), s.r * s.T, s.d}, v.options());
  for_group_ranges(s.count(), [&](int64_t a, int64_t b) {
    at::Tensor scores = at::bmm(r.qg.slice(0, a, b), r.kg.slice(0, a, b).transpose(1, 2)).mul_(s.scale);
    scores.masked_fill_(out_mask.size(0) == 1 ? out_mask : out_mask.slice(0, a, b),
                        -std::numeric_limits<float>::infinity());
    at::Tensor p = keep_p ? r.P.slice(0, a, b) : at::empty_like(scores);
    at::_softmax_out(p, scores, -1, false);
    if (sees_none.defined()) p.masked_fill_(sees_none.slice(0, a, b), 0);
    at::Tensor o = O.slice(0, a, b);
    at::bmm_out(o, p, r.vg.slice(0, a, b));
  });
  r.out = O.view({s.B, s.h, s.T, s.d});
  return r;
}

// Backward: dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − rowsum(dP ∘ P)) / √d, dQ = dS K, dK = dSᵀ Q.
struct Bf16BmmAttention : torch::autograd::Function<Bf16BmmAttention> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            std::optional<at::Tensor> mask) {  // optional: autograd takes no undefined tensor
    const Grouped r = bmm_forward(q.detach(), k.detach(), v.detach(), mask.value_or(at::Tensor()), true);
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

// Note [Decoding attention]: a decode step has one query position, so each group's products are
// (h / g) rows against S keys: bmm's per-matrix BLAS calls (two per group and layer, 256 groups at
// the default generation batch) cost more than the arithmetic. Here, for a few query rows per
// group and without a graph, each group is one loop on one core: the scores q·k / √d of the keys
// the mask lets it see (masked keys are neither multiplied nor exponentiated), the softmax with its
// maximum subtracted, and Σ p v; fp32 tensors only (bf16 takes the grouped path), groups split
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
    const at::Tensor m = mask.value_or(at::Tensor());
    const Grouped r = grouped_forward(q.detach(), k.detach(), v.detach(), Ranges(m, Groups(q, k)), true);
    ctx->save_for_backward({r.qg, r.kg, r.vg, r.P});
    if (m.defined()) ctx->saved_data["mask"] = m;
    ctx->saved_data["shape"] = std::vector<int64_t>{q.size(0), q.size(1), q.size(2), k.size(1), k.size(2)};
    ctx->saved_data["bf16"] = q.scalar_type() == at::kBFloat16;
    return r.out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &qg = saved[0], &kg = saved[1], &vg = saved[2], &P = saved[3];
    const auto shape = ctx->saved_data["shape"].toIntVector();
    const int64_t B = shape[0], h = shape[1], T = shape[2], g = shape[3], S = shape[4], d = qg.size(2);
    const Groups s(B, h, g, T, S, d);
    const auto kept = ctx->saved_data.find("mask");
    const Ranges m(kept == ctx->saved_data.end() ? at::Tensor() : kept->second.toTensor(), s);
    const at::Tensor dO = grad_out[0].to(at::kFloat).contiguous().view({s.count(), s.r * T, d});
    at::Tensor dQ = at::empty_like(qg), dK = at::empty_like(kg), dV = at::empty_like(vg);
    for_groups(s.count(), [&](int64_t grp, std::vector<float>& scratch) {
      group_backward(GroupCore(s, m, grp), of_group(qg, grp), of_group(kg, grp), of_group(vg, grp), of_group(P, grp),
                     of_group(dO, grp), of_group(dQ, grp), of_group(dK, grp), of_group(dV, grp), scratch);
    });
    const auto dtype = ctx->saved_data["bf16"].toBool() ? at::kBFloat16 : at::kFloat;
    return {dQ.view({B, h, T, d}).to(dtype), dK.view({B, g, S, d}).to(dtype), dV.view({B, g, S, d}).to(dtype),
            at::Tensor()};
  }
};

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  const Groups s(q, k);
  if (q.device().is_cpu() && (q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16)) {
    const bool bmm = q.scalar_type() == at::kBFloat16 && native_bf16();  // Note [bf16 products]
    if (at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad())) {
      return bmm ? Bf16BmmAttention::apply(q, k, v, std::optional<at::Tensor>(mask))
                 : CpuAttention::apply(q, k, v, std::optional<at::Tensor>(mask));
    }
    if (q.scalar_type() == at::kFloat && s.r * s.T <= kFewQueryRows && k.stride(3) == 1 && v.stride(3) == 1) {
      return few_query_attention(q, k, v, mask);  // decoding: Note [Decoding attention]
    }
    // Without a graph: nothing kept for backward.
    return bmm ? bmm_forward(q, k, v, mask, false).out : grouped_forward(q, k, v, Ranges(mask, s), false).out;
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

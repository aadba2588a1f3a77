#include "runtime/fused.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <vector>

#include "runtime/simd.h"

namespace lethe {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Note [Fused CPU kernels]: on the CPU each ATen elementwise op is one pass over memory and one
// dispatch, and autograd adds its own passes backward: RMSNorm as ATen ops is 6 kernels forward and
// about 10 backward, the rotary embedding of q or k about 5 and 7. For a model as narrow as the
// embedded default (rows of 128 floats) those passes cost as much as the GEMMs around them. Here
// each is one loop over rows forward and one backward, split over the intra-op threads, with the
// backward written out:
//   RMSNorm, y = x · r · w with r = (mean(x²) + eps)^-½ per row, saves x and r:
//     ∂x = r · (g∘w − x · r² · mean(g∘w∘x)),  ∂w = Σ_rows g ∘ x · r;
//   RoPE, y_i = x_i c_i − x_{i+½d} s_i and y_{i+½d} = x_{i+½d} c_i + x_i s_i (the two halves of cos
//   and sin are equal), is a rotation per pair, so its backward rotates back:
//     ∂x_i = g_i c_i + g_{i+½d} s_i,  ∂x_{i+½d} = g_{i+½d} c_i − g_i s_i.
// The per-row sums run in fp64 (lane_sum); ∂w is ATen's sum over rows of g ∘ x · r, as autograd's
// would be.
// bf16 tensors are read as fp32 and each output rounded to bf16 once, as ATen's ops on the fp32
// upcast (what the model ran before) round their result; the cos and sin tables stay fp32, and
// RMSNorm's weight may be fp32 under a bf16 input (fp32 weights computing in bf16), so a model
// takes the same kernel whether its weights are kept in bf16 or cast to it.
constexpr int64_t kRowGrain = 64;  // rows per parallel task, at least

// Σ_{j<n} term(j) in fp64, in eight lanes (j mod 8) added pairwise at the end: the sums do not
// wait on one another, and the order is fixed, so the result does not depend on the machine.
template <typename F>
double lane_sum(int64_t n, const F& term) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) lane[l] += term(j + l);
  }
  for (; j < n; ++j) lane[j % 8] += term(j);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

bool fused_here(const at::Tensor& x) {
  return x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16);
}

// Runs f with the element type of x (float or c10::BFloat16).
template <typename F>
auto with_element(const at::Tensor& x, const F& f) {
  return x.scalar_type() == at::kFloat ? f(float{}) : f(c10::BFloat16{});
}

// Runs f with the element types of x and w (each float or c10::BFloat16).
template <typename F>
auto with_elements(const at::Tensor& x, const at::Tensor& w, const F& f) {
  return with_element(x, [&]<typename T>(T t) { return with_element(w, [&]<typename W>(W u) { return f(t, u); }); });
}

struct RmsNormFn : torch::autograd::Function<RmsNormFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& w, double eps) {
    const at::Tensor x = x_in.contiguous(), wc = w.contiguous();
    const int64_t D = x.size(-1), N = x.numel() / D;
    at::Tensor y = at::empty_like(x), r = at::empty({N}, x.options().dtype(at::kFloat));
    with_elements(x, wc, [&]<typename T, typename W>(T, W) {
      const T* __restrict xp = x.data_ptr<T>();
      const W* __restrict wp = wc.data_ptr<W>();
      T* __restrict yp = y.data_ptr<T>();
      float* __restrict rp = r.data_ptr<float>();
      at::parallel_for(0, N, kRowGrain, [&](int64_t first, int64_t last) {
        for (int64_t n = first; n < last; ++n) {
          const T* xr = xp + n * D;
          const double ss =
              lane_sum(D, [&](int64_t j) { return static_cast<double>(xr[j]) * static_cast<double>(xr[j]); });
          const float rn = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(D) + eps));
          rp[n] = rn;
          T* yr = yp + n * D;
          for (int64_t j = 0; j < D; ++j)
            yr[j] = static_cast<T>(static_cast<float>(xr[j]) * rn * static_cast<float>(wp[j]));
        }
      });
    });
    ctx->save_for_backward({x, wc, r});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &r = saved[2];
    const at::Tensor g = grad_out[0].contiguous();
    const int64_t D = x.size(-1), N = x.numel() / D;
    const bool want_x = ctx->needs_input_grad(0), want_w = ctx->needs_input_grad(1);
    at::Tensor gx = want_x ? at::empty_like(x) : at::Tensor();
    at::Tensor gxhat =
        want_w ? at::empty({N, D}, x.options().dtype(at::kFloat)) : at::Tensor();  // g ∘ x · r, summed below
    with_elements(x, w, [&]<typename T, typename W>(T, W) {
      const T* __restrict xp = x.data_ptr<T>();
      const W* __restrict wp = w.data_ptr<W>();
      const float* __restrict rp = r.data_ptr<float>();
      const T* __restrict gp = g.data_ptr<T>();
      T* gxp = want_x ? gx.data_ptr<T>() : nullptr;
      float* hp = want_w ? gxhat.data_ptr<float>() : nullptr;
      at::parallel_for(0, N, kRowGrain, [&](int64_t first, int64_t last) {
        for (int64_t n = first; n < last; ++n) {
          const T *xr = xp + n * D, *gr = gp + n * D;
          const float rn = rp[n];
          if (want_w) {
            float* __restrict hr = hp + n * D;
            for (int64_t j = 0; j < D; ++j) hr[j] = static_cast<float>(gr[j]) * (static_cast<float>(xr[j]) * rn);
          }
          if (want_x) {
            const double dot = lane_sum(D, [&](int64_t j) {
              return static_cast<double>(static_cast<float>(gr[j]) * static_cast<float>(wp[j])) *
                     static_cast<double>(xr[j]);
            });
            const float c = static_cast<float>(static_cast<double>(rn) * rn * dot / static_cast<double>(D));
            T* __restrict gxr = gxp + n * D;
            for (int64_t j = 0; j < D; ++j) {
              gxr[j] = static_cast<T>(
                  rn * (static_cast<float>(gr[j]) * static_cast<float>(wp[j]) - static_cast<float>(xr[j]) * c));
            }
          }
        }
      });
    });
    return {gx, want_w ? gxhat.sum(0).view(w.sizes()).to(w.scalar_type()) : at::Tensor(), at::Tensor()};
  }
};

// y (or ∂x) of one row of d values: forward with sign +1, backward (the inverse rotation) with −1.
template <typename T>
inline void rotate_row(const T* __restrict x, const float* __restrict c, const float* __restrict s, T* __restrict y,
                       int64_t d, float sign) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = static_cast<float>(x[i]), b = static_cast<float>(x[i + half]);
    y[i] = static_cast<T>(a * c[i] - sign * b * s[i]);
    y[i + half] = static_cast<T>(b * c[i + half] + sign * a * s[i + half]);
  }
}

// Rotates every row of x [B, h, T, d] into y (a [B, h, T, d] view), each with unit stride in d,
// with the tables c, s [B or 1, 1, T, d]: forward with sign +1, backward with −1.
void rotate_rows(const at::Tensor& x, const at::Tensor& y, const at::Tensor& c, const at::Tensor& s, float sign) {
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), d = x.size(3);
  const bool shared = c.size(0) == 1;  // one table for every row of the batch
  const float *cp = c.data_ptr<float>(), *sp = s.data_ptr<float>();
  with_element(x, [&]<typename E>(E) {
    const E* xp = x.data_ptr<E>();
    E* yp = y.data_ptr<E>();
    at::parallel_for(0, B * H * T, kRowGrain, [&](int64_t first, int64_t last) {
      for (int64_t n = first; n < last; ++n) {
        const int64_t b = n / (H * T), h = n / T % H, t = n % T;
        const int64_t table = ((shared ? 0 : b) * T + t) * d;
        rotate_row(xp + b * x.stride(0) + h * x.stride(1) + t * x.stride(2), cp + table, sp + table,
                   yp + b * y.stride(0) + h * y.stride(1) + t * y.stride(2), d, sign);
      }
    });
  });
}

struct RopeFn : torch::autograd::Function<RopeFn> {
  // x [B, h, T, d] with unit stride in d → contiguous [B, h, T, d].
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& cos,
                            const at::Tensor& sin) {
    const at::Tensor x = x_in.stride(3) == 1 ? x_in : x_in.contiguous();
    const at::Tensor c = cos.contiguous(), s = sin.contiguous();
    at::Tensor y = at::empty(x.sizes(), x.options());
    rotate_rows(x, y, c, s, 1.0f);
    ctx->save_for_backward({c, s});
    return y;
  }

  // ∂x is laid out [B, T, h, d] (returned transposed): the layout of the projection that made x.
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor g = grad_out[0].contiguous();
    const at::Tensor gx = at::empty({g.size(0), g.size(2), g.size(1), g.size(3)}, g.options()).transpose(1, 2);
    rotate_rows(g, gx, saved[0], saved[1], -1.0f);
    return {gx, at::Tensor(), at::Tensor()};
  }
};

// SwiGLU, y = silu(a) ∘ b with silu(a) = a · σ(a), σ(a) = 1 / (1 + e^−a), one pass over its rows
// each way (ATen: silu, mul forward; silu_backward and two muls backward, silu(a) kept in
// between): ∂a = g ∘ b ∘ σ ∘ (1 + a (1 − σ)) (ATen's silu_backward), ∂b = g ∘ silu(a).
// a and b are [N, f] rows with their own row strides (the two halves of the fused gate/up
// projection); y and the gradients are contiguous. Eight values at a time (simd.h), the tail of a
// row as a part vector.
struct SwigluRows {
  const void *a, *b, *g;  // g: the gradient of y (backward)
  void *y, *da, *db;      // y forward; da, db backward
  int64_t f, a_row, b_row;
};

// The eight values from p on (the first `part` of them at a row's end), and their store.
template <typename T>
LETHE_INLINE simd::f8 load_at(const T* p, int part) {
  return part == simd::kLane ? simd::load8(p) : simd::load_part(p, part);
}
template <typename T>
LETHE_INLINE void store_at(T* p, simd::f8 v, int part) {
  part == simd::kLane ? simd::store8(p, v) : simd::store_part(p, v, part);
}

template <typename T, bool Backward>
LETHE_INLINE void swiglu_rows(const SwigluRows& w, int64_t first, int64_t last) {
  using simd::f8;
  for (int64_t n = first; n < last; ++n) {
    const T *a = static_cast<const T*>(w.a) + n * w.a_row, *b = static_cast<const T*>(w.b) + n * w.b_row;
    const int64_t row = n * w.f;  // of y, g and the gradients
    for (int64_t j = 0; j < w.f; j += simd::kLane) {
      const int part = static_cast<int>(std::min<int64_t>(simd::kLane, w.f - j));
      const f8 av = load_at(a + j, part), bv = load_at(b + j, part), sig = 1.0f / (1.0f + simd::exp8(-av));
      const f8 silu = av * sig;
      if constexpr (Backward) {
        const f8 gv = load_at(static_cast<const T*>(w.g) + row + j, part);
        store_at(static_cast<T*>(w.da) + row + j, gv * bv * sig * (1.0f + av * (1.0f - sig)), part);
        store_at(static_cast<T*>(w.db) + row + j, gv * silu, part);
      } else {
        store_at(static_cast<T*>(w.y) + row + j, silu * bv, part);
      }
    }
  }
}

template <bool Backward>
__attribute__((target_clones("arch=x86-64-v3", "default"), flatten)) void swiglu_range(const SwigluRows& w, bool bf16,
                                                                                       int64_t first, int64_t last) {
  bf16 ? swiglu_rows<c10::BFloat16, Backward>(w, first, last) : swiglu_rows<float, Backward>(w, first, last);
}

struct SwigluFn : torch::autograd::Function<SwigluFn> {
  // [N, f] views with unit stride in f (any row stride), of one dtype.
  static std::pair<at::Tensor, at::Tensor> rows(const at::Tensor& a, const at::Tensor& b) {
    const auto as_rows = [](const at::Tensor& x) {
      const at::Tensor r = x.reshape({-1, x.size(-1)});
      return r.stride(1) == 1 ? r : r.contiguous();
    };
    return {as_rows(a), as_rows(b)};
  }

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b) {
    const auto [ar, br] = rows(a, b);
    at::Tensor y = at::empty(a.sizes(), a.options());
    const SwigluRows w{ar.data_ptr(), br.data_ptr(), nullptr,      y.data_ptr(), nullptr,
                       nullptr,       ar.size(1),    ar.stride(0), br.stride(0)};
    at::parallel_for(0, ar.size(0), kRowGrain, [&](int64_t first, int64_t last) {
      swiglu_range<false>(w, a.scalar_type() == at::kBFloat16, first, last);
    });
    ctx->save_for_backward({a, b});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto [ar, br] = rows(saved[0], saved[1]);
    const at::Tensor g = grad_out[0].contiguous();
    at::Tensor da = at::empty(saved[0].sizes(), g.options()), db = at::empty(saved[1].sizes(), g.options());
    const SwigluRows w{ar.data_ptr(), br.data_ptr(), g.data_ptr(), nullptr,     da.data_ptr(),
                       db.data_ptr(), ar.size(1),    ar.stride(0), br.stride(0)};
    at::parallel_for(0, ar.size(0), kRowGrain, [&](int64_t first, int64_t last) {
      swiglu_range<true>(w, g.scalar_type() == at::kBFloat16, first, last);
    });
    return {da, db};
  }
};

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return at::cat({x.narrow(-1, h, h).neg(), x.narrow(-1, 0, h)}, -1);
}

// Note [Sum of squares]: the gradient norm's Σ x² in fp64 as one read of x (float or bf16): fixed
// blocks of kSquaresBlock elements, each a lane_sum, and the blocks' sums added in order, so the
// result does not depend on the number of threads. ATen's x.to(double).pow(2).sum() writes two fp64
// copies of x first; sum(kDouble) of a float tensor converts element by element.
constexpr int64_t kSquaresBlock = 1 << 14;

}  // namespace

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  if (fused_here(x) && fused_here(w)) return RmsNormFn::apply(x, w, eps);
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor y = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (y * w).to(x.scalar_type());
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  if (fused_here(x) && cos.scalar_type() == at::kFloat && cos.size(1) == 1) return RopeFn::apply(x, cos, sin);
  at::Tensor xf = x.to(at::kFloat);
  return (xf * cos + rotate_half(xf) * sin).to(x.scalar_type());
}

at::Tensor swiglu(const at::Tensor& a, const at::Tensor& b) {
  if (fused_here(a) && a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes()) return SwigluFn::apply(a, b);
  return at::silu(a) * b;
}

at::Tensor sum_of_squares(const at::Tensor& x) {
  if (!fused_here(x)) return x.to(at::kFloat).pow(2).sum(at::kDouble);  // squares in fp32, summed in fp64
  const at::Tensor xc = x.contiguous();
  const int64_t n = xc.numel(), blocks = (n + kSquaresBlock - 1) / kSquaresBlock;
  std::vector<double> sums(static_cast<size_t>(blocks));
  with_element(xc, [&]<typename T>(T) {
    const T* xp = xc.data_ptr<T>();
    at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
      for (int64_t b = first; b < last; ++b) {
        const T* block = xp + b * kSquaresBlock;
        sums[b] = lane_sum(std::min(kSquaresBlock, n - b * kSquaresBlock), [&](int64_t j) {
          const double v = static_cast<float>(block[j]);
          return v * v;
        });
      }
    });
  });
  double total = 0;
  for (double v : sums) total += v;
  return at::scalar_tensor(total, at::kDouble);
}

}  // namespace lethe

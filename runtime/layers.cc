#include "runtime/layers.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "base/torch_compat.h"
#include "runtime/tp_ops.h"

namespace lethe {

uint64_t name_hash(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a: the same on any platform
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

namespace {

at::Generator generator_for(const std::string& name, uint64_t seed) { return at::detail::createCPUGenerator(seed ^ name_hash(name)); }

}  // namespace

// Note [Shard-local init]: LibTorch's CPU normal_ for a contiguous float tensor of n ≥ 16 values
// draws n uniforms in order and turns each aligned group of 16 into normals (Box-Muller within the
// group); when 16 does not divide n it then draws 16 more uniforms and recomputes the last 16
// values from them. So drawing the stream in pieces whose sizes are multiples of 16, consuming the
// n mod 16 unused uniforms and drawing the last 16 apart, gives the whole tensor's values exactly.
// Each piece is streamed through and only what falls inside this rank's shard is kept: peak memory
// is the shard plus one piece. Model.ShardLocalInitEqualsTheFullDraw checks it at tp 1, 2 and 4.
at::Tensor init_shard(const std::string& name, const std::vector<int64_t>& global_shape, int split_dim, double std,
                      uint64_t seed, const Communicator& tp) {
  std::vector<int64_t> local = global_shape;
  if (split_dim >= 0) local[split_dim] /= tp.size();
  if (std == 0.0) return at::ones(local, at::kFloat);
  at::Generator gen = generator_for(name, seed);
  int64_t n = 1;
  for (int64_t d : global_shape) n *= d;
  if (split_dim < 0 || tp.size() == 1 || n < 16) {
    at::Tensor full = at::normal(0.0, std, global_shape, gen, at::kFloat);
    if (split_dim < 0 || tp.size() == 1) return full;
    return full.narrow(split_dim, tp.rank() * local[split_dim], local[split_dim]).clone(at::MemoryFormat::Contiguous);
  }
  // The whole tensor as [outer, G, inner] with G the split dim; the shard is columns [c0, c0 + c) of G.
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < split_dim; ++d) outer *= global_shape[d];
  for (size_t d = split_dim + 1; d < global_shape.size(); ++d) inner *= global_shape[d];
  const int64_t G = global_shape[split_dim], c = local[split_dim], c0 = tp.rank() * c;
  const int64_t row = G * inner, kept = c * inner;  // one outer row of the whole tensor / of the shard
  at::Tensor shard = at::empty(local, at::kFloat);
  float* out = shard.data_ptr<float>();
  // Copies values of whole-tensor positions [first, first + len) that lie in the shard.
  auto keep = [&](int64_t first, const at::Tensor& values) {
    const float* in = values.data_ptr<float>();
    const int64_t last = first + values.numel();
    for (int64_t o = first / row; o <= (last - 1) / row && o < outer; ++o) {
      const int64_t lo = std::max(first, o * row + c0 * inner), hi = std::min(last, o * row + c0 * inner + kept);
      if (lo < hi) std::copy(in + (lo - first), in + (hi - first), out + o * kept + (lo - o * row - c0 * inner));
    }
  };
  const int64_t aligned = n / 16 * 16, piece = 16 << 16;
  for (int64_t at = 0; at < aligned; at += piece) {
    keep(at, at::normal(0.0, std, {std::min(piece, aligned - at)}, gen, at::kFloat));
  }
  if (n % 16 != 0) {
    at::empty({n - aligned}, at::kFloat).uniform_(0, 1, gen);  // the uniforms the tail recompute discards
    keep(n - 16, at::normal(0.0, std, {16}, gen, at::kFloat));
  }
  return shard;
}

// Note [LoRA under tp] (PEFT's tp_layer.py): on a column-parallel base, A is replicated and B is
// split like the base's output. u = x Aᵀ is computed on every tp rank from the replicated input;
// copy_to_tp(u) all-reduces its gradient in backward, so A's gradient (and the input's) is whole
// and the same on every rank. On a row-parallel base, A is split like the input, u = x_par Aᵀ is
// all-reduced (reduce_from_tp) and B is replicated. Either way the adapter's output is added to
// the base's, after its reduction. The dropout mask is drawn for the whole input from
// (dropout_seed, key) on every tp rank and sliced for a split input, so tp ranks use one mask and
// tp 2 equals tp 1 with dropout on.
namespace {

at::Tensor lora_input(const at::Tensor& x, const Lora& l, uint64_t seed, Communicator& tp, bool split_input) {
  if (seed == 0 || l.dropout == 0.0) return x;
  std::vector<int64_t> shape = x.sizes().vec();
  if (split_input) shape.back() *= tp.size();
  at::Generator gen = compat::generator(x.device(), seed ^ l.key);
  at::Tensor keep = at::empty(shape, x.options().dtype(at::kFloat)).bernoulli_(1.0 - l.dropout, gen);
  if (split_input) keep = keep.narrow(-1, tp.rank() * x.size(-1), x.size(-1));
  return x * keep.div_(1.0 - l.dropout).to(x.scalar_type());
}

}  // namespace

at::Tensor ColumnParallelLinear::operator()(const at::Tensor& x, at::ScalarType compute, Communicator& tp,
                                            uint64_t dropout_seed) const {
  return column_parallel({this}, x, compute, tp, dropout_seed)[0];
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Note [Concatenated weights are not kept]: layers that read the same input run as one GEMM over
// their weights concatenated. Autograd would keep that concatenation — a copy of the attention's
// and the MLP's input projections, half to two thirds of a Llama's weights — for the input's
// gradient until backward, in every forward with gradients (docs/plan.md counts none: on the
// 246M model of benchmarks/memory_vs_plan an fp32 step's peak was 1747 MB with it, 1275 MB
// without). ConcatLinear keeps the weights themselves and concatenates them again in backward,
// a copy of the weights per backward. Its products are autograd's for
// y = x · cat(ws)ᵀ (Linear's matmul folded to 2-D, MmBackward's operands), so outputs and
// gradients are the same bit for bit (Model.ConcatLinearIsAutogradsLinearBitForBit).
struct ConcatLinear : torch::autograd::Function<ConcatLinear> {
  // x [.., in] in the compute dtype; ws [out_i, in] in their own dtype.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList ws, at::ScalarType compute) {
    std::vector<at::Tensor> saved{x};
    saved.insert(saved.end(), ws.begin(), ws.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["compute"] = static_cast<int64_t>(compute);
    return at::linear(x, at::cat(ws).to(compute));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const std::vector<at::Tensor> ws(saved.begin() + 1, saved.end());
    const auto compute = static_cast<at::ScalarType>(ctx->saved_data["compute"].toInt());
    const at::Tensor g2 = grad_out[0].reshape({-1, grad_out[0].size(-1)});
    variable_list grads(saved.size());
    if (ctx->needs_input_grad(0)) grads[0] = g2.mm(at::cat(ws).to(compute)).view(x.sizes());
    bool any_weight = false;
    for (size_t i = 1; i < saved.size(); ++i) any_weight = any_weight || ctx->needs_input_grad(i);
    if (any_weight) {
      const at::Tensor gw = g2.t().mm(x.reshape({-1, x.size(-1)}));  // [Σ out_i, in]
      int64_t row = 0;
      for (size_t i = 0; i < ws.size(); ++i) {
        grads[i + 1] = gw.narrow(0, row, ws[i].size(0)).to(ws[i].scalar_type());
        row += ws[i].size(0);
      }
    }
    grads.push_back(at::Tensor());  // compute
    return grads;
  }
};

}  // namespace

std::vector<at::Tensor> column_parallel(std::initializer_list<const ColumnParallelLinear*> layers, const at::Tensor& x,
                                        at::ScalarType compute, Communicator& tp, uint64_t dropout_seed) {
  std::vector<at::Tensor> weights;
  std::vector<int64_t> widths;
  for (const ColumnParallelLinear* l : layers) {
    weights.push_back(l->w);
    widths.push_back(l->w.size(0));
  }
  const at::Tensor xc = copy_to_tp(x, tp).to(compute);
  // Without gradients (evaluation, generation, the reference) there is no graph to keep anything
  // in: the plain product, with no autograd node per projection on the decoding path.
  at::Tensor y = weights.size() == 1             ? at::linear(xc, weights[0].to(compute))
                 : !at::GradMode::is_enabled() ? at::linear(xc, at::cat(weights).to(compute))
                                               : ConcatLinear::apply(xc, at::TensorList(weights), compute);
  std::vector<at::Tensor> out = weights.size() == 1 ? std::vector<at::Tensor>{y} : y.split_with_sizes(widths, -1);
  size_t i = 0;
  for (const ColumnParallelLinear* l : layers) {  // adapters add to their own layer's output
    const Lora& a = l->lora;
    if (a.on()) {
      at::Tensor u = at::linear(lora_input(x, a, dropout_seed, tp, false).to(compute), a.a.to(compute));
      out[i] = out[i] + at::linear(copy_to_tp(u, tp), a.b.to(compute)) * a.scale;
    }
    ++i;
  }
  return out;
}

at::Tensor RowParallelLinear::operator()(const at::Tensor& x_par, at::ScalarType compute, Communicator& tp,
                                         uint64_t dropout_seed) const {
  at::Tensor y = reduce_from_tp(at::linear(x_par.to(compute), w.to(compute)), tp);
  if (!lora.on()) return y;
  at::Tensor u = reduce_from_tp(at::linear(lora_input(x_par, lora, dropout_seed, tp, true).to(compute), lora.a.to(compute)), tp);
  return y + at::linear(u, lora.b.to(compute)) * lora.scale;
}

at::Tensor VocabParallelEmbedding::operator()(const at::Tensor& ids_BT, at::ScalarType compute, Communicator& tp) const {
  const int64_t v = w.size(0);
  at::Tensor local = ids_BT - vocab_start;
  at::Tensor in_range = local.ge(0) & local.lt(v);
  at::Tensor out = at::embedding(w.to(compute), local.clamp(0, v - 1));
  if (tp.size() > 1) out = out * in_range.unsqueeze(-1).to(compute);
  return reduce_from_tp(out, tp);
}

}  // namespace lethe

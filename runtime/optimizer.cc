#include "runtime/optimizer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "runtime/fused.h"

namespace lethe {

std::pair<int64_t, int64_t> zero1_rows(int64_t rows, int k, int dp) {
  const int64_t per = (rows + dp - 1) / dp;
  const int64_t start = std::min(rows, per * k);
  return {start, std::min(rows, start + per) - start};
}

AdamW::AdamW(Llama& model, const AdamHyper& hyper, const Mesh& mesh)
    : params_(&model.trained()), buckets_mp_(&model.buckets()), dropped_(model.trained().size(), false), hyper_(hyper),
      mesh_(&mesh), zero1_(mesh.shard_moments()),
      bucket_elements_(std::max<int64_t>(1, static_cast<int64_t>(mesh.bucket_mb() * (1 << 20) / 4))) {
  if (mixed_precision()) {
    init_mixed();
    return;
  }
  for (const Param& p : *params_) {
    const int64_t rows = p.value.size(0);
    rows_.push_back(zero1_ ? zero1_rows(rows, mesh.dp_rank(), mesh.dp_size()) : std::make_pair(int64_t{0}, rows));
    at::Tensor chunk = p.value.narrow(0, rows_.back().first, rows_.back().second);
    m_.push_back(at::zeros_like(chunk, at::kFloat));
    v_.push_back(at::zeros_like(chunk, at::kFloat));
  }
  if (!zero1_ && mesh.dp_size() > 1) make_buckets();
}

AdamW::~AdamW() {
  for (auto& [tensor, id] : hooks_) tensor.remove_hook(id);
}

// Note [Overlapped gradient reduction]: buckets are filled in reverse parameter order, roughly the
// order in which backward produces gradients. Each parameter has a hook that, when armed, copies
// its complete gradient (what AccumulateGrad is about to store: the earlier micro-batches' sum plus
// this one) into its bucket; a bucket whose gradients are all in starts its all-reduce at once,
// and buckets start strictly in order, so every rank issues the same collectives in the same order
// even if hooks ran in another. step() fills and starts what is left (parameters without a
// gradient, or tensors replaced since the hooks were set), waits for all, and copies the sums back
// into .grad. Hooks run on the thread that called backward (CPU autograd), so MPI is still called
// from one thread. On MPI a bucket progresses only inside MPI calls: every hook polls the buckets
// in flight.
void AdamW::make_buckets() {
  const size_t n = params_->size();
  bucket_of_.resize(n);
  offset_of_.resize(n);
  filled_.assign(n, false);
  int64_t filled = 0;
  for (size_t r = 0; r < n; ++r) {
    const size_t i = n - 1 - r;
    const int64_t numel = (*params_)[i].value.numel();
    if (buckets_.empty() || (filled > 0 && filled + numel > bucket_elements_)) {
      buckets_.emplace_back();
      filled = 0;
    }
    buckets_.back().params.push_back(i);
    bucket_of_[i] = buckets_.size() - 1;
    offset_of_[i] = filled;
    filled += numel;
  }
  for (Bucket& b : buckets_) {
    int64_t total = 0;
    for (size_t i : b.params) total += (*params_)[i].value.numel();
    b.flat = at::zeros({total}, (*params_)[b.params.front()].value.options().requires_grad(false));
  }
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& t = (*params_)[i].value;
    hooks_.emplace_back(t, t.register_hook([this, i](const at::Tensor& g) { on_grad(i, g); }));
  }
}

void AdamW::overlap_next_backward() { armed_ = !buckets_.empty() && mesh_->overlap_grad_reduce(); }  // fp32 path

void AdamW::on_grad(size_t i, const at::Tensor& g) {
  if (!armed_ || filled_[i]) return;
  at::NoGradGuard no_grad;
  const Param& p = (*params_)[i];
  Bucket& b = buckets_[bucket_of_[i]];
  at::Tensor dst = b.flat.narrow(0, offset_of_[i], p.value.numel()).view(p.value.sizes());
  const at::Tensor& earlier = p.value.grad();
  if (earlier.defined()) {
    at::add_out(dst, earlier, g);
  } else {
    dst.copy_(g);
  }
  filled_[i] = true;
  ++b.ready;
  launch_ready_buckets();
  for (Bucket& other : buckets_) {
    if (other.pending) other.pending->poll();
  }
}

void AdamW::launch_ready_buckets() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].ready == buckets_[next_launch_].params.size()) {
    Bucket& b = buckets_[next_launch_++];
    b.pending = mesh_->dp().all_reduce_async(b.flat, ReduceOp::kSum);
  }
}

void AdamLists::add(const at::Tensor& weight, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                    const at::Tensor& grad, bool decay) {
  w.push_back(weight);
  m.push_back(exp_avg);
  v.push_back(exp_avg_sq);
  g.push_back(grad);
  decays.push_back(decay);
  if (decay) decayed.push_back(weight);
}

namespace {

// Note [One-pass AdamW]: on the CPU the _foreach_ ops of LibTorch 1.13 run tensor by tensor and op
// by op: nine passes over every parameter's state (ten with clipping), each tensor of fewer than
// 32 k values on one thread, and a temporary for the denominator. Here each value is read and
// written once, in blocks of kAdamBlock values spread over the intra-op threads, with the same
// formulas in fp32 and the same scalars rounded to fp32 as the ATen ops take them:
//   g ← g · clip;  w ← w · (1 − lr·wd) (decayed tensors);  m ← m·β₁ + (1 − β₁)·g;
//   v ← v·β₂ + (1 − β₂)·g·g;  w ← w + (−lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε).
// ATen's add (m + α·g) and addcmul (v + α·g·g) are fused multiply-adds, written here as std::fma
// (exact on every machine), and the file is compiled without other contractions, so the update is
// the ops' bit for bit (Train.Fp32AdamWIsTheReferenceUpdateBitForBit). Every layout (dp, ZeRO-1,
// tp, bf16 masters) takes this same per-value arithmetic.
constexpr int64_t kAdamBlock = 1 << 14;

struct AdamScalars {
  float clip, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, sqrt_bc2, eps, step_size;
};

struct AdamBlock {
  float *w, *m, *v, *g;
  int64_t n;
  bool decay;
};

__attribute__((target_clones("arch=x86-64-v3", "default"))) void adamw_block(const AdamBlock& b, const AdamScalars& s) {
  const float decay = b.decay ? s.decay : 1.0f;
  float* __restrict w = b.w, * __restrict m = b.m, * __restrict v = b.v, * __restrict g = b.g;
  for (int64_t j = 0; j < b.n; ++j) {
    const float gj = g[j] * s.clip;
    g[j] = gj;
    const float mj = std::fma(gj, s.one_minus_beta1, m[j] * s.beta1);
    const float vj = std::fma(s.one_minus_beta2 * gj, gj, v[j] * s.beta2);
    m[j] = mj, v[j] = vj;
    w[j] = w[j] * decay + s.step_size * mj / (std::sqrt(vj) / s.sqrt_bc2 + s.eps);
  }
}

bool one_pass_here(const AdamLists& l) {
  for (const auto* list : {&l.w, &l.m, &l.v, &l.g}) {
    for (const at::Tensor& t : *list) {
      if (!t.device().is_cpu() || t.scalar_type() != at::kFloat || !t.is_contiguous()) return false;
    }
  }
  return true;
}

}  // namespace

void adamw_update(AdamLists& l, double lr, const AdamHyper& hyper, int64_t step, const at::Tensor& clip) {
  if (l.w.empty()) return;
  const double bc1 = 1.0 - std::pow(hyper.beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(hyper.beta2, static_cast<double>(step));
  if (one_pass_here(l)) {  // Note [One-pass AdamW]
    const auto f = [](double x) { return static_cast<float>(x); };
    const AdamScalars s{clip.defined() ? f(clip.item<double>()) : 1.0f,
                        f(1.0 - lr * hyper.weight_decay),
                        f(hyper.beta1),
                        f(1.0 - hyper.beta1),
                        f(hyper.beta2),
                        f(1.0 - hyper.beta2),
                        f(std::sqrt(bc2)),
                        f(hyper.eps),
                        f(-lr / bc1)};
    std::vector<AdamBlock> blocks;
    for (size_t i = 0; i < l.w.size(); ++i) {
      const int64_t n = l.w[i].numel();
      for (int64_t o = 0; o < n; o += kAdamBlock) {
        blocks.push_back({l.w[i].data_ptr<float>() + o, l.m[i].data_ptr<float>() + o, l.v[i].data_ptr<float>() + o,
                          l.g[i].data_ptr<float>() + o, std::min(kAdamBlock, n - o),
                          l.decays[i] && hyper.weight_decay > 0});
      }
    }
    at::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t first, int64_t last) {
      for (int64_t b = first; b < last; ++b) adamw_block(blocks[b], s);
    });
    return;
  }
  if (clip.defined()) {
    for (at::Tensor& g : l.g) g.mul_(clip);
  }
  // torch.optim.AdamW's foreach form over groups of tensors no larger together than the largest
  // one, so that its one temporary, the denominator, is at most that tensor's size (docs/plan.md,
  // the optimizer step), not every parameter's at once.
  int64_t cap = 0;
  for (const at::Tensor& t : l.w) cap = std::max(cap, t.numel());
  for (size_t first = 0, last = 0; first < l.w.size(); first = last) {
    AdamLists part;
    for (int64_t n = 0; last < l.w.size() && (last == first || n + l.w[last].numel() <= cap); n += l.w[last++].numel()) {
      part.add(l.w[last], l.m[last], l.v[last], l.g[last], l.decays[last]);
    }
    if (hyper.weight_decay > 0 && !part.decayed.empty()) at::_foreach_mul_(part.decayed, 1.0 - lr * hyper.weight_decay);
    at::_foreach_mul_(part.m, hyper.beta1);
    at::_foreach_add_(part.m, part.g, 1.0 - hyper.beta1);
    at::_foreach_mul_(part.v, hyper.beta2);
    at::_foreach_addcmul_(part.v, part.g, part.g, 1.0 - hyper.beta2);
    std::vector<at::Tensor> denom = at::_foreach_sqrt(part.v);
    at::_foreach_div_(denom, std::sqrt(bc2));
    at::_foreach_add_(denom, hyper.eps);
    at::_foreach_addcdiv_(part.w, part.m, denom, -lr / bc1);
  }
}

at::Tensor clip_coefficient(const at::Tensor& norm, double max_norm) {
  if (max_norm <= 0) return at::Tensor();
  return at::where(norm > max_norm, max_norm / (norm + 1e-6), at::ones_like(norm));
}

void AdamW::drop_grad(size_t i) {
  at::Tensor& g = (*params_)[i].value.mutable_grad();
  if (mixed_precision()) {
    g.zero_();  // a view of the gradient bucket: stays in place
    dropped_[i] = true;
  } else {
    g = at::Tensor();
  }
}

std::vector<StateSlice> AdamW::state_of(size_t i) {
  if (mixed_precision()) return mixed_state_of(i);
  return {{"exp_avg", zero1_, m_[i].view({-1})}, {"exp_avg_sq", zero1_, v_[i].view({-1})}};
}

std::pair<int64_t, int64_t> AdamW::owned_range(size_t i, int k) const {
  if (mixed_precision()) return mixed_owned_range(i, k);
  const at::Tensor& value = (*params_)[i].value;
  const int64_t row = value.numel() / std::max<int64_t>(1, value.size(0));
  auto [start, count] = zero1_rows(value.size(0), k, mesh_->dp_size());
  return {start * row, count * row};
}

// Completes the dp sum of every gradient (Note [Overlapped gradient reduction]).
void AdamW::all_reduce_buckets() {
  started_in_backward_ = next_launch_;
  for (Bucket& b : buckets_) {
    for (size_t i : b.params) {
      if (filled_[i]) continue;
      const at::Tensor& g = (*params_)[i].value.grad();
      at::Tensor dst = b.flat.narrow(0, offset_of_[i], (*params_)[i].value.numel());
      if (g.defined()) {
        dst.copy_(g.reshape({-1}));
      } else {
        dst.zero_();
      }
      filled_[i] = true;
      ++b.ready;
    }
  }
  launch_ready_buckets();
  for (Bucket& b : buckets_) {
    b.pending->wait();
    b.pending.reset();
    for (size_t i : b.params) {
      at::Tensor& g = (*params_)[i].value.mutable_grad();
      if (g.defined()) g.copy_(b.flat.narrow(0, offset_of_[i], g.numel()).view(g.sizes()));
    }
    b.ready = 0;
  }
  filled_.assign(filled_.size(), false);
  next_launch_ = 0;
  armed_ = false;
}

at::Tensor AdamW::step(double lr, double max_norm) {
  at::NoGradGuard no_grad;
  ++step_;
  if (mixed_precision()) return mixed_step(lr, max_norm);
  if (zero1_) return zero1_step(lr, max_norm);
  if (mesh_->dp_size() > 1) all_reduce_buckets();
  std::vector<at::Tensor> grads;
  for (const Param& p : *params_) grads.push_back(p.value.grad());
  const at::Tensor norm = grad_norm(*params_, grads, *mesh_, /*dp_sharded=*/false);
  const at::Tensor clip = clip_coefficient(norm, max_norm);
  AdamLists lists;
  for (size_t i = 0; i < params_->size(); ++i) {
    Param& p = (*params_)[i];
    if (!grads[i].defined()) continue;
    lists.add(p.value, m_[i], v_[i], grads[i], p.decay);
  }
  adamw_update(lists, lr, hyper_, step_, clip);
  for (Param& p : *params_) p.value.mutable_grad() = at::Tensor();
  return norm;
}

// Note [ZeRO-1 layout]: the flat buffer is dp segments of equal length S; segment k holds, for
// every parameter with a gradient, the rows dp rank k owns, in parameter order (zero padded). A
// reduce-scatter leaves each rank the summed gradient of its own segment; after the update an
// all-gather of the segments gives every rank every updated chunk.
at::Tensor AdamW::zero1_step(double lr, double max_norm) {
  const int dp = mesh_->dp_size(), me = mesh_->dp_rank();
  std::vector<size_t> active;
  for (size_t i = 0; i < params_->size(); ++i) {
    if ((*params_)[i].value.grad().defined()) active.push_back(i);
  }
  auto chunk = [&](const at::Tensor& t, int k) {
    auto [start, count] = zero1_rows(t.size(0), k, dp);
    return t.narrow(0, start, count).reshape({-1});
  };
  int64_t seg = 0;
  for (int k = 0; k < dp; ++k) {
    int64_t n = 0;
    for (size_t i : active) n += chunk((*params_)[i].value, k).numel();
    seg = std::max(seg, n);
  }
  const auto f32 = at::TensorOptions(mesh_->device()).dtype(at::kFloat);
  at::Tensor send = at::zeros({dp * seg}, f32);
  for (int k = 0; k < dp; ++k) {
    int64_t off = k * seg;
    for (size_t i : active) {
      at::Tensor g = chunk((*params_)[i].value.grad(), k);
      send.narrow(0, off, g.numel()).copy_(g);
      off += g.numel();
    }
  }
  at::Tensor mine = at::empty({seg}, f32);
  mesh_->dp().reduce_scatter(mine, send, ReduceOp::kSum);
  send = at::Tensor();  // freed before the all-gather's buffer exists

  std::vector<at::Tensor> grads(params_->size());
  int64_t off = 0;
  for (size_t i : active) {
    const at::Tensor& value = (*params_)[i].value;
    std::vector<int64_t> shape = value.sizes().vec();
    shape[0] = rows_[i].second;
    const int64_t n = rows_[i].second * (value.numel() / std::max<int64_t>(1, value.size(0)));
    grads[i] = mine.narrow(0, off, n).view(shape);
    off += n;
  }
  const at::Tensor norm = grad_norm(*params_, grads, *mesh_, /*dp_sharded=*/true);
  const at::Tensor clip = clip_coefficient(norm, max_norm);
  AdamLists lists;
  for (size_t i : active) {
    Param& p = (*params_)[i];
    lists.add(p.value.narrow(0, rows_[i].first, rows_[i].second), m_[i], v_[i], grads[i], p.decay);
  }
  adamw_update(lists, lr, hyper_, step_, clip);
  off = 0;
  for (size_t i : active) {
    Param& p = (*params_)[i];
    at::Tensor w = p.value.narrow(0, rows_[i].first, rows_[i].second);
    mine.narrow(0, off, w.numel()).copy_(w.reshape({-1}));
    off += w.numel();
    p.value.mutable_grad() = at::Tensor();
  }
  at::Tensor gathered = at::empty({dp * seg}, f32);
  mesh_->dp().all_gather(gathered, mine);
  for (int k = 0; k < dp; ++k) {
    if (k == me) continue;
    int64_t o = k * seg;
    for (size_t i : active) {
      at::Tensor w = chunk((*params_)[i].value, k);  // a view of the parameter's rows
      w.copy_(gathered.narrow(0, o, w.numel()));
      o += w.numel();
    }
  }
  return norm;
}

double lr_at(const TrainConfig& cfg, int64_t step) {
  if (step < cfg.warmup_steps) return cfg.lr * static_cast<double>(step + 1) / static_cast<double>(cfg.warmup_steps);
  if (cfg.schedule == "constant") return cfg.lr;
  const double span = std::max<double>(1.0, static_cast<double>(cfg.steps - cfg.warmup_steps - 1));
  const double progress = std::min(1.0, static_cast<double>(step - cfg.warmup_steps) / span);
  const double min_lr = cfg.lr * cfg.min_lr_ratio;
  return min_lr + 0.5 * (cfg.lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

at::Tensor grad_norm(const std::vector<Param>& params, const std::vector<at::Tensor>& grads, const Mesh& mesh,
                     bool dp_sharded) {
  const auto f64 = at::TensorOptions(mesh.device()).dtype(at::kDouble);
  at::Tensor sharded = at::zeros({1}, f64), replicated = at::zeros({1}, f64);
  for (size_t i = 0; i < params.size(); ++i) {
    if (!grads[i].defined()) continue;
    (params[i].split_dim >= 0 ? sharded : replicated).add_(sum_of_squares(grads[i]));
  }
  return global_norm(sharded, replicated, mesh, dp_sharded);
}

at::Tensor global_norm(at::Tensor sharded_sq, at::Tensor replicated_sq, const Mesh& mesh, bool dp_sharded) {
  if (dp_sharded) {
    at::Tensor both = at::cat({sharded_sq, replicated_sq});
    mesh.dp().all_reduce(both, ReduceOp::kSum);
    sharded_sq = both.narrow(0, 0, 1).contiguous();
    replicated_sq = both.narrow(0, 1, 1);
  }
  mesh.tp().all_reduce(sharded_sq, ReduceOp::kSum);
  return (sharded_sq + replicated_sq).sqrt().squeeze(0);
}

}  // namespace lethe

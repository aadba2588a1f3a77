#include "runtime/tp_ops.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

namespace lethe {

at::Tensor all_gather_dim(const at::Tensor& x, int64_t dim, Communicator& c) {
  at::Tensor front = x.movedim(dim, 0).contiguous();  // [n, ...]
  std::vector<int64_t> shape = front.sizes().vec();
  shape[0] *= c.size();
  at::Tensor out = at::empty(shape, front.options());
  c.all_gather(out, front);
  return out.movedim(0, dim).contiguous();
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Communicator* comm_of(AutogradContext* ctx) {
  return reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
}
void keep_comm(AutogradContext* ctx, Communicator& c) {
  ctx->saved_data["comm"] = reinterpret_cast<int64_t>(&c);
}

at::Tensor all_reduce_sum(const at::Tensor& x, Communicator& c) {
  at::Tensor y = x.contiguous().clone();
  c.all_reduce(y, ReduceOp::kSum);
  return y;
}

at::Tensor slice_last(const at::Tensor& x, Communicator& c) {
  const int64_t n = x.size(-1) / c.size();
  return x.narrow(-1, c.rank() * n, n).contiguous();
}

at::Tensor gather_last(const at::Tensor& x, Communicator& c) { return all_gather_dim(x, -1, c); }

struct CopyToTp : torch::autograd::Function<CopyToTp> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Communicator* c) {
    keep_comm(ctx, *c);
    return x.view_as(x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    return {all_reduce_sum(g[0], *comm_of(ctx)), at::Tensor()};
  }
};

struct ReduceFromTp : torch::autograd::Function<ReduceFromTp> {
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, Communicator* c) { return all_reduce_sum(x, *c); }
  static variable_list backward(AutogradContext*, variable_list g) { return {g[0], at::Tensor()}; }
};

struct ScatterToTp : torch::autograd::Function<ScatterToTp> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Communicator* c) {
    keep_comm(ctx, *c);
    return slice_last(x, *c);
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    return {gather_last(g[0], *comm_of(ctx)), at::Tensor()};
  }
};

struct GatherFromTp : torch::autograd::Function<GatherFromTp> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Communicator* c) {
    keep_comm(ctx, *c);
    return gather_last(x, *c);
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    return {slice_last(g[0], *comm_of(ctx)), at::Tensor()};
  }
};

// Note [Vocab-parallel log-prob]: with logits split over the vocabulary, log p(y) = z_y − m −
// log Σ exp(z − m) needs three reductions over tp (max, sum of exps, the target's logit, which
// lives on one rank). The gradient w.r.t. this rank's logits is g · (onehot_y − softmax), all local.
struct VocabParallelLogProb : torch::autograd::Function<VocabParallelLogProb> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& target,
                            int64_t vocab_start, Communicator* c) {
    at::Tensor z = logits.to(at::kFloat);
    const int64_t v = z.size(-1);
    at::Tensor m = std::get<0>(z.max(-1)).contiguous();
    c->all_reduce(m, ReduceOp::kMax);
    at::Tensor e = (z - m.unsqueeze(-1)).exp_();
    at::Tensor s = e.sum(-1).contiguous();
    c->all_reduce(s, ReduceOp::kSum);
    at::Tensor local = target - vocab_start;
    at::Tensor in_range = local.ge(0) & local.lt(v);
    at::Tensor idx = local.clamp(0, v - 1).unsqueeze(-1);
    at::Tensor zt = z.gather(-1, idx).squeeze(-1).mul_(in_range).contiguous();
    c->all_reduce(zt, ReduceOp::kSum);
    at::Tensor softmax = e.div_(s.unsqueeze(-1));
    ctx->save_for_backward({softmax, idx, in_range});
    ctx->saved_data["dtype"] = static_cast<int64_t>(logits.scalar_type());
    return zt - m - s.log();
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    auto saved = ctx->get_saved_variables();
    at::Tensor go = g[0].to(at::kFloat);
    at::Tensor grad = saved[0].mul(go.unsqueeze(-1)).neg_();
    grad.scatter_add_(-1, saved[1], (go * saved[2]).unsqueeze(-1));
    auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {grad.to(dtype), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor copy_to_tp(const at::Tensor& x, Communicator& tp) {
  return tp.size() == 1 ? x : CopyToTp::apply(x, &tp);
}
at::Tensor reduce_from_tp(const at::Tensor& x, Communicator& tp) {
  return tp.size() == 1 ? x : ReduceFromTp::apply(x, &tp);
}
at::Tensor scatter_to_tp(const at::Tensor& x, Communicator& tp) {
  return tp.size() == 1 ? x : ScatterToTp::apply(x, &tp);
}
at::Tensor gather_from_tp(const at::Tensor& x, Communicator& tp) {
  return tp.size() == 1 ? x : GatherFromTp::apply(x, &tp);
}
at::Tensor vocab_parallel_logprobs(const at::Tensor& logits_BTv, const at::Tensor& target_BT, int64_t vocab_start,
                                   Communicator& tp) {
  return VocabParallelLogProb::apply(logits_BTv, target_BT, vocab_start, &tp);
}

at::Tensor vocab_parallel_argmax(const at::Tensor& logits_BTv, int64_t vocab_start, Communicator& tp) {
  auto [m, i] = logits_BTv.to(at::kFloat).max(-1);
  at::Tensor ids = i + vocab_start;
  if (tp.size() == 1) return ids;
  at::Tensor all_m = all_gather_dim(m.unsqueeze(0), 0, tp), all_ids = all_gather_dim(ids.unsqueeze(0), 0, tp);
  at::Tensor best = std::get<1>(all_m.max(0, /*keepdim=*/true));  // the first (lowest) rank among equal maxima
  return all_ids.gather(0, best).squeeze(0);
}

at::Tensor vocab_parallel_log_softmax(const at::Tensor& logits_BTv, Communicator& tp) {
  at::Tensor z = logits_BTv.to(at::kFloat);
  at::Tensor m = std::get<0>(z.detach().max(-1, /*keepdim=*/true)).contiguous();  // a constant shift
  tp.all_reduce(m, ReduceOp::kMax);
  // The normaliser is used differently on every rank (each rank's own shard of log-probs), so its
  // gradient must be summed over tp as well: all-reduce forward, all-reduce backward.
  at::Tensor sum_exp = copy_to_tp(reduce_from_tp((z - m).exp().sum(-1, /*keepdim=*/true), tp), tp);
  return z - m - sum_exp.log();
}

}  // namespace lethe

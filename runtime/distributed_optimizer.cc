// The mixed-precision path of AdamW: bf16 weights in buckets (Note [Parameter buckets]).
//
// Note [Distributed optimizer]: per bucket, AdamW keeps fp32 master weights and both moments for
// the elements it updates. mesh.optimizer decides which:
//  - replicated: the gradient bucket is all-reduced in place; every dp rank updates the whole
//    bucket (2 + 4 + 12 bytes per parameter with fp32 gradients);
//  - zero1: the bucket is reduce-scattered; dp rank k updates its shard with moments for that
//    shard only; the fp32 masters (whole on every rank) are all-gathered (2 + 4 + 4 + 8/dp);
//  - distributed: reduce-scattered as well, and the masters too exist for the shard only; the
//    updated shard is written into the bf16 weight buffer, which is all-gathered in place
//    (2 + 4 + 12/dp; Megatron-Core's distributed optimizer).
// The gradient norm sums each rank's reduced elements (over dp when sharded, over tp for
// tp-sharded buckets). Reductions run after backward, one bucket at a time (the temporary of a
// reduce-scatter is one shard of one bucket).
#include <ATen/ATen.h>

#include <cmath>

#include "base/check.h"
#include "runtime/fused.h"
#include "runtime/optimizer.h"

namespace lethe {

namespace {

// [lo, hi) ∩ [a, b) as (start, count), count 0 when empty.
std::pair<int64_t, int64_t> intersect(int64_t lo, int64_t hi, int64_t a, int64_t b) {
  const int64_t s = std::max(lo, a), e = std::min(hi, b);
  return e > s ? std::make_pair(s, e - s) : std::make_pair(int64_t{0}, int64_t{0});
}

}  // namespace

void AdamW::init_mixed() {
  at::NoGradGuard no_grad;
  slot_mp_ = bucket_slots(*buckets_mp_, params_->size());
  const int k = mesh_->dp_rank();
  for (const ParamBucket& b : *buckets_mp_) {
    const int64_t S = b.shard_size;
    at::Tensor master = mesh_->shard_master() ? b.weights.narrow(0, k * S, S) : b.weights;
    at::Tensor moments = mesh_->shard_moments() ? b.weights.narrow(0, k * S, S) : b.weights;
    state_mp_.push_back({master.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true), at::zeros_like(moments, at::kFloat),
                         at::zeros_like(moments, at::kFloat)});
  }
}

at::Tensor AdamW::reduce_bucket(size_t i) {
  ParamBucket& b = (*buckets_mp_)[i];
  if (mesh_->dp_size() == 1) return b.grads;
  if (!mesh_->shard_moments()) {
    mesh_->dp().all_reduce(b.grads, ReduceOp::kSum);
    return b.grads;
  }
  at::Tensor mine = at::empty({b.shard_size}, b.grads.options());
  mesh_->dp().reduce_scatter(mine, b.grads, ReduceOp::kSum);
  return mine;
}

at::Tensor AdamW::mixed_step(double lr, double max_norm) {
  std::vector<ParamBucket>& buckets = *buckets_mp_;
  const int k = mesh_->dp_rank();
  const bool sharded = mesh_->shard_moments();
  std::vector<at::Tensor> grads;
  const auto f64 = at::TensorOptions(mesh_->device()).dtype(at::kDouble);
  at::Tensor tp_sq = at::zeros({1}, f64), replicated_sq = at::zeros({1}, f64);
  for (size_t i = 0; i < buckets.size(); ++i) {
    grads.push_back(reduce_bucket(i));  // in the gradient dtype; converted one piece at a time below
    (buckets[i].tp_sharded ? tp_sq : replicated_sq).add_(sum_of_squares(grads.back()));
  }
  const at::Tensor norm = global_norm(tp_sq, replicated_sq, *mesh_, sharded);
  const at::Tensor clip = clip_coefficient(norm, max_norm);

  for (size_t i = 0; i < buckets.size(); ++i) {
    ParamBucket& b = buckets[i];
    BucketState& st = state_mp_[i];
    const int64_t S = b.shard_size, lo = sharded ? k * S : 0, hi = sharded ? lo + S : S * mesh_->dp_size();
    const int64_t master_base = mesh_->shard_master() ? k * S : 0;
    AdamLists lists;
    for (size_t j = 0; j < b.params.size(); ++j) {
      const Param& p = (*params_)[b.params[j]];
      auto [start, count] = intersect(lo, hi, b.offsets[j], b.offsets[j] + p.value.numel());
      if (count == 0 || dropped_[b.params[j]]) continue;
      at::Tensor g = grads[i].narrow(0, start - lo, count).to(at::kFloat);  // a view when the gradients are fp32
      lists.add(st.master.narrow(0, start - master_base, count), st.m.narrow(0, start - lo, count),
                st.v.narrow(0, start - lo, count), g, p.decay);
    }
    adamw_update(lists, lr, hyper_, step_, clip);
    if (!sharded) {
      b.weights.copy_(st.master);
    } else if (!mesh_->shard_master()) {  // zero1: every rank keeps whole masters
      at::Tensor mine = st.master.narrow(0, lo, S).clone();
      mesh_->dp().all_gather(st.master, mine);
      b.weights.copy_(st.master);
    } else {
      b.weights.narrow(0, lo, S).copy_(st.master);
      at::Tensor mine = b.weights.narrow(0, lo, S).clone();
      mesh_->dp().all_gather(b.weights, mine);
    }
    b.grads.zero_();
  }
  dropped_.assign(dropped_.size(), false);
  return norm;
}

std::pair<int64_t, int64_t> AdamW::mixed_owned_range(size_t i, int k) const {
  const ParamBucket& b = (*buckets_mp_)[slot_mp_[i].bucket];
  const int64_t o = slot_mp_[i].offset, n = (*params_)[i].value.numel();
  auto [start, count] = intersect(k * b.shard_size, (k + 1) * b.shard_size, o, o + n);
  return {count ? start - o : 0, count};
}

std::vector<StateSlice> AdamW::mixed_state_of(size_t i) {
  const BucketSlot& slot = slot_mp_[i];
  const ParamBucket& b = (*buckets_mp_)[slot.bucket];
  BucketState& st = state_mp_[slot.bucket];
  const int64_t n = (*params_)[i].value.numel(), shard_start = mesh_->dp_rank() * b.shard_size;
  auto [start, count] = mixed_owned_range(i, mesh_->dp_rank());
  // A dp-sharded tensor holds the bucket's shard: this parameter's part of it.
  auto held = [&](const at::Tensor& t, bool dp_sharded) {
    return dp_sharded ? t.narrow(0, count ? slot.offset + start - shard_start : 0, count) : t.narrow(0, slot.offset, n);
  };
  const bool moments = mesh_->shard_moments(), master = mesh_->shard_master();
  return {{"exp_avg", moments, held(st.m, moments)},
          {"exp_avg_sq", moments, held(st.v, moments)},
          {"master", master, held(st.master, master)}};
}

}  // namespace lethe

#include "runtime/layers.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "runtime/tp_ops.h"

namespace lethe {

Param make_param(const std::string& name, std::vector<int64_t> global_shape, int split_dim, double std,
                 uint64_t seed, Communicator& tp, at::Device device) {
  at::Tensor full;
  if (std == 0.0) {
    full = at::ones(global_shape, at::kFloat);
  } else {
    uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a of the name: the same stream on any platform
    for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
    at::Generator gen = at::detail::createCPUGenerator(seed ^ h);
    full = at::normal(0.0, std, global_shape, gen, at::kFloat);
  }
  at::Tensor shard = full;
  if (split_dim >= 0) {
    const int64_t n = global_shape[split_dim] / tp.size();
    // A copy, not contiguous(): a slice along dim 0 is already contiguous and would keep the whole
    // tensor's storage alive on every rank.
    shard = full.narrow(split_dim, tp.rank() * n, n).clone(at::MemoryFormat::Contiguous);
  }
  shard = shard.to(device);
  shard.set_requires_grad(true);
  const bool decay = global_shape.size() > 1;
  return Param{name, shard, std::move(global_shape), split_dim, decay};
}

at::Tensor ColumnParallelLinear::operator()(const at::Tensor& x, at::ScalarType compute, Communicator& tp) const {
  return at::linear(copy_to_tp(x, tp).to(compute), w.to(compute));
}

at::Tensor RowParallelLinear::operator()(const at::Tensor& x_par, at::ScalarType compute, Communicator& tp) const {
  return reduce_from_tp(at::linear(x_par.to(compute), w.to(compute)), tp);
}

at::Tensor VocabParallelEmbedding::operator()(const at::Tensor& ids_BT, at::ScalarType compute, Communicator& tp) const {
  const int64_t v = w.size(0);
  at::Tensor local = ids_BT - vocab_start;
  at::Tensor in_range = local.ge(0) & local.lt(v);
  at::Tensor out = at::embedding(w.to(compute), local.clamp(0, v - 1));
  if (tp.size() > 1) out = out * in_range.unsqueeze(-1).to(compute);
  return reduce_from_tp(out, tp);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor y = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (y * w).to(x.scalar_type());
}

}  // namespace lethe

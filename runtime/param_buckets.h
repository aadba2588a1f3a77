// Contiguous parameter and gradient buffers of a bf16 model (Note [Parameter buckets]).
//
// Note [Parameter buckets]: in bf16 runs every trained parameter is a view into a bucket's weight
// buffer, and its .grad a view into the bucket's gradient buffer (fp32, or bf16 with
// mesh.grad_dtype). Autograd accumulates each bf16 gradient straight into that fp32 view
// (AccumulateGrad adds in place into a defined .grad), so the gradient buffer *is* the dp
// communication bucket: it is all-reduced or reduce-scattered in place, with no second copy, and
// nothing is cast in forward. Buckets hold parameters in reverse order (the order backward
// produces them), at most mesh.bucket_mb of gradients each, tp-sharded and tp-replicated
// parameters apart (the gradient norm sums the former over tp). Each buffer is zero-padded to
// dp × shard_size elements: dp rank k owns elements [k · shard_size, (k + 1) · shard_size) of
// every bucket (its fp32 master weights and AdamW moments under mesh.optimizer = "distributed").
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace lethe {

struct ParamBucket {
  std::vector<size_t> params;    // indices into the model's parameters, in buffer order
  std::vector<int64_t> offsets;  // element offset of each in the buffers
  at::Tensor weights;            // [dp · shard_size], the weight dtype
  at::Tensor grads;              // [dp · shard_size], the gradient dtype
  bool tp_sharded = false;       // its parameters are split across tp
  int64_t shard_size = 0;
};

// The buckets for parameters of the given local (tp shard) element counts; `tp_sharded[i]` says
// whether parameter i is split across tp. Buffers are not allocated.
std::vector<ParamBucket> layout_buckets(const std::vector<int64_t>& numels, const std::vector<bool>& tp_sharded,
                                        int64_t bucket_elements, int dp);

// Where each parameter lives: its bucket and its offset there, for every parameter index.
struct BucketSlot {
  size_t bucket = 0;
  int64_t offset = 0;
};
std::vector<BucketSlot> bucket_slots(const std::vector<ParamBucket>& buckets, size_t num_params);

}  // namespace lethe

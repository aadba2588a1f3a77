// Tensor-parallel autograd operators (Megatron's four conjugates) and the vocab-parallel log-prob.
// Collective: every rank of `tp` calls each op, in the same order. At tp = 1 each is the identity
// (or, for log-probs, the plain computation): the same code path, degenerate.
//
// Legend: B batch, T time, D model width, v = V / tp this rank's vocabulary shard.
#pragma once

#include <ATen/core/Tensor.h>

#include "collectives/communicator.h"

namespace lethe {

// forward identity, backward all-reduce(sum): the input of a column-parallel layer.
at::Tensor copy_to_tp(const at::Tensor& x, Communicator& tp);
// forward all-reduce(sum), backward identity: the output of a row-parallel layer.
at::Tensor reduce_from_tp(const at::Tensor& x, Communicator& tp);
// forward: this rank's slice of the last dim; backward: all-gather along the last dim.
at::Tensor scatter_to_tp(const at::Tensor& x, Communicator& tp);
// forward: all-gather along the last dim (rank order); backward: this rank's slice.
at::Tensor gather_from_tp(const at::Tensor& x, Communicator& tp);

// Not differentiable: the ranks' `x` concatenated along `dim`, in rank order (whole parameters from
// their tp shards for export and tests).
at::Tensor all_gather_dim(const at::Tensor& x, int64_t dim, Communicator& c);

// log p(target) per position from vocab-sharded logits, never materialising the full vocabulary:
// logits_BTv hold vocabulary ids [vocab_start, vocab_start + v); target_BT are global ids.
// Returns fp32 [B, T]; differentiable in logits (d/dlogit = onehot − softmax, computed locally).
at::Tensor vocab_parallel_logprobs(const at::Tensor& logits_BTv, const at::Tensor& target_BT,
                                   int64_t vocab_start, Communicator& tp);

// log-softmax over the whole (sharded) vocabulary, returned as this rank's shard [B, T, v] fp32;
// differentiable (the normaliser is summed over tp with reduce_from_tp).
at::Tensor vocab_parallel_log_softmax(const at::Tensor& logits_BTv, Communicator& tp);

// Note [Vocab-parallel argmax]: the global token id of the largest logit per position, [B, T]
// int64, from this rank's shard (ids from `vocab_start`) without gathering the vocabulary: each
// rank's max and its index, all-gathered over tp (2 numbers per position), then the largest; ties
// go to the lowest id (the first maximum within a shard, the lowest rank across shards), as
// argmax over the gathered logits does.
at::Tensor vocab_parallel_argmax(const at::Tensor& logits_BTv, int64_t vocab_start, Communicator& tp);

}  // namespace lethe

// Evaluation split over data-parallel ranks: each dp rank works on one contiguous block of the
// samples, then the per-sample results of all blocks are gathered so that every rank holds all of
// them, in the original order. Aggregates (means, AUC, perplexity) are then computed the same way on
// every rank, from the same numbers a single process would have.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>

#include "runtime/mesh.h"

namespace lethe {

// Samples [first, last) of n: blocks of ⌈n / dp⌉, the last ones shorter or empty.
struct DpBlock {
  size_t first = 0, last = 0, per_rank = 0;
};
DpBlock dp_block(const Mesh& mesh, size_t n);

// Collective over mesh.dp(). `rows` is this rank's [block size, ...] results (any dtype); returns
// [n, ...]: every rank's rows in rank order.
at::Tensor dp_gather_rows(const Mesh& mesh, const at::Tensor& rows, size_t n);

}  // namespace lethe

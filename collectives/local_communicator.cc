#include "collectives/local_communicator.h"

#include <ATen/ATen.h>

#include "base/check.h"

namespace lethe {

void LocalCommunicator::all_reduce(at::Tensor& t, ReduceOp) { LETHE_CHECK(t.is_contiguous()); }

void LocalCommunicator::all_gather(at::Tensor& out, const at::Tensor& in) {
  LETHE_CHECK(out.is_contiguous() && out.numel() == in.numel());
  if (!out.is_same(in)) out.view(in.sizes()).copy_(in);
}

void LocalCommunicator::reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp) {
  LETHE_CHECK(out.is_contiguous() && out.numel() == in.numel());
  if (!out.is_same(in)) out.view(in.sizes()).copy_(in);
}

void LocalCommunicator::broadcast(at::Tensor& t, int root) { LETHE_CHECK(root == 0); }

std::unique_ptr<Communicator> LocalCommunicator::split(int, int) {
  return std::make_unique<LocalCommunicator>();
}

}  // namespace lethe

// Communicator: how ranks talk. One narrow interface; backends live one per file.
//
// Contract (every backend):
//  - Collective: every rank of the group calls each operation, in the same order, from one thread.
//  - Tensors are contiguous and operated on in place where the signature says so; all ranks pass the
//    same dtype and shape (all_gather: `out` has size() × in.numel() elements, rank r's `in` lands at
//    slice r along dim 0; reduce_scatter: `in` has size() × out.numel() elements).
//  - kAvg divides the sum by size(); reductions of 16-bit floats are accumulated in fp32.
//  - A failure is fatal for the whole job: a backend never returns half-done.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

namespace lethe {

enum class ReduceOp { kSum, kAvg, kMax };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;

  virtual void all_reduce(at::Tensor& t, ReduceOp op) = 0;
  virtual void all_gather(at::Tensor& out, const at::Tensor& in) = 0;
  virtual void reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) = 0;
  virtual void broadcast(at::Tensor& t, int root) = 0;
  virtual void barrier() = 0;
  // Ranks with equal `color` form a new group, ordered by `key` (then by rank).
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
  // The same ranks' communicator for CPU tensors: itself for CPU backends, MPI under NCCL.
  virtual Communicator& host() { return *this; }
};

}  // namespace lethe

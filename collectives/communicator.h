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
#include <mpi.h>

#include <memory>
#include <string>

namespace lethe {

enum class ReduceOp { kSum, kAvg, kMax };

// What collective file I/O (MPI-IO under parallel HDF5) needs from the ranks: their MPI
// communicator and the deadline every collective call runs under. comm is MPI_COMM_NULL for a
// backend without MPI (a world of one).
struct IoChannel {
  MPI_Comm comm = MPI_COMM_NULL;
  double timeout_s = 0;
};

// A collective started by an *_async call. wait() completes it (with the deadline of a blocking
// call); poll() lets the backend make progress without blocking (MPI progresses only inside its
// calls). The tensor must stay alive and untouched until wait() returns.
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  virtual void wait() = 0;
  virtual void poll() {}
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;

  virtual void all_reduce(at::Tensor& t, ReduceOp op) = 0;
  // all_reduce started now and finished by the handle's wait(), in the order of the calls. Backends
  // without asynchrony complete it here.
  virtual std::unique_ptr<PendingCollective> all_reduce_async(at::Tensor& t, ReduceOp op);
  virtual void all_gather(at::Tensor& out, const at::Tensor& in) = 0;
  virtual void reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) = 0;
  virtual void broadcast(at::Tensor& t, int root) = 0;
  virtual void barrier() = 0;
  // Ranks with equal `color` form a new group, ordered by `key` (then by rank).
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
  // The same ranks' communicator for CPU tensors: itself for CPU backends, MPI under NCCL.
  virtual Communicator& host() { return *this; }
  virtual IoChannel io() { return {}; }
};

inline std::unique_ptr<PendingCollective> Communicator::all_reduce_async(at::Tensor& t, ReduceOp op) {
  struct Done final : PendingCollective {
    void wait() override {}
  };
  all_reduce(t, op);
  return std::make_unique<Done>();
}

}  // namespace lethe

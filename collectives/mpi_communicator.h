// The MPI backend: CPU tensors, in place on their data pointers.
//
// Every operation is MPI's blocking call under a Deadline: an operation that does not complete
// within the timeout (a dead or stuck peer) ends the whole job with a message naming this rank,
// the operation and its size — never a silent hang.
// 16-bit floats are reduced through an fp32 copy (Open MPI 4.1 has no bf16 sum); all-reduce and
// broadcast split buffers larger than kChunkElements into several calls.
#pragma once

#include <mpi.h>

#include <functional>
#include <string>

#include "collectives/communicator.h"

namespace lethe {

class MpiCommunicator final : public Communicator {
 public:
  static constexpr int64_t kChunkElements = int64_t{1} << 26;

  // Takes ownership of `comm` (freed in the destructor unless it is MPI_COMM_WORLD).
  MpiCommunicator(MPI_Comm comm, double timeout_s);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  void all_reduce(at::Tensor& t, ReduceOp op) override;
  // MPI_Iallreduce for fp32/fp64 buffers of at most one chunk; others complete in the call.
  std::unique_ptr<PendingCollective> all_reduce_async(at::Tensor& t, ReduceOp op) override;
  void all_gather(at::Tensor& out, const at::Tensor& in) override;
  void reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) override;
  void broadcast(at::Tensor& t, int root) override;
  void barrier() override;
  std::unique_ptr<Communicator> split(int color, int key) override;

  IoChannel io() override { return {comm_, timeout_s_}; }
  // Elements per call for all-reduce and broadcast (kChunkElements; smaller in tests).
  void set_chunk_elements(int64_t n) { chunk_ = n; }
  double timeout_s() const { return timeout_s_; }

 private:
  friend class MpiPending;
  // Runs the blocking MPI `call` under the watchdog (Note [Collective deadline]).
  void run(const std::string& op, int64_t bytes, const std::function<int()>& call) const;
  void check(int rc, const char* op) const;

  MPI_Comm comm_;
  double timeout_s_;
  int64_t chunk_ = kChunkElements;
  int rank_ = 0, size_ = 1;
};

// MPI datatype of a tensor's elements (16-bit floats as 16-bit unsigned: for moving, not reducing).
MPI_Datatype mpi_type(at::ScalarType t);

}  // namespace lethe

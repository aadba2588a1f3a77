// The world-of-one backend: a real Communicator whose group is this process alone. Reductions over
// one rank are the identity, gathers and scatters are copies. Used when Lethe runs without a launcher.
#pragma once

#include "collectives/communicator.h"

namespace lethe {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "local"; }
  void all_reduce(at::Tensor& t, ReduceOp op) override;
  void all_gather(at::Tensor& out, const at::Tensor& in) override;
  void reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) override;
  void broadcast(at::Tensor& t, int root) override;
  void barrier() override {}
  std::unique_ptr<Communicator> split(int color, int key) override;
};

}  // namespace lethe

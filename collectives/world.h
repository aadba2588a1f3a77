// init_world: reads the launcher's environment and returns this process's world communicator.
//
// Without a launcher (no Open MPI or Slurm variables, or a world size of 1) the world is the
// local backend. Multi-rank backends (MPI for CPU tensors, NCCL for CUDA tensors) plug in here.
#pragma once

#include <memory>

#include "base/status.h"
#include "collectives/communicator.h"

namespace lethe {

struct World {
  std::unique_ptr<Communicator> comm;
  int local_rank = 0;        // rank within this node: picks the GPU
  int local_size = 1;        // ranks on this node: divides the cores into threads
};

// Launcher facts read from the environment (Open MPI, then Slurm).
struct LaunchEnv {
  int world_size = 1;
  int rank = 0;
  int local_rank = 0;
  int local_size = 1;
};
LaunchEnv read_launch_env();

Result<World> init_world();

}  // namespace lethe

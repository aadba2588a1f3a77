// init_world: reads the launcher's environment and returns this process's world communicator.
//
// Without a launcher (no Open MPI or Slurm variables, or a world size of 1) the world is the local
// backend and MPI is not started. Launched with more ranks (mpirun, srun), MPI is initialised once
// (finalised at exit) and the world is the MPI backend; from then on a fatal error on any rank
// aborts every rank (MPI_Abort) with its message. The world is the NCCL backend when every rank
// sees a CUDA device (and this build has NCCL), else MPI. LETHE_COMM=mpi|nccl forces that backend
// even for a world of one (tests of the backend itself); LETHE_COMM=local a world of one even under
// a launcher (tests that compare a multi-rank run with one process).
#pragma once

#include <memory>

#include "base/status.h"
#include "collectives/communicator.h"

namespace lethe {

struct World {
  std::unique_ptr<Communicator> comm;
  int device = -1;           // this rank's CUDA device (local_rank % devices), -1: none visible
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

// The number of ranks init_world will see, from the launcher's environment alone (MPI not started):
// 1 under LETHE_COMM=local. Lets a run check its layout before MPI_Init.
int launched_world_size();

// `timeout_s`: how long any collective may wait for its peers before the job is aborted.
Result<World> init_world(double timeout_s = 600);

// The device this rank's tensors live on for run.device = `choice` ("auto" | "cpu" | "cuda"):
// cuda:<world.device> needs a LibTorch with CUDA, a visible GPU and, with more than one rank, the
// NCCL backend (MPI moves host memory only); "auto" takes it when all three hold, else the CPU.
// The error for "cuda" names run.device and what is missing.
Result<at::Device> resolve_device(const std::string& choice, const World& world);

// True once MPI was started by init_world: errors must then end the whole job (abort_job).
bool multi_process();
// Prints `message` and ends every rank of the job (MPI_Abort), or this process when MPI is not
// running. Called off the main thread it makes no MPI call (MPI_THREAD_FUNNELED): it _exits, and
// the launcher ends the other ranks (Note [Watchdog]).
[[noreturn]] void abort_job(const std::string& message);

}  // namespace lethe

#include "collectives/world.h"

#include <cstdlib>
#include <string>

#include "collectives/local_communicator.h"

namespace lethe {

namespace {
int env_int(const char* a, const char* b, int fallback) {
  for (const char* name : {a, b}) {
    if (const char* v = std::getenv(name)) return std::atoi(v);
  }
  return fallback;
}
}  // namespace

LaunchEnv read_launch_env() {
  LaunchEnv e;
  e.world_size = env_int("OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS", 1);
  e.rank = env_int("OMPI_COMM_WORLD_RANK", "SLURM_PROCID", 0);
  e.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", 0);
  e.local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", 1);
  return e;
}

Result<World> init_world() {
  LaunchEnv e = read_launch_env();
  if (e.world_size > 1) {
    return Status::error("launched as rank " + std::to_string(e.rank) + " of " +
                         std::to_string(e.world_size) +
                         ", but this build has only the world-of-one backend (local); "
                         "run without mpirun/srun");
  }
  World w;
  w.comm = std::make_unique<LocalCommunicator>();
  w.local_rank = e.local_rank;
  w.local_size = e.local_size;
  return w;
}

}  // namespace lethe

#include "collectives/world.h"

#include <ATen/ATen.h>
#include <torch/version.h>
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "base/check.h"
#include "base/deadline.h"
#include "collectives/local_communicator.h"
#include "collectives/mpi_communicator.h"
#include "collectives/nccl_communicator.h"

namespace lethe {

namespace {

int env_int(const char* a, const char* b, int fallback) {
  for (const char* name : {a, b}) {
    if (const char* v = std::getenv(name)) return std::atoi(v);
  }
  return fallback;
}

bool g_mpi_started = false;

void finalize_mpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void abort_hook(const std::string& message) { abort_job(message); }

}  // namespace

LaunchEnv read_launch_env() {
  LaunchEnv e;
  e.world_size = env_int("OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS", 1);
  e.rank = env_int("OMPI_COMM_WORLD_RANK", "SLURM_PROCID", 0);
  e.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", 0);
  e.local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", 1);
  return e;
}

int launched_world_size() {
  const char* forced = std::getenv("LETHE_COMM");
  return forced && std::string(forced) == "local" ? 1 : read_launch_env().world_size;
}

bool multi_process() { return g_mpi_started; }

void abort_job(const std::string& message) {
  if (!on_main_thread()) exit_from_thread(read_launch_env().rank, message);  // no MPI off the main thread
  int rank = 0;
  if (g_mpi_started) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::fprintf(stderr, "[rank %d] %s\n", rank, message.c_str());
  std::fflush(stderr);
  if (g_mpi_started) MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();
}

Result<World> init_world(double timeout_s) {
  const LaunchEnv e = read_launch_env();
  const char* forced = std::getenv("LETHE_COMM");
  const std::string backend = forced ? forced : "";
  if (!backend.empty() && backend != "local" && backend != "mpi" && backend != "nccl") {
    return Status::error("LETHE_COMM=" + backend + ": expected local, mpi or nccl");
  }
  const bool use_mpi = backend == "mpi" || backend == "nccl" || (e.world_size > 1 && backend != "local");
  World w;
  w.local_rank = e.local_rank;
  w.local_size = e.local_size;
  const int devices = cuda_device_count();
  if (devices > 0) w.device = e.local_rank % devices;
  if (!use_mpi) {
    w.comm = std::make_unique<LocalCommunicator>();
    return w;
  }
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      return Status::error("MPI_Init_thread failed (launched as rank " + std::to_string(e.rank) + " of " +
                           std::to_string(e.world_size) + ")");
    }
    std::atexit(finalize_mpi);
  }
  set_main_thread();
  g_mpi_started = true;
  set_abort_hook(&abort_hook);
  MPI_Comm dup;
  if (MPI_Comm_dup(MPI_COMM_WORLD, &dup) != MPI_SUCCESS) return Status::error("MPI_Comm_dup(MPI_COMM_WORLD) failed");
  auto mpi = std::make_unique<MpiCommunicator>(dup, timeout_s);
  if (mpi->size() != e.world_size && e.world_size > 1) {
    return Status::error("the launcher says " + std::to_string(e.world_size) + " ranks, MPI sees " +
                         std::to_string(mpi->size()) + ": is lethe linked against the MPI of this mpirun?");
  }
  // NCCL when asked for, or by default when every rank sees a CUDA device (agreed over all ranks,
  // so that no rank picks another backend than its peers).
  at::Tensor with_devices = at::full({1}, devices > 0 ? 1 : 0, at::kInt);
  mpi->all_reduce(with_devices, ReduceOp::kSum);
  if (backend == "nccl" || (backend.empty() && with_devices.item<int>() == mpi->size())) {
    LETHE_ASSIGN_OR_RETURN(w.comm, make_nccl_communicator(dup, e.local_rank, timeout_s));
  } else {
    w.comm = std::move(mpi);
  }
  return w;
}

Result<at::Device> resolve_device(const std::string& choice, const World& w) {
  if (choice == "cpu") return at::Device(at::kCPU);
  if (choice != "auto" && choice != "cuda") return Status::error("run.device = \"" + choice + "\": expected auto, cpu or cuda");
  const bool nccl_or_one = w.comm->size() == 1 || w.comm->backend() == "nccl";
  if (choice == "auto" && !(at::hasCUDA() && w.device >= 0 && nccl_or_one)) return at::Device(at::kCPU);
  if (!at::hasCUDA()) return Status::error("run.device = \"cuda\": this build's LibTorch (" TORCH_VERSION ") has no CUDA");
  if (w.device < 0) return Status::error("run.device = \"cuda\": rank " + std::to_string(w.comm->rank()) + " sees no CUDA device");
  if (!nccl_or_one) {
    return Status::error("run.device = \"cuda\" with " + std::to_string(w.comm->size()) + " ranks needs the NCCL "
                         "backend, and this world is " + w.comm->backend() + " (LETHE_COMM, or a rank without a GPU)");
  }
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(w.device));
}

}  // namespace lethe

// The NCCL entry points of a build without CUDA and NCCL (collectives/CMakeLists.txt picks this
// file or nccl_communicator.cc).
#include "collectives/nccl_communicator.h"

namespace lethe {

int cuda_device_count() { return 0; }

Result<std::unique_ptr<Communicator>> make_nccl_communicator(MPI_Comm, int, double) {
  return Status::error(
      "this build of Lethe has no NCCL backend: configure it against a LibTorch with CUDA, or with CUDA's runtime "
      "and NCCL where CMake finds them (CUDAToolkit_ROOT, NCCL_ROOT)");
}

}  // namespace lethe

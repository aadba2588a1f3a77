// The NCCL backend: CUDA tensors, in place on their data pointers, on the GPU this rank was given.
//
// Built where LibTorch has CUDA or where CUDA's runtime and NCCL are found at configure time
// (collectives/CMakeLists.txt); other builds link nccl_absent.cc, whose functions say so.
// CPU tensors (token counts, stop flags, checksums) passed to an NCCL communicator go through the
// MPI communicator of the same ranks, so one Communicator serves both.
#pragma once

#include <mpi.h>

#include <memory>

#include "base/status.h"
#include "collectives/communicator.h"

namespace lethe {

// CUDA devices this process sees; 0 without NCCL in this build, without a driver or a device.
int cuda_device_count();

// The NCCL backend over the ranks of `comm` (duplicated, not taken), on CUDA device
// local_rank % cuda_device_count() (made current). Collective over `comm`: rank 0 creates NCCL's
// unique id and sends it with MPI_Bcast. An error when this build has no NCCL or no device is seen.
Result<std::unique_ptr<Communicator>> make_nccl_communicator(MPI_Comm comm, int local_rank, double timeout_s);

}  // namespace lethe

// The one place that knows LibTorch version differences. Lethe builds against Debian's LibTorch
// 1.13 (CPU) and LibTorch 2.x with CUDA (the GPU machine); code elsewhere calls these wrappers.
// Header-only and included only by translation units that already use ATen (base/ itself stays
// torch-free).
#pragma once

#include <ATen/ATen.h>
#include <torch/version.h>

#include <optional>

// LETHE_TORCH_CUDA is 1 when CMake found a LibTorch with CUDA (CMakeLists.txt); only then may code
// touch c10::cuda, which a CPU LibTorch does not ship libraries for.
#if LETHE_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif
#include <ATen/CPUGeneratorImpl.h>

#define LETHE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace lethe::compat {

// Attention over q [B,H,T,Dh], k and v [B,H,S,Dh] with a boolean mask broadcastable to [B,H,T,S]
// (true = attend), or, when the mask is undefined, plain causal attention (T == S). Fused
// scaled-dot-product attention where LibTorch has it (2.0+; the causal case is the one Flash
// attention takes on a GPU), the explicit softmax path otherwise; both compute
// softmax(q kᵀ / sqrt(Dh) + mask) v.
inline at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& bool_mask) {
#if LETHE_TORCH_AT_LEAST(2, 0)
  if (!bool_mask.defined()) return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
  return at::scaled_dot_product_attention(q, k, v, bool_mask);
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  auto scores = at::matmul(q, k.transpose(-2, -1)).mul_(scale);
  const at::Tensor mask =
      bool_mask.defined() ? bool_mask : at::ones({q.size(-2), k.size(-2)}, q.options().dtype(at::kBool)).tril();
  scores.masked_fill_(mask.logical_not(), -std::numeric_limits<float>::infinity());
  return at::matmul(at::softmax(scores, -1, at::kFloat).to(v.scalar_type()), v);
#endif
}

inline constexpr const char* kTorchVersion = TORCH_VERSION;

// Peak bytes (GB) the CUDA caching allocator has handed out on `device` since the last
// reset_peak_device_memory (the number torch.cuda.max_memory_allocated reports); 0 on the CPU.
inline double peak_device_memory_gb(at::Device device) {
#if LETHE_TORCH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return static_cast<double>(stats.allocated_bytes[0].peak) / 1e9;  // [0]: all pools
  }
#endif
  return 0.0;
}

// Waits for every kernel queued on `device` (timing a region of GPU work); nothing on the CPU.
inline void synchronize(at::Device device) {
#if LETHE_TORCH_CUDA
  if (device.is_cuda()) c10::cuda::device_synchronize();
#endif
}

// A random generator on `device` seeded with `seed` (the same stream on every rank of one device
// kind): draws there need no host transfer.
inline at::Generator generator(at::Device device, uint64_t seed) {
#if LETHE_TORCH_CUDA
  if (device.is_cuda()) {
    at::Generator g = at::cuda::detail::createCUDAGenerator(device.index());
    g.set_current_seed(seed);
    return g;
  }
#endif
  (void)device;
  return at::detail::createCPUGenerator(seed);
}

inline void reset_peak_device_memory(at::Device device) {
#if LETHE_TORCH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
}

// The type of the allocator totals c10::MemoryReportingInfoBase::reportMemoryUsage receives
// (int64_t in 1.13, size_t in 2.x), read from the declaration itself.
template <class>
struct ReportTotal;
template <class C, class Ptr, class Size, class Total, class Device>
struct ReportTotal<void (C::*)(Ptr, Size, Total, Total, Device)> {
  using type = Total;
};
using AllocatorTotal = ReportTotal<decltype(&c10::MemoryReportingInfoBase::reportMemoryUsage)>::type;

}  // namespace lethe::compat

// Host memory of this process, from /proc/self/status (Linux): what runs and benchmarks report.
#pragma once

#include <string>

namespace lethe {

// A "Vm…:  N kB" field of /proc/self/status in GB (1e9 bytes): "VmRSS" now, "VmHWM" the peak
// since start (or since reset_peak_host_memory). -1 where it cannot be read.
double host_memory_gb(const std::string& field);

// Note [Freed host memory stays]: glibc returns a freed block of 128 KB or more to the kernel
// (munmap, or trimming the heap's top), so a training step, which frees and allocates the same
// activations and gradients every step, page-faults them all back in, zeroed: about 700 faults a
// step of the ~1M model, ~5 % of its time. The process keeps blocks up to 256 MB for reuse and
// trims its heap only above 512 MB free; larger blocks are still mapped and unmapped.
// `lethe` sets this at start; benchmarks of its step do the same.
void keep_freed_host_memory();

// Resets VmHWM to the current RSS (/proc/self/clear_refs), so the next peak is of what follows.
void reset_peak_host_memory();

}  // namespace lethe

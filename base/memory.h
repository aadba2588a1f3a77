// Host memory of this process, from /proc/self/status (Linux): what runs and benchmarks report.
#pragma once

#include <string>

namespace lethe {

// A "Vm…:  N kB" field of /proc/self/status in GB (1e9 bytes): "VmRSS" now, "VmHWM" the peak
// since start (or since reset_peak_host_memory). -1 where it cannot be read.
double host_memory_gb(const std::string& field);

// Resets VmHWM to the current RSS (/proc/self/clear_refs), so the next peak is of what follows.
void reset_peak_host_memory();

}  // namespace lethe

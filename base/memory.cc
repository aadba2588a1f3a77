#include "base/memory.h"

#include <malloc.h>

#include <fstream>

namespace lethe {

double host_memory_gb(const std::string& field) {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);) {
    // The kernel's "kB" are KiB.
    if (line.rfind(field + ":", 0) == 0) return std::stod(line.substr(field.size() + 1)) * 1024 / 1e9;
  }
  return -1;
}

void keep_freed_host_memory() {  // Note [Freed host memory stays]
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
}

void reset_peak_host_memory() { std::ofstream("/proc/self/clear_refs") << "5"; }

}  // namespace lethe

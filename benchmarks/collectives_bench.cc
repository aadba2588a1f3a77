// Collectives: time, algbw and busbw per message size (nccl-tests definitions) for Lethe's MPI
// backend and for the raw MPI call on the same buffer, side by side in one run.
//   mpirun --bind-to none -np 2 build/benchmarks/lethe_bench_collectives
// algbw = bytes / time; busbw = algbw · 2(n−1)/n for all-reduce, · (n−1)/n for all-gather (bytes =
// the gathered output). Medians of `reps` timings, each the mean of `iters` back-to-back calls.
#include <ATen/ATen.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "collectives/mpi_communicator.h"
#include "collectives/world.h"

namespace {

double median_seconds(MPI_Comm comm, int iters, int reps, const std::function<void()>& op) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    MPI_Barrier(comm);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) op();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iters;
    MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_DOUBLE, MPI_MAX, comm);  // the slowest rank
    t.push_back(s);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main() {
  setenv("LETHE_COMM", "mpi", 0);
  auto world = lethe::init_world(600);
  if (!world) {
    std::fprintf(stderr, "%s\n", world.status().message().c_str());
    return 1;
  }
  lethe::Communicator& c = *world->comm;
  const MPI_Comm comm = c.io().comm;
  const int n = c.size();
  if (c.rank() == 0) {
    std::printf("ranks %d, float32; medians of 5 timings\n\n", n);
    std::printf("| op | bytes | Lethe time | Lethe busbw | raw MPI time | raw MPI busbw | Lethe / raw |\n");
    std::printf("|---|---|---|---|---|---|---|\n");
  }
  for (int64_t bytes = 4 << 10; bytes <= (64 << 20); bytes *= 4) {
    const int64_t elems = bytes / 4;
    const int iters = std::max<int64_t>(3, std::min<int64_t>(200, (256 << 20) / bytes / 8));
    at::Tensor x = at::ones({elems});
    at::Tensor part = at::ones({elems / n}), all = at::empty({elems / n * n});
    struct Case {
      const char* op;
      double factor;
      std::function<void()> lethe, raw;
    };
    const Case cases[] = {
        {"all_reduce", 2.0 * (n - 1) / n, [&] { c.all_reduce(x, lethe::ReduceOp::kSum); },
         [&] { MPI_Allreduce(MPI_IN_PLACE, x.data_ptr(), static_cast<int>(elems), MPI_FLOAT, MPI_SUM, comm); }},
        {"all_gather", 1.0 * (n - 1) / n, [&] { c.all_gather(all, part); },
         [&] {
           MPI_Allgather(part.data_ptr(), static_cast<int>(elems / n), MPI_FLOAT, all.data_ptr(), static_cast<int>(elems / n),
                         MPI_FLOAT, comm);
         }},
    };
    for (const Case& k : cases) {
      // Interleaved: raw, Lethe, raw, Lethe … so drift hits both alike.
      const double t_raw = median_seconds(comm, iters, 5, k.raw);
      const double t_lethe = median_seconds(comm, iters, 5, k.lethe);
      if (c.rank() == 0) {
        auto busbw = [&](double t) { return static_cast<double>(bytes) / t * k.factor / 1e9; };
        std::printf("| %s | %lld | %.1f us | %.2f GB/s | %.1f us | %.2f GB/s | %.2f |\n", k.op,
                    static_cast<long long>(bytes), t_lethe * 1e6, busbw(t_lethe), t_raw * 1e6, busbw(t_raw),
                    t_lethe / t_raw);
      }
    }
  }
  return 0;
}

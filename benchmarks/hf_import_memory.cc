// Peak host memory per rank importing a Hugging Face folder: Lethe's import (each rank maps the
// safetensors and reads only its tp slice of each tensor) against a whole-file load (every tensor
// of every shard read whole, as a state dict, then sliced), in the same process layout.
//   build/benchmarks/lethe_bench_hf_import write DIR           a 0.49B Llama as BF16 safetensors
//   mpirun -np N build/benchmarks/lethe_bench_hf_import slice|whole DIR
// Each rank builds its model shard first, resets its peak RSS (/proc/self/clear_refs), imports, and
// reports VmHWM: the model's own fp32 shard plus whatever the import needed on top of it.
#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include "base/memory.h"
#include "collectives/world.h"
#include "io/safetensors.h"
#include "runtime/hf_checkpoint.h"
#include "runtime/mesh.h"

namespace {

using namespace lethe;

// Every tensor of every shard read whole, then this rank's slice copied into each parameter.
Status load_whole(const std::string& dir, Llama& model) {
  std::vector<SafetensorsFile> files;
  std::map<std::string, at::Tensor> state;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors") continue;
    LETHE_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open(e.path().string()));
    for (const SafetensorsEntry& t : f.entries()) state[t.name] = f.read(t);
  }
  at::NoGradGuard no_grad;
  const Mesh& mesh = model.mesh();
  for (Param& p : model.params()) {
    at::Tensor full = state.at(hf_name(p.name));
    if (p.split_dim >= 0) {
      const int64_t n = full.size(p.split_dim) / mesh.tp_size();
      full = full.narrow(p.split_dim, mesh.tp_rank() * n, n);
    }
    p.value.copy_(full);
  }
  return Status::ok();
}

ModelConfig bench_model() { return llama_shape(32000, 2048, 5632, 8, 16, 4, 2048); }

Status run(const std::string& mode, const std::string& dir) {
  LETHE_ASSIGN_OR_RETURN(World world, init_world(600));
  Communicator& c = *world.comm;
  MeshConfig mc;
  mc.tp = c.size();
  LETHE_ASSIGN_OR_RETURN(Mesh mesh, Mesh::create(c, mc));
  ModelConfig cfg = bench_model();
  if (mode == "write") {
    Llama model(cfg, mesh, 1);
    return export_hf(model, dir, 200'000'000, at::kBFloat16);
  }
  LETHE_RETURN_IF_ERROR(read_hf_config(dir + "/config.json", cfg));
  Llama model(cfg, mesh, 1);
  const double before = host_memory_gb("VmRSS");
  reset_peak_host_memory();
  LETHE_RETURN_IF_ERROR(mode == "slice" ? load_hf_weights(dir, model) : load_whole(dir, model));
  const double peak = host_memory_gb("VmHWM");
  at::Tensor mine = at::tensor({peak}, at::kDouble), gathered = at::empty({c.size()}, at::kDouble);
  c.all_gather(gathered, mine);
  if (c.rank() == 0) {
    double files = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      if (e.path().extension() == ".safetensors") files += static_cast<double>(e.file_size()) / 1e9;
    }
    std::printf("%s, tp %d: files %.2f GB (bf16), fp32 shard per rank %.2f GB, RSS before import %.2f GB, peak RSS per rank:",
                mode.c_str(), c.size(), files, static_cast<double>(model.num_params_global()) * 4 / 1e9 / c.size(), before);
    for (int r = 0; r < c.size(); ++r) std::printf(" %.2f", gathered[r].item<double>());
    std::printf(" GB\n");
  }
  return Status::ok();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc == 3 ? argv[1] : "";
  if (mode != "write" && mode != "slice" && mode != "whole") {
    std::fprintf(stderr, "usage: %s write|slice|whole DIR\n", argv[0]);
    return 2;
  }
  const Status s = run(mode, argv[2]);
  if (!s) std::fprintf(stderr, "error: %s\n", s.message().c_str());
  return s ? 0 : 1;
}

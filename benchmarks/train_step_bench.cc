// Train-step throughput: tokens/s and model FLOP/s (Megatron convention) for ~1M and ~10M
// parameter Llama models, next to the machine's measured f32/bf16 matmul rate in the same run (so
// "fraction of achievable" is a ratio taken side by side). Modes: 0 fp32; 1 bf16 weights in
// buckets with fp32 masters (train.dtype = "bf16"); 2 bf16 compute over fp32 weights cast in every
// forward (how bf16 ran before the weights were kept in bf16), for the before/after comparison.
// Run: build/benchmarks/lethe_bench_train [--benchmark_repetitions=5 --benchmark_report_aggregates_only]
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdlib>

#include "base/memory.h"
#include "benchmarks/random_tokens.h"
#include "collectives/local_communicator.h"
#include "runtime/trainer.h"

namespace lethe {
namespace {

ModelConfig model_of_size(int64_t size) {
  ModelConfig m;
  if (size == 1) {  // 0.87M parameters: the quickstart's default
    m.vocab_size = 512, m.hidden_size = 128, m.intermediate_size = 352, m.num_hidden_layers = 4;
    m.num_attention_heads = 4, m.num_key_value_heads = 2;
  } else {  // 11M parameters
    m.vocab_size = 2048, m.hidden_size = 384, m.intermediate_size = 1024, m.num_hidden_layers = 6;
    m.num_attention_heads = 6, m.num_key_value_heads = 2;
  }
  m.max_position_embeddings = 128;
  return m;
}

void BM_TrainStep(benchmark::State& state) {
  const int64_t size = state.range(0);
  const int64_t mode = state.range(1);
  const int64_t B = 8, T = 128;
  keep_freed_host_memory();  // as `lethe` does (Note [Freed host memory stays])
  LocalCommunicator world;
  Mesh mesh = Mesh::create(world, MeshConfig{}).value();
  ModelConfig m = model_of_size(size);
  TrainConfig tc;
  tc.batch_size = B;
  tc.steps = 1000000;
  tc.warmup_steps = 0;
  TokenDataset ds = random_tokens(64, T, m.vocab_size);
  Llama model(m, mesh, 1, {mode == 1 ? at::kBFloat16 : at::kFloat});
  if (mode == 2) model.set_compute_dtype(at::kBFloat16);
  Trainer trainer(model, mesh, tc, ds, 1);
  trainer.step();  // warm-up (allocations, oneDNN kernels)
  for (auto _ : state) trainer.step();
  const double tokens = static_cast<double>(state.iterations() * B * T);
  state.counters["params_M"] = static_cast<double>(model.num_params_global()) / 1e6;
  state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsRate);
  state.counters["model_FLOP/s"] = benchmark::Counter(tokens * train_flops_per_token(m, T), benchmark::Counter::kIsRate);
  state.SetLabel(mode == 0 ? "fp32" : mode == 1 ? "bf16 weights" : "bf16 compute, fp32 weights");
}
BENCHMARK(BM_TrainStep)->ArgsProduct({{1, 10}, {0, 1, 2}})->ArgNames({"size_M", "mode"})->Unit(benchmark::kMillisecond)->UseRealTime();

// The achievable dense matmul rate: n × n by n × n.
void BM_Matmul(benchmark::State& state) {
  const int64_t n = state.range(0);
  const auto dtype = state.range(1) == 1 ? at::kBFloat16 : at::kFloat;
  at::Tensor a = at::randn({n, n}).to(dtype), b = at::randn({n, n}).to(dtype);
  at::mm(a, b);
  for (auto _ : state) benchmark::DoNotOptimize(at::mm(a, b));
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * n * n * n * state.iterations(), benchmark::Counter::kIsRate);
  state.SetLabel(dtype == at::kBFloat16 ? "bf16" : "fp32");
}
BENCHMARK(BM_Matmul)->ArgsProduct({{1024}, {0, 1}})->ArgNames({"n", "bf16"})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace lethe

int main(int argc, char** argv) {
  const char* env = std::getenv("OMP_NUM_THREADS");
  at::set_num_threads(env ? std::atoi(env) : 2);
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("torch_threads", std::to_string(at::get_num_threads()));
  // OpenBLAS's kernels follow this variable when it is set (benchmarks/README.md, the machine).
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  benchmark::AddCustomContext("OPENBLAS_CORETYPE", core ? core : "unset (OpenBLAS detects the CPU)");
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}

// Measured memory of real unlearning steps against `lethe plan`, component by component.
//   mpirun -np TP·DP build/benchmarks/lethe_bench_memory TP fp32|bf16 replicated|zero1|distributed graddiff|npo|kl [lora]
// (benchmarks/memory_vs_plan.sh runs the table). Each rank builds what unlearn_one builds, in its
// order — the reference (kl, npo), NPO's cache and the reference freed, the trained model, the
// engine with its optimizer — and reads its anonymous resident memory (RssAnon) after each; then
// it runs one unlearning step (with `lora`: the frozen base with rank-16 adapters on every
// projection, and the base as the reference, as unlearn_one builds them), resets its peak (VmHWM, /proc/self/clear_refs) and runs another:
// that step's peak above the resident state. Every number is a real counter of this process's pages; the planner is given
// the same model, layout and batch and knows nothing of the measurement. Run with
// MALLOC_MMAP_THRESHOLD_=65536 so that freed tensors leave the RSS at once.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "base/memory.h"
#include "benchmarks/random_tokens.h"
#include "collectives/world.h"
#include "launch/plan.h"
#include "runtime/unlearner.h"
#include "strategies/strategies.h"

namespace {

using namespace lethe;

// 246M parameters: tensors dominate the process (a few hundred MB of libraries and MPI).
ModelConfig bench_model() { return llama_shape(32000, 1024, 2816, 16, 16, 4, 128); }

// Short rows, one per rank and forward, one step: bf16 matmuls run at about 5 GFLOP/s on CPUs
// without AVX-512 (benchmarks/README.md), and the states are what this benchmark checks.
constexpr int64_t kSeq = 32, kRowsPerRank = 1;

double rss() { return host_memory_gb("VmRSS") * 1e9; }
// Anonymous pages only: tensors, not the libraries' code.
double anon() { return host_memory_gb("RssAnon") * 1e9; }

// The largest value over the world's ranks.
double max_over_ranks(Communicator& c, double x) {
  at::Tensor t = at::tensor({x}, at::kDouble);
  c.all_reduce(t, ReduceOp::kMax);
  return t.item<double>();
}

Status run(int64_t tp, const std::string& dtype, const std::string& optimizer, const std::string& method, bool lora) {
  LETHE_ASSIGN_OR_RETURN(World world, init_world(600));
  Communicator& c = *world.comm;
  at::set_num_threads(std::max(1, 2 / c.size()));
  MeshConfig mc;
  mc.tp = tp;
  mc.dp = c.size() / tp;
  mc.optimizer = optimizer;
  LETHE_ASSIGN_OR_RETURN(Mesh mesh, Mesh::create(c, mc));
  const ModelConfig cfg = bench_model();
  UnlearnConfig u;
  u.methods = {method};
  u.forget_batch = u.retain_batch = kRowsPerRank * mesh.dp_size();
  u.unlearn_steps = 1;
  u.learn_steps = 0;
  u.max_cycles = 2;
  u.npo_retain = "nll";
  LETHE_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, make_strategy(method, u));
  std::vector<UnlearnRequest> requests;
  requests.push_back({"forget-0", random_tokens(4 * mesh.dp_size(), kSeq, cfg.vocab_size), {}});
  requests.back().forget.name = "forget-0";
  const TokenDataset retain = random_tokens(8 * mesh.dp_size(), kSeq, cfg.vocab_size);
  const at::ScalarType weights = dtype == "bf16" ? at::kBFloat16 : at::kFloat;

  // Pages of the libraries' kernels count in the RSS once touched: a small model's unlearning cycle
  // touches them first, so that what follows grows by tensors only.
  {
    const ModelConfig small = llama_shape(512, 64, 128, 1, 4, 2, 128);
    Llama warm(small, mesh, 1, ModelOptions{weights, true, true});
    Llama warm_ref(small, mesh, 1, ModelOptions{weights, true, false});
    std::vector<UnlearnRequest> r;
    r.push_back({"warm", random_tokens(4 * mesh.dp_size(), kSeq, small.vocab_size), {}});
    const TokenDataset re = random_tokens(8 * mesh.dp_size(), kSeq, small.vocab_size);
    LETHE_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> s, make_strategy(method, u));
    Cost unused;
    LETHE_RETURN_IF_ERROR(Unlearner::prepare(*s, r, {{}, &warm_ref, nullptr, nullptr, nullptr, &unused}));
    Unlearner e(warm, mesh, *s, u, r, &re, nullptr, &warm_ref, 3);
    LETHE_RETURN_IF_ERROR(e.run(UnlearnHooks{}));
  }
  const double base = rss();
  reset_peak_host_memory();
  double reference = 0, caching = 0;
  std::unique_ptr<Llama> ref;
  Cost cost;
  const LoraOptions adapters{16, 32.0, lora_target_names(), 0.05};
  const int64_t lora_rank = lora ? adapters.rank : 0;
  std::unique_ptr<Llama> model;
  double model_bytes = 0;
  if (lora) {  // the model first; its base is the reference (a view)
    const double before = anon();
    model = std::make_unique<Llama>(cfg, mesh, 2, ModelOptions{weights, true, false});
    model->add_lora(adapters);
    model_bytes = anon() - before;
    if (strategy->needs_reference()) ref = model->base_view();
    reference = anon() - before - model_bytes;
    LETHE_RETURN_IF_ERROR(Unlearner::prepare(*strategy, requests, {{}, ref.get(), nullptr, nullptr, nullptr, &cost}));
  } else if (strategy->needs_reference()) {
    const double before = anon();
    ref = std::make_unique<Llama>(cfg, mesh, 1, ModelOptions{weights, true, /*trainable=*/false});
    reference = anon() - before;
    LETHE_RETURN_IF_ERROR(Unlearner::prepare(*strategy, requests, {{}, ref.get(), nullptr, nullptr, nullptr, &cost}));
    caching = host_memory_gb("VmHWM") * 1e9 - base;
  }
  if (!strategy->keeps_reference()) ref.reset();
  if (!lora) {
    const double before = anon();
    model = std::make_unique<Llama>(cfg, mesh, 2, ModelOptions{weights, true, true});
    model_bytes = anon() - before;
  }
  const double before_engine = anon();
  Unlearner engine(*model, mesh, *strategy, u, requests, &retain, nullptr, ref.get(), 3);
  engine.add_cost(cost);
  const double optimizer_bytes = anon() - before_engine;
  const double resident = rss() - base;
  // The step's peak above the resident state: the second step, once the first has allocated and
  // freed whatever a first step allocates once.
  UnlearnHooks one_cycle;
  one_cycle.stop_after_cycles = 1;
  LETHE_RETURN_IF_ERROR(engine.run(one_cycle));
  const double settled = rss();
  reset_peak_host_memory();
  LETHE_RETURN_IF_ERROR(engine.run(one_cycle));
  const double step = host_memory_gb("VmHWM") * 1e9 - settled;
  const double total = std::max(resident + step, caching);

  PlanInput in;
  in.model = cfg;
  in.tp = tp;
  in.dp = mesh.dp_size();
  in.bf16 = dtype == "bf16";
  in.optimizer = optimizer;
  LETHE_ASSIGN_OR_RETURN(in.reference, reference_use_of(method));
  in.checkpointing = false;
  in.fused_attention = false;  // LibTorch 1.13 (the CPU build): the explicit softmax path
  in.seq_len = kSeq;
  in.micro_batch = kRowsPerRank;
  in.forwards = 2;
  in.lora_rank = lora_rank;
  LETHE_ASSIGN_OR_RETURN(Plan plan, make_plan(in));
  const MemoryPlan& p = plan.memory;
  const double measured[] = {max_over_ranks(c, model_bytes), max_over_ranks(c, optimizer_bytes),
                             max_over_ranks(c, reference), max_over_ranks(c, step), max_over_ranks(c, total)};
  // fp32 models (and LoRA adapters) get their gradients in the first backward: the step's part,
  // as the plan has it.
  const bool grads_in_step = !in.bf16 || lora_rank > 0;
  const double planned_model = p.weights + (grads_in_step ? 0 : p.grads);
  const double planned_optimizer = p.master + p.moments + p.grad_buckets;
  const double planned_step =
      std::max(std::max(p.activations, p.first_forward + p.held_grads) + p.logits, p.step_buffers) + (grads_in_step ? p.grads : 0);
  const double planned[] = {planned_model, planned_optimizer, p.reference, planned_step, p.total()};
  if (c.rank() == 0) {
    std::printf("| %lld×%lld | %s | %s | %s%s |", static_cast<long long>(tp), static_cast<long long>(mesh.dp_size()), dtype.c_str(),
                optimizer.c_str(), method.c_str(), lora_rank > 0 ? " LoRA r16" : "");
    for (int i = 0; i < 5; ++i) {
      std::printf(" %.0f / %.0f |", measured[i] / 1e6, planned[i] / 1e6);
    }
    std::printf(" %+.1f %% |\n", 100 * (measured[4] / planned[4] - 1));
  }
  return Status::ok();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 && !(argc == 6 && std::string(argv[5]) == "lora")) {
    std::fprintf(stderr, "usage: %s TP fp32|bf16 replicated|zero1|distributed graddiff|npo|kl [lora]\n", argv[0]);
    return 2;
  }
  const Status s = run(std::atoll(argv[1]), argv[2], argv[3], argv[4], argc == 6);
  if (!s) std::fprintf(stderr, "error: %s\n", s.message().c_str());
  return s ? 0 : 1;
}

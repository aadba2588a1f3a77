// GPU benchmark: Lethe's train step and NPO unlearning step on Llama-shaped models of about 125M,
// 1B and the largest that fits one GPU with AdamW, at seq 2048, bf16 compute with fp32 masters.
// For each size: tokens/s, model FLOP/s (Megatron convention, train_flops_per_token), MFU against
// the H100/H200 bf16 dense peak and against a bf16 matmul rate measured in the same run, peak
// device memory, and where a step's time goes (GEMMs, attention, optimizer, communication, rest),
// from the same shapes timed one component at a time. Writes JSON that hf_bench.py reads (the same
// configs, trained with transformers) and that table.py turns into the README's table.
//
// Run on the GPU machine: benchmarks/gpu/run.sh. --dry-run: tiny shapes, on the CPU here.
#include <ATen/ATen.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>

#include "base/check.h"
#include "base/memory.h"
#include "base/torch_compat.h"
#include "benchmarks/random_tokens.h"
#include "collectives/local_communicator.h"
#include "collectives/nccl_communicator.h"
#include "collectives/world.h"
#include "runtime/trainer.h"
#include "strategies/strategies.h"

namespace lethe {
namespace {

using json = nlohmann::json;
constexpr double kPeakBf16 = 989e12;  // H100 / H200 SXM dense bf16, the MFU convention's denominator

struct Size {
  std::string name;
  ModelConfig model;
  int64_t batch;       // rows per step
  bool checkpointing;  // activation checkpointing (the largest sizes need it to fit)
};

ModelConfig llama(int64_t hidden, int64_t layers, int64_t heads, int64_t kv, int64_t ffn, int64_t seq) {
  ModelConfig m;
  m.vocab_size = 32000, m.hidden_size = hidden, m.num_hidden_layers = layers, m.num_attention_heads = heads;
  m.num_key_value_heads = kv, m.intermediate_size = ffn, m.max_position_embeddings = seq;
  return m;
}

// Llama-shaped sizes (32000-token vocabulary, untied head). "max" tries the larger ones in turn.
std::vector<Size> sizes_named(const std::string& name, int64_t seq) {
  if (name == "tiny") {
    ModelConfig m = llama(64, 2, 4, 2, 176, seq);
    m.vocab_size = 512;
    return {{"tiny", m, 4, false}};
  }
  if (name == "125m") return {{name, llama(768, 12, 12, 12, 2048, seq), 16, false}};
  if (name == "1b") return {{name, llama(2048, 16, 32, 8, 8192, seq), 8, false}};
  if (name == "3b") return {{name, llama(3072, 28, 24, 8, 8192, seq), 4, true}};
  if (name == "7b") return {{name, llama(4096, 32, 32, 32, 11008, seq), 2, true}};
  if (name == "max") return {sizes_named("7b", seq)[0], sizes_named("3b", seq)[0]};
  return {};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Median seconds of `fn` over `reps` runs after `warmup`, each closed by a device synchronize.
double time_median(at::Device dev, int warmup, int reps, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  compat::synchronize(dev);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    compat::synchronize(dev);
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return median(t);
}

// The achievable dense bf16 matmul rate on this device, n × n by n × n.
double matmul_flops(at::Device dev, int64_t n) {
  const auto o = at::TensorOptions(dev).dtype(at::kBFloat16);
  at::Tensor a = at::randn({n, n}, o), b = at::randn({n, n}, o);
  return 2.0 * n * n * n / time_median(dev, 3, 10, [&] { at::mm(a, b); });
}

// Seconds of the GEMMs and of the attention core of one step at this size, timed alone with the
// step's shapes (forward counted twice under activation checkpointing), and of one AdamW update.
json profile(const Size& s, int64_t seq, at::Device dev, Llama& model, AdamW& opt) {
  const ModelConfig& m = s.model;
  const int64_t BT = s.batch * seq, D = m.hidden_size, d = m.head_dim();
  const auto o = at::TensorOptions(dev).dtype(at::kBFloat16);
  const std::vector<std::pair<int64_t, int64_t>> layer_gemms = {  // [out, in] of q, k, v, o, gate, up, down
      {m.num_attention_heads * d, D}, {m.num_key_value_heads * d, D}, {m.num_key_value_heads * d, D},
      {D, m.num_attention_heads * d}, {m.intermediate_size, D},       {m.intermediate_size, D},
      {D, m.intermediate_size}};
  // Forward runs twice per block under activation checkpointing (the LM head's once).
  const double passes = s.checkpointing ? 2.0 : 1.0, L = static_cast<double>(m.num_hidden_layers);
  double gemms = 0;
  auto add_gemm = [&](int64_t out, int64_t in, double forwards, double backwards) {
    at::Tensor x = at::randn({BT, in}, o), w = at::randn({out, in}, o), dy = at::randn({BT, out}, o);
    gemms += forwards * time_median(dev, 2, 5, [&] { at::mm(x, w.t()); });
    gemms += backwards * time_median(dev, 2, 5, [&] {
      at::mm(dy, w);      // dX
      at::mm(dy.t(), x);  // dW
    });
  };
  for (auto [out, in] : layer_gemms) add_gemm(out, in, passes * L, L);
  add_gemm(m.vocab_size, D, 1.0, 1.0);  // LM head

  const int64_t h = m.num_attention_heads;
  at::Tensor q = at::randn({s.batch, h, seq, d}, o).requires_grad_(true);
  at::Tensor k = at::randn({s.batch, h, seq, d}, o).requires_grad_(true);
  at::Tensor v = at::randn({s.batch, h, seq, d}, o).requires_grad_(true);
  at::Tensor go = at::randn({s.batch, h, seq, d}, o);
  const double attn_fwd = time_median(dev, 2, 5, [&] {
    at::NoGradGuard no_grad;
    compat::attention(q, k, v, at::Tensor());
  });
  const double attn_fwd_bwd = time_median(dev, 2, 5, [&] {
    at::Tensor out = compat::attention(q, k, v, at::Tensor());
    torch::autograd::grad({out}, {q, k, v}, {go});
  });
  const double attention = L * (attn_fwd_bwd + (passes - 1.0) * attn_fwd);

  // Gradients drawn once; each timed update gets them back (step() clears them) by reference.
  std::vector<at::Tensor> grads;
  for (const Param& p : model.params()) grads.push_back(at::randn_like(p.value) * 1e-3);
  const double optimizer = time_median(dev, 1, 3, [&] {
    for (size_t i = 0; i < grads.size(); ++i) {
      at::Tensor& g = model.params()[i].value.mutable_grad();  // a bucket view in bf16 models
      if (g.defined()) {
        g.copy_(grads[i]);
      } else {
        g = grads[i];
      }
    }
    opt.step(1e-6, 1.0);
  });
  return {{"gemm_s", gemms}, {"attention_s", attention}, {"optimizer_s", optimizer}, {"communication_s", 0.0}};
}

// One size: train steps, NPO steps and the profile. Throws (c10::Error) when it does not fit.
json run_size(const Size& s, int64_t seq, at::Device dev, const Mesh& mesh, int warmup, int steps) {
  compat::reset_peak_device_memory(dev);
  reset_peak_host_memory();
  TrainConfig tc;
  tc.batch_size = s.batch, tc.steps = 1 << 30, tc.warmup_steps = 0, tc.dtype = "bf16";
  tc.activation_checkpointing = s.checkpointing;
  TokenDataset ds = random_tokens(std::max<int64_t>(4 * s.batch, 64), seq, s.model.vocab_size);
  Llama model(s.model, mesh, 1, {at::kBFloat16});
  model.set_activation_checkpointing(s.checkpointing);
  Trainer trainer(model, mesh, tc, ds, 1);
  std::vector<double> t;
  for (int i = 0; i < warmup + steps; ++i) {
    const StepStats st = trainer.step();  // ends in host reads of the loss and norm: synchronized
    if (i >= warmup) t.push_back(st.seconds);
  }
  const double step_s = median(t), tokens = static_cast<double>(s.batch * seq);
  const double flops = train_flops_per_token(s.model, seq) * tokens / step_s;
  json r = {{"name", s.name},
            {"params", model.num_params_global()},
            {"config", json::parse(hf_config_json(s.model, "float32"))},
            {"batch", s.batch},
            {"seq", seq},
            {"activation_checkpointing", s.checkpointing},
            {"train", {{"step_s", step_s}, {"tokens_per_s", tokens / step_s}, {"model_flops_per_s", flops}}}};
  r["train"]["peak_device_gb"] = compat::peak_device_memory_gb(dev);
  r["train"]["peak_host_gb"] = host_memory_gb("VmHWM");
  r["profile"] = profile(s, seq, dev, model, trainer.optimizer());
  return r;
}

// NPO with a reference model and an NLL retain term: forget and retain batches of batch / 2 rows
// each, through Lethe's own strategy (reference log-likelihoods cached once per request, as in an
// unlearning run). Throws (c10::Error) when it does not fit.
json run_npo(const Size& s, int64_t seq, at::Device dev, const Mesh& mesh, int warmup, int steps) {
  compat::reset_peak_device_memory(dev);
  Llama model(s.model, mesh, 1, {at::kBFloat16}), reference(s.model, mesh, 1, {at::kBFloat16, true, /*trainable=*/false});
  model.set_activation_checkpointing(s.checkpointing);
  UnlearnConfig uc;
  uc.npo_retain = "nll";
  auto npo = make_strategy("npo", uc).value();
  const int64_t half = std::max<int64_t>(1, s.batch / 2);
  TokenDataset forget = random_tokens(4 * half, seq, s.model.vocab_size), retain = random_tokens(4 * half, seq, s.model.vocab_size);
  Cost cost;
  LETHE_CHECK(npo->begin({{&forget, &retain, nullptr}, &reference, &cost, &model, &uc}).is_ok());
  AdamW opt(model, AdamHyper{0.9, 0.98, 1e-8, 0.0}, mesh);
  std::vector<double> t;
  for (int i = 0; i < warmup + steps; ++i) {
    std::vector<int64_t> f, rr;
    for (int64_t j = 0; j < half; ++j) f.push_back((i * half + j) % forget.rows()), rr.push_back((i * half + j) % retain.rows());
    const auto start = std::chrono::steady_clock::now();
    UnlearnBatch b{make_batch(forget, f, dev), make_batch(retain, rr, dev)};
    torch::autograd::backward({npo->loss(model, b).total()});
    opt.step(1e-6, 1.0).item<double>();  // its gradient norm is read on the host: synchronized
    if (i >= warmup) t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  const double npo_s = median(t), npo_tokens = static_cast<double>(2 * half * seq);
  return {{"step_s", npo_s},
          {"tokens_per_s", npo_tokens / npo_s},
          {"model_flops_per_s", train_flops_per_token(s.model, seq) * npo_tokens / npo_s},
          {"peak_device_gb", compat::peak_device_memory_gb(dev)}};
}

// Fills the MFU fields of a phase's result.
void add_mfu(json& phase, double matmul) {
  const double f = phase["model_flops_per_s"].get<double>();
  phase["mfu_peak"] = f / kPeakBf16;
  phase["mfu_matmul"] = f / matmul;
}

int run(int argc, char** argv) {
  CLI::App app{"Lethe GPU benchmark: train and NPO steps, MFU, step profile"};
  std::string sizes = "125m,1b,max", device = "auto", out = "lethe_gpu.json";
  int64_t seq = 2048;
  int warmup = 3, steps = 10;
  bool dry = false;
  app.add_option("--sizes", sizes, "comma-separated: 125m, 1b, 3b, 7b, max (the largest that fits), tiny");
  app.add_option("--seq", seq, "tokens per row");
  app.add_option("--warmup", warmup, "untimed steps per size");
  app.add_option("--steps", steps, "timed steps per size (the median is reported)");
  app.add_option("--device", device, "auto, cpu or cuda");
  app.add_option("--json", out, "where the results go");
  app.add_flag("--dry-run", dry, "the tiny size at seq 64 alone, for a check on the CPU");
  CLI11_PARSE(app, argc, argv);
  if (dry) sizes = "tiny", seq = std::min<int64_t>(seq, 64);

  World world{std::make_unique<LocalCommunicator>()};
  world.device = cuda_device_count() > 0 ? 0 : -1;
  const Result<at::Device> dev_or = resolve_device(device, world);
  if (!dev_or.is_ok()) {
    std::fprintf(stderr, "%s\n", dev_or.status().message().c_str());
    return 2;
  }
  const at::Device dev = dev_or.value();
  Mesh mesh = Mesh::create(*world.comm, MeshConfig{}, dev).value();
  const double mm = matmul_flops(dev, dry ? 512 : 8192);
  json result = {{"device", dev.str()}, {"torch", compat::kTorchVersion}, {"peak_bf16_flops", kPeakBf16},
                 {"matmul_bf16_flops", mm}, {"sizes", json::array()}};
  std::printf("device %s, LibTorch %s, measured bf16 matmul %.1f TFLOP/s\n", dev.str().c_str(), compat::kTorchVersion,
              mm / 1e12);
  std::string list = sizes + ",";
  for (size_t at = 0, next; (next = list.find(',', at)) != std::string::npos; at = next + 1) {
    const std::string name = list.substr(at, next - at);
    const std::vector<Size> tries = sizes_named(name, seq);
    if (tries.empty()) {
      std::fprintf(stderr, "--sizes: unknown size \"%s\" (125m, 1b, 3b, 7b, max, tiny)\n", name.c_str());
      return 2;
    }
    for (const Size& s : tries) {
      try {
        json r = run_size(s, seq, dev, mesh, warmup, steps);
        r["requested"] = name;
        add_mfu(r["train"], mm);
        std::printf("%-5s %6.2fB params: train %.0f tok/s, MFU %.1f%% of peak (%.1f%% of matmul), %.1f GB\n",
                    s.name.c_str(), r["params"].get<double>() / 1e9, r["train"]["tokens_per_s"].get<double>(),
                    100 * r["train"]["mfu_peak"].get<double>(), 100 * r["train"]["mfu_matmul"].get<double>(),
                    r["train"]["peak_device_gb"].get<double>());
        try {
          r["npo"] = run_npo(s, seq, dev, mesh, warmup, steps);
          add_mfu(r["npo"], mm);
          std::printf("%-5s NPO step %.0f tok/s, %.1f GB\n", s.name.c_str(), r["npo"]["tokens_per_s"].get<double>(),
                      r["npo"]["peak_device_gb"].get<double>());
        } catch (const c10::Error& e) {
          std::printf("%s: the NPO step (two models) does not fit: %.200s\n", s.name.c_str(), e.what());
          r["npo"] = nullptr;
        }
        std::fflush(stdout);
        result["sizes"].push_back(r);
        break;
      } catch (const c10::Error& e) {  // out of memory: the next (smaller) candidate
        std::printf("%s does not fit: %.200s\n", s.name.c_str(), e.what());
      }
    }
  }
  std::ofstream(out) << result.dump(2) << "\n";
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

}  // namespace
}  // namespace lethe

int main(int argc, char** argv) { return lethe::run(argc, argv); }

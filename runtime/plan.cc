#include "runtime/plan.h"

#include <fmt/format.h>

#include "runtime/mesh.h"
#include "runtime/model.h"

namespace lethe {

namespace {

ModelConfig llama(int64_t V, int64_t D, int64_t F, int64_t L, int64_t H, int64_t G, int64_t ctx, double theta) {
  ModelConfig m;
  m.vocab_size = V;
  m.hidden_size = D;
  m.intermediate_size = F;
  m.num_hidden_layers = L;
  m.num_attention_heads = H;
  m.num_key_value_heads = G;
  m.max_position_embeddings = ctx;
  m.rope_theta = theta;
  m.rms_norm_eps = 1e-5;
  return m;
}

MemoryPlan memory(const PlanInput& in, int64_t tp, int64_t dp, double psi) {
  const ModelConfig& m = in.model;
  const double t = static_cast<double>(tp), s = static_cast<double>(in.seq_len), b = static_cast<double>(in.micro_batch);
  const double h = m.hidden_size, a = m.num_attention_heads, L = m.num_hidden_layers;
  const double w = in.bf16 ? 2 : 4;  // bytes of a weight, gradient or activation in compute
  MemoryPlan p;
  p.weights = w * psi / t;
  p.grads = w * psi / t;
  p.optimizer = (16 - 2 * w) * psi / t / (in.zero1 ? static_cast<double>(dp) : 1.0);
  p.reference = in.reference ? w * psi / t : 0;
  const double layer = w / 2 * s * b * h * (10 + 24 / t + 5 * a * s / (h * t));
  p.activations_no_ckpt = L * layer;
  p.activations = in.checkpointing ? L * w * s * b * h + layer : p.activations_no_ckpt;
  p.logits = 4 * s * b * static_cast<double>(m.vocab_size) / t;
  return p;
}

bool fits(const PlanInput& in, const MemoryPlan& p) { return p.total() <= in.usable * in.gpu_gb * 1e9; }

}  // namespace

double MemoryPlan::total() const { return weights + grads + optimizer + reference + activations + logits; }

Result<ModelConfig> model_preset(const std::string& name) {
  if (name == "llama-2-7b") return llama(32000, 4096, 11008, 32, 32, 32, 4096, 1e4);
  if (name == "llama-2-13b") return llama(32000, 5120, 13824, 40, 40, 40, 4096, 1e4);
  if (name == "llama-2-70b") return llama(32000, 8192, 28672, 80, 64, 8, 4096, 1e4);
  if (name == "llama-3-8b") return llama(128256, 4096, 14336, 32, 32, 8, 8192, 5e5);
  if (name == "llama-3-70b") return llama(128256, 8192, 28672, 80, 64, 8, 8192, 5e5);
  return Status::error("unknown model preset '" + name + "' (llama-2-7b, llama-2-13b, llama-2-70b, llama-3-8b, llama-3-70b)");
}

Result<Plan> make_plan(const PlanInput& in) {
  if (in.tp < 1 || in.dp < 1 || in.seq_len < 1 || in.micro_batch < 1) {
    return Status::error(fmt::format("plan: tp ({}), dp ({}), seq ({}) and batch ({}) must each be at least 1", in.tp, in.dp,
                                     in.seq_len, in.micro_batch));
  }
  if (!(in.gpu_gb > 0) || !(in.usable > 0 && in.usable <= 1)) return Status::error("plan: GPU memory must be > 0 GB");
  if (!(in.unlearn_tokens >= 0 && in.retrain_tokens >= 0)) return Status::error("plan: token counts must be ≥ 0");
  if (!(in.tokens_per_s_per_gpu > 0) && !(in.mfu > 0 && in.mfu <= 1 && in.peak_tflops > 0)) {
    return Status::error(fmt::format("plan: need a throughput (tokens/s per GPU > 0) or an MFU in (0, 1] (got {}) and a "
                                     "peak > 0 TFLOP/s (got {})", in.mfu, in.peak_tflops));
  }
  LETHE_RETURN_IF_ERROR(check_model_for_tp(in.model, in.tp));
  Plan p;
  for (const ParamSpec& s : llama_param_specs(in.model)) {
    int64_t n = 1;
    for (int64_t d : s.global_shape) n *= d;
    p.params += n;
  }
  const double psi = static_cast<double>(p.params);
  p.memory = memory(in, in.tp, in.dp, psi);
  p.fits = fits(in, p.memory);
  // Fewest GPUs: tp within a node (1, 2, 4, 8, dividing the model), dp a power of two up to 4096.
  for (int64_t tp = 1; tp <= 8; tp *= 2) {
    if (!check_model_for_tp(in.model, tp)) continue;
    for (int64_t dp = 1; dp <= 4096; dp *= 2) {
      if (!fits(in, memory(in, tp, dp, psi))) {
        if (!in.zero1) break;  // without ZeRO-1 more dp ranks hold the same bytes each
        continue;
      }
      if (!p.min_layout || tp * dp < p.min_layout->first * p.min_layout->second) p.min_layout = {{tp, dp}};
      break;
    }
  }
  p.flops_per_token = train_flops_per_token(in.model, in.seq_len);
  p.tokens_per_s_per_gpu = in.tokens_per_s_per_gpu > 0 ? in.tokens_per_s_per_gpu
                                                        : in.mfu * in.peak_tflops * 1e12 / p.flops_per_token;
  const double gpus = static_cast<double>(in.tp * in.dp);
  // A reference model's forward costs a third of a train step's FLOPs per token.
  const double unlearn_rate = p.tokens_per_s_per_gpu / (in.reference ? 4.0 / 3.0 : 1.0);
  p.unlearn_gpu_hours = in.unlearn_tokens / unlearn_rate / 3600;
  p.unlearn_hours = p.unlearn_gpu_hours / gpus;
  p.retrain_gpu_hours = in.retrain_tokens / p.tokens_per_s_per_gpu / 3600;
  p.retrain_hours = p.retrain_gpu_hours / gpus;
  return p;
}

std::string format_plan(const PlanInput& in, const Plan& p) {
  const double G = 1e9;
  const MemoryPlan& m = p.memory;
  const double n = static_cast<double>(p.params);
  std::string s = fmt::format("model: {:.2f}{} parameters, {} layers, d {}, {} heads / {} KV heads, vocabulary {}\n",
                              n >= 1e9 ? n / 1e9 : n / 1e6, n >= 1e9 ? "B" : "M", in.model.num_hidden_layers, in.model.hidden_size,
                              in.model.num_attention_heads, in.model.num_key_value_heads, in.model.vocab_size);
  s += fmt::format("layout: tp {} × dp {} = {} GPUs, ZeRO-1 {}, reference model {}, {}, seq {} × micro-batch {}\n\n",
                   in.tp, in.dp, in.tp * in.dp, in.zero1 ? "on" : "off", in.reference ? "yes" : "no",
                   in.bf16 ? "bf16 mixed precision" : "fp32", in.seq_len, in.micro_batch);
  s += "| per GPU | GB |\n|---|---|\n";
  const char* w = in.bf16 ? "bf16" : "fp32";
  s += fmt::format("| weights ({}) | {:.1f} |\n| gradients ({}) | {:.1f} |\n| optimizer ({}) | {:.1f} |\n", w,
                   m.weights / G, w, m.grads / G, in.bf16 ? "fp32 master + moments" : "fp32 moments", m.optimizer / G);
  s += fmt::format("| reference model ({}) | {:.1f} |\n| activations, checkpointing {} | {:.1f} |\n", w, m.reference / G,
                   in.checkpointing ? "on" : "off", m.activations / G);
  s += fmt::format("| (activations without checkpointing) | {:.1f} |\n| logits (fp32) | {:.1f} |\n",
                   m.activations_no_ckpt / G, m.logits / G);
  s += fmt::format("| **total** | **{:.1f}** of {:.0f} × {:.2f} usable: {} |\n\n", m.total() / G, in.gpu_gb, in.usable,
                   p.fits ? "fits" : "does NOT fit");
  if (p.min_layout) {
    s += fmt::format("fewest GPUs that fit: {} (tp {} × dp {})\n", p.min_layout->first * p.min_layout->second,
                     p.min_layout->first, p.min_layout->second);
  } else {
    s += "fewest GPUs that fit: none with tp ≤ 8" + std::string(in.zero1 ? "" : " without ZeRO-1 (try --zero1)") + "\n";
  }
  s += fmt::format("\nthroughput: {:.0f} tokens/s per GPU ({}), {:.3g} FLOP per token\n\n", p.tokens_per_s_per_gpu,
                   in.tokens_per_s_per_gpu > 0 ? "given" : fmt::format("MFU {:.2f} of {:.0f} TFLOP/s", in.mfu, in.peak_tflops),
                   p.flops_per_token);
  if (in.unlearn_tokens > 0 || in.retrain_tokens > 0) {
    s += "| | tokens | hours | GPU-hours |\n|---|---|---|---|\n";
    s += fmt::format("| unlearn | {:.3g} | {:.2f} | {:.1f} |\n", in.unlearn_tokens, p.unlearn_hours, p.unlearn_gpu_hours);
    s += fmt::format("| retrain | {:.3g} | {:.1f} | {:.0f} |\n", in.retrain_tokens, p.retrain_hours, p.retrain_gpu_hours);
    if (p.unlearn_gpu_hours > 0) s += fmt::format("retrain / unlearn: {:.0f}×\n", p.retrain_gpu_hours / p.unlearn_gpu_hours);
  }
  return s;
}

}  // namespace lethe

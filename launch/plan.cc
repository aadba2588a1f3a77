#include "launch/plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "runtime/mesh.h"
#include "runtime/model.h"
#include "strategies/strategies.h"

namespace lethe {

namespace {

ModelConfig llama(int64_t V, int64_t D, int64_t F, int64_t L, int64_t H, int64_t G, int64_t ctx, double theta) {
  ModelConfig m = llama_shape(V, D, F, L, H, G, ctx);
  m.rope_theta = theta;
  return m;
}

// Parameters one tp rank holds (tp-split tensors ÷ tp, norms whole), and the largest of them.
std::pair<double, double> local_params(const ModelConfig& m, int64_t tp) {
  double total = 0, largest = 0;
  for (const ParamSpec& s : llama_param_specs(m)) {
    double n = 1;
    for (int64_t d : s.global_shape) n *= static_cast<double>(d);
    if (s.split_dim >= 0) n /= static_cast<double>(tp);
    total += n;
    largest = std::max(largest, n);
  }
  return {total, largest};
}

// LoRA adapter parameters one tp rank holds (lora_param_specs, tp-split ones ÷ tp), the largest of
// them, and, per layer, the adapted projections' input widths as each rank sees them and their count
// (for the activations; Note [LoRA under tp]).
struct AdapterShape {
  double params = 0, largest = 0, inputs = 0, count = 0;
};
AdapterShape adapter_shape(const PlanInput& in, int64_t tp) {
  AdapterShape a;
  if (in.lora_rank <= 0) return a;
  const double t = static_cast<double>(tp), L = static_cast<double>(in.model.num_hidden_layers);
  for (const ParamSpec& s : lora_param_specs(in.model, {in.lora_rank, 1.0, in.lora_targets, 0.0})) {
    double n = static_cast<double>(s.global_shape[0] * s.global_shape[1]);
    if (s.split_dim >= 0) n /= t;
    a.params += n;
    a.largest = std::max(a.largest, n);
    if (s.name.compare(s.name.size() - 6, 6, "lora_a") == 0) {  // A's input is the projection's
      a.inputs += static_cast<double>(s.global_shape[1]) / (s.split_dim == 1 ? t : 1.0) / L;
      a.count += 1 / L;
    }
  }
  return a;
}

// Bytes saved for backward per token by one block (docs/plan.md, "Activations"): tensors autograd
// keeps, read off runtime/model.cc and runtime/layers.cc; c = bytes of the compute dtype.
double block_bytes_per_token(const PlanInput& in, int64_t tp, double c) {
  const ModelConfig& m = in.model;
  const double D = m.hidden_size, d = m.head_dim(), S = static_cast<double>(in.seq_len);
  const double h = static_cast<double>(m.num_attention_heads / tp), g = static_cast<double>(m.num_key_value_heads / tp);
  const double f = static_cast<double>(m.intermediate_size / tp);
  const double kv = g != h ? h : g;                   // heads of k and v as attention sees them (GQA repeats them)
  const double norms = 2 * (8 + c) * D;               // fp32 input and normalised copy, and the output
  const double q = (8 + c) * h * d;                   // RoPE: fp32 input and rotated half, and the output
  const double k = 8 * g * d + c * kv * d, v = c * kv * d;
  const double core = in.fused_attention ? c * h * d + 4 * h : (c == 2 ? 6 : 4) * h * S;  // SDPA out + lse, or fp32 softmax (+ bf16 copy)
  const double o = c * h * d, mlp = 4 * c * f;        // attention output; gate, up, silu(gate), product
  return norms + q + k + v + core + o + mlp;
}

// A LoRA run (docs/plan.md, "LoRA"): the frozen base in the compute dtype, and the fp32 adapters
// with their gradients and moments as an fp32 run has them; no master copy, no reference.
MemoryPlan lora_memory(const PlanInput& in, int64_t tp, int64_t dp);

MemoryPlan memory(const PlanInput& in, int64_t tp, int64_t dp) {
  if (in.lora_rank > 0) return lora_memory(in, tp, dp);
  const ModelConfig& m = in.model;
  const auto [psi, largest] = local_params(m, tp);
  const double c = in.bf16 ? 2 : 4, grad = in.bf16 && in.bf16_grads ? 2 : 4, ranks = static_cast<double>(dp);
  const bool shard_moments = in.optimizer != "replicated" && dp > 1, shard_master = in.optimizer == "distributed" && dp > 1;
  MemoryPlan p;
  p.weights = c * psi;
  p.grads = grad * psi;
  p.grad_buckets = !in.bf16 && !shard_moments && dp > 1 ? 4 * psi : 0;
  p.master = in.bf16 ? 4 * psi / (shard_master ? ranks : 1) : 0;
  p.moments = 8 * psi / (shard_moments ? ranks : 1);
  // The step (docs/plan.md): the gradient norm squares each piece in fp32 and sums it in fp64
  // (a full fp64 copy: 16 bytes per element of an fp32 gradient, 12 of the bucket in bf16 runs);
  // the update holds three fp32 temporaries of the piece it updates (the clipped gradient, √v and
  // its quotient). Sharded bf16 runs keep every bucket's reduce-scatter target; fp32 ZeRO-1 packs
  // all gradients into one send buffer. A tensor larger than mesh.bucket_mb
  // gets a bucket of its own.
  const double bucket = std::max(largest, in.bucket_mb * (1 << 20) / grad);
  const double piece = shard_moments ? std::min(largest, bucket / ranks) : largest;
  if (in.bf16) {
    p.step_buffers = std::max(12 * (shard_moments ? bucket / ranks : bucket), 12 * piece) +
                     (shard_moments ? grad * psi / ranks : 0);
  } else {
    // ZeRO-1: the packed send buffer, its own chunk, and the scratch copy of the whole input that
    // Open MPI's reduce-scatter allocates (NCCL needs none; the plan keeps it as the bound).
    p.step_buffers = shard_moments ? 4 * psi * (2 + 1 / ranks) : std::max(16 * largest, 12 * piece);
  }
  p.reference = in.reference != ReferenceUse::kNone ? c * psi : 0;

  const double D = m.hidden_size, L = m.num_hidden_layers, v = static_cast<double>(m.vocab_size / tp);
  const double rows = static_cast<double>(in.micro_batch), seq = static_cast<double>(in.seq_len);
  const double tokens = rows * seq * static_cast<double>(in.forwards);
  const double block = block_bytes_per_token(in, tp, c), final_norm = (8 + c) * D;
  p.activations_no_ckpt = tokens * (L * block + final_norm);
  // Checkpointing keeps each block's input; in backward one block per forward is recomputed.
  p.activations = in.checkpointing ? tokens * (L * c * D + final_norm + block) : p.activations_no_ckpt;
  // Log-probs: the fp32 softmax of every forward, plus the last forward's logits and fp32 copy in
  // flight; a resident reference's log-probs and the KL's terms on the retain rows.
  p.logits = tokens * 4 * v + rows * seq * (c == 2 ? 6 : 4) * v;
  if (in.reference == ReferenceUse::kResident) p.logits += rows * seq * 12 * v;
  // Backward starts with every activation alive: the logits' gradient (fp32, and its cast) and
  // the LM head's weight gradient (in the compute dtype, and its fp32 cast into a bf16 run's
  // buffer).
  p.logits += tokens * (c == 2 ? 6 : 4) * v + (c + (in.bf16 ? 4 : 0)) * v * D;
  // The forwards of one step are separate graphs: autograd runs the last one's backward first,
  // freeing its activations, and holds each weight gradient it yields until the first graph's
  // arrives. In bf16 runs those (F − 1)·c·Ψ wait beside the buffer while the first forward's
  // activations are still alive (in fp32 runs they become .grad itself, counted above).
  if (in.bf16 && in.forwards > 1) p.held_grads = static_cast<double>(in.forwards - 1) * c * psi;
  p.first_forward = p.activations / static_cast<double>(in.forwards);
  // NPO caches before the trained model exists: the reference alone, scoring a step's rows per
  // rank at a time without gradients (one block's tensors and the log-prob buffers in flight).
  if (in.reference == ReferenceUse::kCached) p.caching = p.reference + rows * seq * ((8 + c) * v + block);
  return p;
}

MemoryPlan lora_memory(const PlanInput& in, int64_t tp, int64_t dp) {
  PlanInput full = in;  // the activations and log-prob buffers of the same step at full parameters
  full.lora_rank = 0;
  full.reference = ReferenceUse::kNone;
  const MemoryPlan base = memory(full, tp, dp);
  const ModelConfig& m = in.model;
  const double psi = local_params(m, tp).first, c = in.bf16 ? 2 : 4, ranks = static_cast<double>(dp);
  const AdapterShape a = adapter_shape(in, tp);
  const bool shard_moments = in.optimizer != "replicated" && dp > 1;
  MemoryPlan p;
  p.weights = c * psi + 4 * a.params;
  p.grads = 4 * a.params;
  p.grad_buckets = !shard_moments && dp > 1 ? 4 * a.params : 0;
  p.moments = 8 * a.params / (shard_moments ? ranks : 1);
  const double piece = shard_moments ? a.largest / ranks : a.largest;
  p.step_buffers = shard_moments ? 4 * a.params * (2 + 1 / ranks) : std::max(16 * a.largest, 12 * piece);
  // Per adapted projection and token: its (dropped-out) input for A's gradient, the dropout mask,
  // and u = x Aᵀ for B's gradient, in the compute dtype; per block, less what the frozen base
  // does not save.
  const double rows = static_cast<double>(in.micro_batch), seq = static_cast<double>(in.seq_len);
  const double tokens = rows * seq * static_cast<double>(in.forwards), L = m.num_hidden_layers;
  const double per_token = c * a.inputs * (in.lora_dropout > 0 ? 2 : 1) + c * static_cast<double>(in.lora_rank) * a.count;
  // What the frozen base no longer saves: the inputs of its linear layers and the normalised
  // (fp32) inputs of its norm weights, kept only for their weights' gradients.
  const double h_d = static_cast<double>(m.num_attention_heads / tp * m.head_dim()), f = static_cast<double>(m.intermediate_size / tp);
  const double frozen = c * (2 * m.hidden_size + h_d + f) + 2 * 4.0 * m.hidden_size;
  const double delta = per_token - frozen;
  p.activations = base.activations + tokens * delta * (in.checkpointing ? 1 : L);
  p.activations_no_ckpt = base.activations_no_ckpt + tokens * delta * L;
  p.first_forward = p.activations / static_cast<double>(in.forwards);
  // The LM head is frozen: no weight gradient of it in backward.
  const double v = static_cast<double>(m.vocab_size / tp), D = m.hidden_size;
  p.logits = base.logits - (c + (in.bf16 ? 4 : 0)) * v * D;
  if (in.reference == ReferenceUse::kResident) p.logits += rows * seq * 12 * v;
  return p;
}

bool fits(const PlanInput& in, const MemoryPlan& p) { return p.total() <= in.usable * in.gpu_gb * 1e9; }

const char* dtype_name(bool bf16) { return bf16 ? "bf16" : "fp32"; }

}  // namespace

double MemoryPlan::total() const {
  const double resident = states() + reference * (caching > 0 ? 0 : 1);
  const double backward = std::max(activations, first_forward + held_grads) + logits;
  return std::max({resident + backward, resident + step_buffers, caching});
}

Result<ModelConfig> model_preset(const std::string& name) {
  if (name == "llama-2-7b") return llama(32000, 4096, 11008, 32, 32, 32, 4096, 1e4);
  if (name == "llama-2-13b") return llama(32000, 5120, 13824, 40, 40, 40, 4096, 1e4);
  if (name == "llama-2-70b") return llama(32000, 8192, 28672, 80, 64, 8, 4096, 1e4);
  if (name == "llama-3-8b") return llama(128256, 4096, 14336, 32, 32, 8, 8192, 5e5);
  if (name == "llama-3-70b") return llama(128256, 8192, 28672, 80, 64, 8, 8192, 5e5);
  return Status::error("unknown model preset '" + name + "' (llama-2-7b, llama-2-13b, llama-2-70b, llama-3-8b, llama-3-70b)");
}

Result<ReferenceUse> reference_use_of(const std::string& method) {
  // The task vector's and whp_logits' largest step is the reinforced fine-tune's (no reference);
  // their arithmetic or evaluation holds two copies of the weights, less than the fine-tune's
  // weights, gradients and optimizer state.
  if (runs_outside_cycles(method)) return ReferenceUse::kNone;
  auto s = make_strategy(method, UnlearnConfig{});
  if (!s) return Status::error("--method " + method + ": " + s.status().message());
  if (!(*s)->needs_reference()) return ReferenceUse::kNone;
  return (*s)->keeps_reference() ? ReferenceUse::kResident : ReferenceUse::kCached;
}

Result<Plan> make_plan(const PlanInput& in) {
  if (in.tp < 1 || in.dp < 1 || in.seq_len < 1 || in.micro_batch < 1 || in.forwards < 1) {
    return Status::error(fmt::format("plan: tp ({}), dp ({}), seq ({}), batch ({}) and forwards ({}) must each be at least 1",
                                     in.tp, in.dp, in.seq_len, in.micro_batch, in.forwards));
  }
  if (in.optimizer != "replicated" && in.optimizer != "zero1" && in.optimizer != "distributed") {
    return Status::error("plan: optimizer \"" + in.optimizer + "\": expected replicated, zero1 or distributed");
  }
  if (in.bf16_grads && !in.bf16) return Status::error("plan: bf16 gradients need bf16 weights (drop --fp32)");
  if (!(in.gpu_gb > 0) || !(in.usable > 0 && in.usable <= 1)) return Status::error("plan: GPU memory must be > 0 GB");
  if (!(in.bucket_mb > 0)) return Status::error("plan: bucket size must be > 0 MB");
  if (!(in.unlearn_tokens >= 0 && in.retrain_tokens >= 0)) return Status::error("plan: token counts must be ≥ 0");
  if (!(in.tokens_per_s_per_gpu > 0) && !(in.mfu > 0 && in.mfu <= 1 && in.peak_tflops > 0)) {
    return Status::error(fmt::format("plan: need a throughput (tokens/s per GPU > 0) or an MFU in (0, 1] (got {}) and a "
                                     "peak > 0 TFLOP/s (got {})", in.mfu, in.peak_tflops));
  }
  LETHE_RETURN_IF_ERROR(check_model_for_tp(in.model, in.tp));
  if (in.lora_rank < 0) return Status::error("plan: lora rank must be ≥ 0 (0: full-parameter)");
  for (const std::string& t : in.lora_targets) {
    const auto& valid = lora_target_names();
    if (std::find(valid.begin(), valid.end(), t) == valid.end()) {
      return Status::error("plan: LoRA target \"" + t + "\" is not a projection; valid: q, k, v, o, gate, up, down");
    }
  }
  Plan p;
  p.adapter_params = static_cast<int64_t>(adapter_shape(in, 1).params);
  for (const ParamSpec& s : llama_param_specs(in.model)) {
    int64_t n = 1;
    for (int64_t d : s.global_shape) n *= d;
    p.params += n;
  }
  p.params_per_gpu = static_cast<int64_t>(local_params(in.model, in.tp).first);
  p.memory = memory(in, in.tp, in.dp);
  p.fits = fits(in, p.memory);
  // Fewest GPUs: tp within a node (1, 2, 4, 8, dividing the model), dp a power of two up to 4096.
  for (int64_t tp = 1; tp <= 8; tp *= 2) {
    if (!check_model_for_tp(in.model, tp)) continue;
    for (int64_t dp = 1; dp <= 4096; dp *= 2) {
      if (!fits(in, memory(in, tp, dp))) {
        if (in.optimizer == "replicated") break;  // more dp ranks hold the same bytes each
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
  // A resident reference's forward costs a third of a train step's FLOPs per token.
  const double unlearn_rate = p.tokens_per_s_per_gpu / (in.reference == ReferenceUse::kResident ? 4.0 / 3.0 : 1.0);
  p.unlearn_gpu_hours = in.unlearn_tokens / unlearn_rate / 3600;
  p.unlearn_hours = p.unlearn_gpu_hours / gpus;
  p.retrain_gpu_hours = in.retrain_tokens / p.tokens_per_s_per_gpu / 3600;
  p.retrain_hours = p.retrain_gpu_hours / gpus;
  return p;
}

std::string over_budget(const PlanInput& in, const Plan& p) {
  const MemoryPlan& m = p.memory;
  const double G = 1e9, usable = in.usable * in.gpu_gb * G;
  const std::vector<std::pair<std::string, double>> parts = {
      {std::string("gradients (") + (in.bf16 && in.bf16_grads ? "bf16" : "fp32") + ")", m.grads},
      {std::string("weights (") + dtype_name(in.bf16) + ")", m.weights},
      {"fp32 master weights", m.master},
      {"AdamW moments", m.moments},
      {"dp gradient buckets", m.grad_buckets},
      {"reference model", m.caching > 0 ? 0 : m.reference},
      {"activations", m.activations},
      {"held weight gradients", m.held_grads},
      {"log-prob buffers", m.logits}};
  const auto largest = *std::max_element(parts.begin(), parts.end(), [](auto& a, auto& b) { return a.second < b.second; });
  std::string s = fmt::format("does not fit: {:.1f} GB per GPU, {:.1f} GB over the {:.1f} GB usable ({:.0f} GB × {:.2f}); "
                              "largest part: {} {:.1f} GB",
                              m.total() / G, (m.total() - usable) / G, usable / G, in.gpu_gb, in.usable, largest.first,
                              largest.second / G);
  if (in.bf16 && !in.bf16_grads) s += fmt::format("; bf16 gradients (--grad-dtype bf16) would save {:.1f} GB", m.grads / 2 / G);
  if (in.optimizer != "distributed" && in.dp > 1) {
    PlanInput d = in;
    d.optimizer = "distributed";
    s += fmt::format("; --optimizer distributed would save {:.1f} GB", (m.total() - memory(d, in.tp, in.dp).total()) / G);
  }
  return s;
}

std::string format_plan(const PlanInput& in, const Plan& p) {
  const double G = 1e9;
  const MemoryPlan& m = p.memory;
  const double n = static_cast<double>(p.params);
  const char* ref = in.reference == ReferenceUse::kNone ? "none" : in.reference == ReferenceUse::kCached ? "cached, then freed" : "resident";
  std::string s = fmt::format("model: {:.2f}{} parameters, {} layers, d {}, {} heads / {} KV heads, vocabulary {}\n",
                              n >= 1e9 ? n / 1e9 : n / 1e6, n >= 1e9 ? "B" : "M", in.model.num_hidden_layers, in.model.hidden_size,
                              in.model.num_attention_heads, in.model.num_key_value_heads, in.model.vocab_size);
  s += fmt::format("layout: tp {} × dp {} = {} GPUs ({:.3g} parameters per GPU), {} weights, {} gradients, optimizer {}, "
                   "reference {}, seq {} × {} row(s) × {} forward(s)\n\n",
                   in.tp, in.dp, in.tp * in.dp, static_cast<double>(p.params_per_gpu), dtype_name(in.bf16),
                   in.bf16 && in.bf16_grads ? "bf16" : "fp32", in.optimizer, ref, in.seq_len, in.micro_batch, in.forwards);
  const bool lora = in.lora_rank > 0;
  if (lora) {
    s += fmt::format("LoRA: rank {} on {} projection(s) per layer, {:.3g} adapter parameters (fp32) trained; the base "
                     "is frozen and is also the reference\n\n",
                     in.lora_rank, in.lora_targets.size(), static_cast<double>(p.adapter_params));
  }
  s += "| per GPU | GB |\n|---|---|\n";
  s += fmt::format("| weights ({}{}) | {:.1f} |\n", dtype_name(in.bf16), lora ? " base, frozen, and fp32 adapters" : "",
                   m.weights / G);
  s += fmt::format("| gradients ({}) | {:.1f} |\n", in.bf16 && in.bf16_grads && !lora ? "bf16" : "fp32", m.grads / G);
  if (m.grad_buckets > 0) s += fmt::format("| dp all-reduce buckets (fp32) | {:.1f} |\n", m.grad_buckets / G);
  if (in.bf16 && !lora) s += fmt::format("| master weights (fp32) | {:.1f} |\n", m.master / G);
  s += fmt::format("| AdamW moments (fp32) | {:.1f} |\n", m.moments / G);
  s += fmt::format("| reference model ({}) | {:.1f} |\n", lora ? "the base, adapters off" : fmt::format("{}, {}", dtype_name(in.bf16), ref),
                   m.reference / G);
  s += fmt::format("| activations, checkpointing {} | {:.1f} |\n| (activations without checkpointing) | {:.1f} |\n",
                   in.checkpointing ? "on" : "off", m.activations / G, m.activations_no_ckpt / G);
  s += fmt::format("| log-prob buffers (fp32) | {:.1f} |\n", m.logits / G);
  if (m.held_grads > 0) {
    s += fmt::format("| weight gradients of the later forwards, held in backward ({}) | {:.1f} |\n", dtype_name(in.bf16),
                     m.held_grads / G);
  }
  s += fmt::format("| optimizer step buffers | {:.1f} |\n", m.step_buffers / G);
  if (m.caching > 0) s += fmt::format("| (while caching the reference's log-probs) | {:.1f} |\n", m.caching / G);
  s += fmt::format("| **total** | **{:.1f}** of {:.0f} × {:.2f} usable: {} |\n\n", m.total() / G, in.gpu_gb, in.usable,
                   p.fits ? "fits" : "does NOT fit");
  if (p.min_layout) {
    s += fmt::format("fewest GPUs that fit: {} (tp {} × dp {})\n", p.min_layout->first * p.min_layout->second,
                     p.min_layout->first, p.min_layout->second);
  } else {
    s += "fewest GPUs that fit: none with tp ≤ 8 and dp ≤ 4096\n";
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

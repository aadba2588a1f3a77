#include "runtime/model.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>

#include "base/check.h"
#include "runtime/attention.h"
#include "runtime/fused.h"
#include "runtime/tp_ops.h"

namespace lethe {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Note [Activation checkpointing]: a block run through this function records no graph in forward;
// it saves its input, and backward reruns the block with the graph on and differentiates it with
// respect to the input and the block's parameters (inputs of the function, so their gradients reach
// AccumulateGrad as usual). Per block only the input stays alive between forward and backward. The
// rerun issues the block's tp collectives again, in the same order on every tp rank.
struct CheckpointedBlock : torch::autograd::Function<CheckpointedBlock> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList params, const Llama* model,
                            int64_t i, const at::Tensor& cos, const at::Tensor& sin, std::optional<at::Tensor> mask_or,
                            int64_t dropout_seed) {
    // The mask is absent for plain causal attention; it needs no gradient, so it is kept aside.
    const at::Tensor mask = mask_or.value_or(at::Tensor());
    if (mask.defined()) ctx->saved_data["mask"] = mask;
    ctx->save_for_backward({x, cos, sin});
    ctx->saved_data["model"] = reinterpret_cast<int64_t>(model);
    ctx->saved_data["block"] = i;
    ctx->saved_data["dropout_seed"] = dropout_seed;  // the rerun draws the same adapter dropout masks
    return model->block(static_cast<size_t>(i), x, cos, sin, mask, nullptr, static_cast<uint64_t>(dropout_seed));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto* model = reinterpret_cast<const Llama*>(ctx->saved_data["model"].toInt());
    const auto i = static_cast<size_t>(ctx->saved_data["block"].toInt());
    at::Tensor x = saved[0].detach().requires_grad_(true);
    // Differentiated with respect to the input and the parameters that train (a LoRA model's
    // frozen base has no gradient); the others get none.
    const std::vector<at::Tensor> params = model->block_params(i);
    variable_list inputs = {x};
    for (const at::Tensor& p : params) {
      if (p.requires_grad()) inputs.push_back(p);
    }
    const auto kept = ctx->saved_data.find("mask");
    const at::Tensor mask = kept == ctx->saved_data.end() ? at::Tensor() : kept->second.toTensor();
    const auto seed = static_cast<uint64_t>(ctx->saved_data["dropout_seed"].toInt());
    at::Tensor out;
    {
      at::AutoGradMode grad(true);
      out = model->block(i, x, saved[1], saved[2], mask, nullptr, seed);
    }
    variable_list found = torch::autograd::grad({out}, inputs, {grad_out[0]}, /*retain_graph=*/false,
                                                /*create_graph=*/false, /*allow_unused=*/true);
    variable_list grads = {found[0]};
    size_t k = 1;
    for (const at::Tensor& p : params) grads.push_back(p.requires_grad() ? found[k++] : at::Tensor());
    grads.resize(grads.size() + 6);  // model, block index, cos, sin, mask, dropout seed: no gradient
    return grads;
  }
};

// The projections LoRA can adapt, in block order: target name, Lethe name, whether row-parallel.
struct Projection {
  const char* target;
  const char* name;
  bool row;
};
constexpr Projection kProjections[] = {{"q", "attn.wq", false},     {"k", "attn.wk", false},  {"v", "attn.wv", false},
                                       {"o", "attn.wo", true},      {"gate", "mlp.w_gate", false},
                                       {"up", "mlp.w_up", false},   {"down", "mlp.w_down", true}};

// A projection's weight and adapter in a block.
struct Adapted {
  at::Tensor* w;
  Lora* lora;
};
Adapted projection(Block& b, const std::string& target) {
  if (target == "q") return {&b.wq.w, &b.wq.lora};
  if (target == "k") return {&b.wk.w, &b.wk.lora};
  if (target == "v") return {&b.wv.w, &b.wv.lora};
  if (target == "o") return {&b.wo.w, &b.wo.lora};
  if (target == "gate") return {&b.w_gate.w, &b.w_gate.lora};
  if (target == "up") return {&b.w_up.w, &b.w_up.lora};
  LETHE_CHECK_MSG(target == "down", "no projection " + target);
  return {&b.w_down.w, &b.w_down.lora};
}

bool targeted(const LoraOptions& o, const char* target) {
  return std::find(o.targets.begin(), o.targets.end(), target) != o.targets.end();
}

uint64_t mix64(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// [B, T] positions → cos, sin [B, 1, T, d] in fp32 (Hugging Face layout: halves, not interleaved).
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& positions_BT, const at::Tensor& inv_freq) {
  at::Tensor angles = positions_BT.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [B, T, d/2]
  at::Tensor emb = at::cat({angles, angles}, -1).unsqueeze(1);
  return {emb.cos(), emb.sin()};
}

// `buf` with room for `needed` positions along `dim`, its first `filled` kept: itself when it has
// them, else a new buffer shaped like `like` of max(needed, want, twice the old) positions.
at::Tensor with_room(const at::Tensor& buf, const at::Tensor& like, int64_t dim, int64_t filled, int64_t needed,
                     int64_t want) {
  if (buf.defined() && buf.size(dim) >= needed) return buf;
  std::vector<int64_t> shape = like.sizes().vec();
  shape[dim] = std::max({needed, want, buf.defined() ? 2 * buf.size(dim) : int64_t{0}});
  at::Tensor grown = at::empty(shape, like.options());
  if (filled > 0) grown.narrow(dim, 0, filled).copy_(buf.narrow(dim, 0, filled));
  return grown;
}

at::Tensor inverse_frequencies(int64_t d, double theta) {
  return (1.0 / at::pow(theta, at::arange(0, d, 2, at::kDouble) / static_cast<double>(d))).to(at::kFloat);
}

}  // namespace

at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& positions_BT, double theta) {
  auto [cos, sin] = rope_tables(positions_BT, inverse_frequencies(x.size(-1), theta));
  return apply_rope(x, cos, sin);
}

std::vector<ParamSpec> llama_param_specs(const ModelConfig& cfg) {
  const int64_t D = cfg.hidden_size, F = cfg.intermediate_size, V = cfg.vocab_size, d = cfg.head_dim();
  const int64_t H = cfg.num_attention_heads, G = cfg.num_key_value_heads;
  std::vector<ParamSpec> s = {{"embed", {V, D}, 0}};
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    s.insert(s.end(), {{p + "attn_norm", {D}, -1},
                       {p + "attn.wq", {H * d, D}, 0},
                       {p + "attn.wk", {G * d, D}, 0},
                       {p + "attn.wv", {G * d, D}, 0},
                       {p + "attn.wo", {D, H * d}, 1},
                       {p + "mlp_norm", {D}, -1},
                       {p + "mlp.w_gate", {F, D}, 0},
                       {p + "mlp.w_up", {F, D}, 0},
                       {p + "mlp.w_down", {D, F}, 1}});
  }
  s.push_back({"norm", {D}, -1});
  if (!cfg.tie_word_embeddings) s.push_back({"lm_head", {V, D}, 0});
  return s;
}

Llama::Llama(const ModelConfig& cfg, const Mesh& mesh, uint64_t seed, const ModelOptions& opts)
    : cfg_(cfg), mesh_(&mesh), compute_(opts.dtype), seed_(seed) {
  LETHE_CHECK(mesh.check_model(cfg).is_ok());
  const std::vector<ParamSpec> specs = llama_param_specs(cfg);
  std::vector<int64_t> numels;
  std::vector<bool> sharded;
  for (const ParamSpec& p : specs) {
    int64_t n = 1;
    for (int64_t d : p.global_shape) n *= d;
    numels.push_back(p.split_dim >= 0 ? n / mesh.tp_size() : n);
    sharded.push_back(p.split_dim >= 0);
  }
  // Buffers first, so each parameter's fp32 draw is copied in and freed: the peak is one shard.
  const bool bucketed = opts.trainable && opts.dtype != at::kFloat;
  if (bucketed) {
    const auto grad_dtype = mesh.grad_dtype();
    const auto bucket_elements = std::max<int64_t>(1, static_cast<int64_t>(mesh.bucket_mb() * (1 << 20) / at::elementSize(grad_dtype)));
    buckets_ = layout_buckets(numels, sharded, bucket_elements, mesh.dp_size());
    for (ParamBucket& b : buckets_) {
      const int64_t n = b.shard_size * mesh.dp_size();
      b.weights = at::zeros({n}, at::TensorOptions(mesh.device()).dtype(opts.dtype));
      b.grads = at::zeros({n}, at::TensorOptions(mesh.device()).dtype(grad_dtype));
    }
  }
  const std::vector<BucketSlot> slots = bucket_slots(buckets_, specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& p = specs[i];
    std::vector<int64_t> local = p.global_shape;
    if (p.split_dim >= 0) local[p.split_dim] /= mesh.tp_size();
    at::Tensor value;
    if (bucketed) {
      value = buckets_[slots[i].bucket].weights.narrow(0, slots[i].offset, numels[i]).view(local);
    } else {
      value = at::zeros(local, at::TensorOptions(mesh.device()).dtype(opts.dtype));
    }
    if (opts.random_init) {  // norms start at ones, matrices from N(0, initializer_range)
      const double std = p.global_shape.size() == 1 ? 0.0 : cfg.initializer_range;
      value.copy_(init_shard(p.name, p.global_shape, p.split_dim, std, seed, mesh.tp()));
    }
    if (opts.trainable) value.set_requires_grad(true);
    if (bucketed) value.mutable_grad() = buckets_[slots[i].bucket].grads.narrow(0, slots[i].offset, numels[i]).view(local);
    params_.push_back(Param{p.name, value, p.global_shape, p.split_dim, p.global_shape.size() > 1});
  }
  bind();
  inv_freq_ = inverse_frequencies(cfg.head_dim(), cfg.rope_theta).to(mesh.device());
}

void Llama::bind() {
  size_t i = 0;
  auto next = [&]() -> at::Tensor& { return params_[i++].value; };
  embed_.w = next();
  embed_.vocab_start = mesh_->tp_rank() * (cfg_.vocab_size / mesh_->tp_size());
  blocks_.clear();
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    Block b;
    for (at::Tensor* t : {&b.attn_norm, &b.wq.w, &b.wk.w, &b.wv.w, &b.wo.w, &b.mlp_norm, &b.w_gate.w, &b.w_up.w, &b.w_down.w}) {
      *t = next();
    }
    blocks_.push_back(b);
  }
  norm_ = next();
  lm_head_ = cfg_.tie_word_embeddings ? embed_.w : next();
  // Adapters: a pair per targeted projection, in block order (add_lora).
  size_t a = 0;
  for (Block& b : blocks_) {
    for (const Projection& p : kProjections) {
      if (adapters_.empty() || !targeted(lora_, p.target)) continue;
      Lora& l = *projection(b, p.target).lora;
      l.a = adapters_[a].value;
      l.b = adapters_[a + 1].value;
      l.scale = lora_.alpha / static_cast<double>(lora_.rank);
      l.dropout = lora_.dropout;
      l.key = name_hash(adapters_[a].name);
      a += 2;
    }
  }
}

LoraOptions lora_options(const UnlearnConfig& cfg) {
  return {cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.lora_dropout};
}

std::vector<ParamSpec> lora_param_specs(const ModelConfig& cfg, const LoraOptions& opts) {
  std::map<std::string, ParamSpec> base;
  for (ParamSpec& p : llama_param_specs(cfg)) base[p.name] = p;
  const int64_t r = opts.rank;
  std::vector<ParamSpec> out;
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    for (const Projection& p : kProjections) {
      if (!targeted(opts, p.target)) continue;
      const std::string name = "layers." + std::to_string(l) + "." + p.name;
      const int64_t rows = base.at(name).global_shape[0], cols = base.at(name).global_shape[1];
      out.push_back({name + ".lora_a", {r, cols}, p.row ? 1 : -1});
      out.push_back({name + ".lora_b", {rows, r}, p.row ? -1 : 0});
    }
  }
  return out;
}

void Llama::add_lora(const LoraOptions& opts) {
  LETHE_CHECK_MSG(adapters_.empty(), "the model has adapters already");
  lora_ = opts;
  const auto fp32 = at::TensorOptions(mesh_->device()).dtype(at::kFloat);
  for (const ParamSpec& s : lora_param_specs(cfg_, opts)) {
    at::Tensor v;
    if (s.name.compare(s.name.size() - 6, 6, "lora_b") == 0) {  // B: zero
      std::vector<int64_t> local = s.global_shape;
      if (s.split_dim >= 0) local[s.split_dim] /= mesh_->tp_size();
      v = at::zeros(local, fp32);
    } else {  // A: N(0, 1/(3 · in)), drawn by name
      const double in = static_cast<double>(s.global_shape[1]);
      v = init_shard(s.name, s.global_shape, s.split_dim, 1.0 / std::sqrt(3.0 * in), seed_, mesh_->tp()).to(fp32);
    }
    adapters_.push_back(Param{s.name, v.set_requires_grad(true), s.global_shape, s.split_dim, true});
  }
  bind();
}

std::unique_ptr<Llama> Llama::base_view() const {
  auto v = std::make_unique<Llama>(*this);
  v->adapters_.clear();
  v->bind();
  return v;
}

void Llama::merge_adapters() {
  at::NoGradGuard no_grad;
  for (Block& b : blocks_) {
    for (const Projection& p : kProjections) {
      const auto [w, l] = projection(b, p.target);
      if (l->on()) w->copy_(w->to(at::kFloat) + at::matmul(l->b, l->a) * l->scale);
    }
  }
  adapters_.clear();
  bind();
}

void Llama::set_dropout_step(int64_t step) const {
  dropout_step_ = step;
  dropout_calls_ = 0;
}

uint64_t Llama::next_dropout_seed() const {
  if (adapters_.empty() || lora_.dropout == 0.0 || !at::GradMode::is_enabled()) return 0;
  const uint64_t call = static_cast<uint64_t>(dropout_calls_++);
  const uint64_t z = mix64(seed_ ^ mix64(static_cast<uint64_t>(dropout_step_) * 0x9e3779b97f4a7c15ull + call) ^
                           mix64(static_cast<uint64_t>(mesh_->dp_rank()) + 0x632be59bd9b4e019ull));
  return z | 1;  // never 0 ("no dropout")
}

int64_t Llama::num_params_global() const {
  int64_t n = 0;
  for (const auto& p : params_) {
    int64_t k = 1;
    for (int64_t s : p.global_shape) k *= s;
    n += k;
  }
  return n;
}

at::Tensor Llama::attention(const Block& b, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                            const at::Tensor& mask, KVCache* cache, size_t layer, uint64_t seed) const {
  Communicator& tp = mesh_->tp();
  const int64_t B = x.size(0), T = x.size(1), d = cfg_.head_dim();
  const int64_t h = cfg_.num_attention_heads / tp.size(), g = cfg_.num_key_value_heads / tp.size();
  const std::vector<at::Tensor> qkv = column_parallel({&b.wq, &b.wk, &b.wv}, x, compute_, tp, seed);
  at::Tensor q = apply_rope(qkv[0].view({B, T, h, d}).transpose(1, 2), cos, sin);
  at::Tensor k = apply_rope(qkv[1].view({B, T, g, d}).transpose(1, 2), cos, sin);
  at::Tensor v = qkv[2].view({B, T, g, d}).transpose(1, 2);
  if (cache) {  // written in place; attention reads positions [0, past + T)
    const int64_t past = cache->length, S = past + T;
    if (cache->k.size() <= layer) {
      cache->k.resize(layer + 1);
      cache->v.resize(layer + 1);
    }
    for (auto [buf, x] : {std::pair{&cache->k[layer], &k}, std::pair{&cache->v[layer], &v}}) {
      *buf = with_room(*buf, *x, 2, past, S, cache->capacity);
      buf->narrow(2, past, T).copy_(*x);
      *x = buf->narrow(2, 0, S);
    }
  }
  const at::Tensor o = lethe::attention(q, k, v, mask);  // [B, h, T, d]
  return b.wo(o.transpose(1, 2).reshape({B, T, h * d}), compute_, tp, seed);
}

at::Tensor Llama::hidden(const at::Tensor& input_BT, const at::Tensor& positions_BT, const at::Tensor& segments_BT,
                         KVCache* cache) const {
  return combined_hidden(input_BT, positions_BT, segments_BT, cache, std::nullopt);
}

at::Tensor Llama::hidden(const Batch& b) const {
  return combined_hidden(b.input_BT, b.positions_BT, b.segments_BT, nullptr, b.one_sample_per_row);
}

at::Tensor Llama::combined_hidden(const at::Tensor& input_BT, const at::Tensor& positions_BT, const at::Tensor& segments_BT,
                                  KVCache* cache, std::optional<bool> one_sample_per_row) const {
  if (!companion_) return forward_hidden(input_BT, positions_BT, segments_BT, cache, one_sample_per_row);
  // The companion first, into the cache's layers after this model's; both read the same past.
  const int64_t past = cache ? cache->length : 0;
  at::Tensor hc = companion_->forward_hidden(input_BT, positions_BT, segments_BT, cache, one_sample_per_row, -1, blocks_.size());
  if (cache) cache->length = past;
  at::Tensor h = forward_hidden(input_BT, positions_BT, segments_BT, cache, one_sample_per_row);
  return at::cat({h, hc.to(h.scalar_type())}, -1);
}

void Llama::set_logit_companion(const Llama* companion, double alpha) {
  if (companion) {
    LETHE_CHECK_MSG(companion != this && !companion->companion_, "a logit companion is a plain model other than this one");
    LETHE_CHECK_MSG(companion->cfg_.hidden_size == cfg_.hidden_size && companion->cfg_.vocab_size == cfg_.vocab_size &&
                        &companion->mesh() == mesh_,
                    "a logit companion has this model's hidden size and vocabulary, on its mesh");
  }
  companion_ = companion;
  companion_alpha_ = alpha;
}

at::Tensor generic_logits(const at::Tensor& v_ref, const at::Tensor& v_reinf, double alpha) {
  const at::Tensor ref = v_ref.to(at::kFloat);
  return ref - alpha * at::relu(v_reinf.to(at::kFloat) - ref);
}

at::Tensor Llama::residual_after(const Batch& b, int64_t layer) const {
  LETHE_CHECK(layer >= 0 && layer < cfg_.num_hidden_layers);
  LETHE_CHECK_MSG(!companion_, "residual_after: a model with a logit companion has no single residual stream");
  return forward_hidden(b.input_BT, b.positions_BT, b.segments_BT, nullptr, b.one_sample_per_row, layer + 1);
}

at::Tensor Llama::forward_hidden(const at::Tensor& input_in, const at::Tensor& positions_in,
                                 const at::Tensor& segments_in, KVCache* cache,
                                 std::optional<bool> one_sample_per_row, int64_t blocks, size_t cache_layer0) const {
  Communicator& tp = mesh_->tp();
  const at::Device dev = mesh_->device();  // inputs may come from the host (a no-op when already there)
  const at::Tensor input_BT = input_in.to(dev), positions_BT = positions_in.to(dev), segments_BT = segments_in.to(dev);
  const int64_t T = input_BT.size(1);
  const int64_t past = cache ? cache->length : 0, S = past + T;
  at::Tensor keys_seg_BS = segments_BT;
  if (cache) {
    cache->segments_BS = with_room(cache->segments_BS, segments_BT, 1, past, S, cache->capacity);
    cache->segments_BS.narrow(1, past, T).copy_(segments_BT);
    keys_seg_BS = cache->segments_BS.narrow(1, 0, S);
  }
  // mask [B, 1, T, S]: same segment and not in the future. Rows that are one sample each (no
  // packing, no padding) need none: plain causal attention, the fused kernels' fastest case.
  if (cache) {
    one_sample_per_row = false;
  } else if (!one_sample_per_row) {
    one_sample_per_row = segments_BT.eq(segments_BT.narrow(1, 0, 1)).logical_and(segments_BT.ge(0)).all().item<bool>();
  }
  at::Tensor mask;
  if (!*one_sample_per_row) {
    const auto idx = at::TensorOptions(dev).dtype(at::kLong);
    at::Tensor causal = at::arange(S, idx).unsqueeze(0).le(at::arange(past, past + T, idx).unsqueeze(1));
    mask = (segments_BT.unsqueeze(2).eq(keys_seg_BS.unsqueeze(1)) & causal).unsqueeze(1);
  }
  auto [cos, sin] = rope_tables(positions_BT, inv_freq_);

  at::Tensor x = embed_(input_BT, compute_, tp);
  const bool recompute = checkpointing_ && !cache && at::GradMode::is_enabled();
  const uint64_t seed = next_dropout_seed();
  const size_t run = blocks < 0 ? blocks_.size() : static_cast<size_t>(blocks);
  for (size_t i = 0; i < run; ++i) {
    x = recompute ? CheckpointedBlock::apply(x, at::TensorList(block_params(i)), this, static_cast<int64_t>(i), cos, sin,
                                             std::optional<at::Tensor>(mask), static_cast<int64_t>(seed))
                  : block(i, x, cos, sin, mask, cache, seed, cache_layer0 + i);
  }
  if (cache) cache->length = S;
  return blocks < 0 ? rms_norm(x, norm_, cfg_.rms_norm_eps) : x;
}

at::Tensor Llama::block(size_t i, const at::Tensor& x_in, const at::Tensor& cos, const at::Tensor& sin,
                         const at::Tensor& mask, KVCache* cache, uint64_t seed, std::optional<size_t> cache_layer) const {
  Communicator& tp = mesh_->tp();
  const Block& b = blocks_[i];
  at::Tensor x = x_in + attention(b, rms_norm(x_in, b.attn_norm, cfg_.rms_norm_eps), cos, sin, mask, cache,
                                  cache_layer.value_or(i), seed);
  at::Tensor hn = rms_norm(x, b.mlp_norm, cfg_.rms_norm_eps);
  const std::vector<at::Tensor> gate_up = column_parallel({&b.w_gate, &b.w_up}, hn, compute_, tp, seed);
  return x + b.w_down(swiglu(gate_up[0], gate_up[1]), compute_, tp, seed);
}

std::vector<at::Tensor> Llama::block_params(size_t i) const {
  const Block& b = blocks_[i];
  std::vector<at::Tensor> t = {b.attn_norm, b.wq.w, b.wk.w, b.wv.w, b.wo.w, b.mlp_norm, b.w_gate.w, b.w_up.w, b.w_down.w};
  for (const Lora* l : {&b.wq.lora, &b.wk.lora, &b.wv.lora, &b.wo.lora, &b.w_gate.lora, &b.w_up.lora, &b.w_down.lora}) {
    if (l->on()) t.insert(t.end(), {l->a, l->b});
  }
  return t;
}

at::Tensor Llama::logits(const at::Tensor& hidden_BTD) const {
  if (companion_) {
    const int64_t D = cfg_.hidden_size;
    const at::Tensor own = ColumnParallelLinear{lm_head_, {}}(hidden_BTD.narrow(-1, 0, D), compute_, mesh_->tp());
    const at::Tensor other = companion_->logits(hidden_BTD.narrow(-1, D, D));
    return generic_logits(own, other, companion_alpha_).to(compute_);
  }
  return ColumnParallelLinear{lm_head_, {}}(hidden_BTD, compute_, mesh_->tp());
}

at::Tensor Llama::token_logprobs(const at::Tensor& input_BT, const at::Tensor& positions_BT,
                                 const at::Tensor& segments_BT, const at::Tensor& target_BT) const {
  at::Tensor logits_BTv = logits(hidden(input_BT, positions_BT, segments_BT));
  return vocab_parallel_logprobs(logits_BTv, target_BT.to(mesh_->device()), vocab_start(), mesh_->tp());
}

at::Tensor Llama::token_logprobs(const Batch& b) const {
  return vocab_parallel_logprobs(logits(hidden(b)), b.target_BT.to(mesh_->device()), vocab_start(), mesh_->tp());
}

at::Tensor Llama::full_logits(const at::Tensor& input_BT, const at::Tensor& positions_BT, const at::Tensor& segments_BT,
                              KVCache* cache) const {
  return full_logits_from_hidden(hidden(input_BT, positions_BT, segments_BT, cache));
}

at::Tensor Llama::full_logits_from_hidden(const at::Tensor& hidden_BTD) const {
  return gather_from_tp(logits(hidden_BTD), mesh_->tp()).to(at::kFloat);
}

at::Tensor Llama::log_probs_shard(const at::Tensor& hidden_BTD) const {
  return vocab_parallel_log_softmax(logits(hidden_BTD), mesh_->tp());
}

double train_flops_per_token(const ModelConfig& c, int64_t seq_len) {
  const double D = c.hidden_size, F = c.intermediate_size, V = c.vocab_size, L = c.num_hidden_layers;
  const double d = c.head_dim(), H = c.num_attention_heads, G = c.num_key_value_heads;
  const double per_layer = D * (H * d) * 2 + D * (G * d) * 2 + 3 * D * F;  // q, o, k, v, gate, up, down
  const double gemm = L * per_layer + V * D;                                  // + LM head
  return 6.0 * gemm + 6.0 * L * D * static_cast<double>(seq_len);
}

}  // namespace lethe

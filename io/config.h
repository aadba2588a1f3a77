// RunConfig: the typed form of a run file (TOML). Parsed once, validated before any communicator
// exists; nothing deeper in the code looks a key up by string. Keys and defaults are documented in
// docs/config.md; the field lists in config.cc are the single source both for reading and for
// writing the effective config back out.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"

namespace lethe {

struct RunSection {
  std::string dir = "runs/lethe";  // experiment folder: corpus/, tokenizer.model, target/, retrain/
  int64_t seed = 1234;             // model init and data order
  int64_t threads = 0;             // intra-op threads per rank; 0 = cores / ranks on the node
  int64_t log_every = 10;          // steps between progress lines and metrics.jsonl records
  double collective_timeout_s = 600;  // a collective waiting longer than this aborts the job
  std::string device = "auto";        // "auto" | "cpu" | "cuda": where tensors live (local rank → GPU)
};

// Note [Seeds]: seeds > 1 repeats every phase over run.seed, run.seed + 1, …, each in its own
// experiment folder <run.dir>/seed-<s> on the same corpus (corpus.seed does not move), and `lethe
// compare <run.dir>` reports mean ± standard deviation over them (launch/seeds.h).
struct ExperimentConfig {
  int64_t seeds = 1;
};

// Field names and meanings as in a Hugging Face Llama config.json.
struct ModelConfig {
  std::string config_json;  // when set, the architecture below comes from this file
  int64_t vocab_size = 512;
  int64_t hidden_size = 128;
  int64_t intermediate_size = 352;
  int64_t num_hidden_layers = 4;
  int64_t num_attention_heads = 4;
  int64_t num_key_value_heads = 2;
  int64_t max_position_embeddings = 256;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  bool tie_word_embeddings = false;
  double initializer_range = 0.02;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

// A Llama shape in one line: vocabulary, hidden size, FFN width, layers, heads, KV heads and
// context; every other field at its default.
ModelConfig llama_shape(int64_t vocab, int64_t hidden, int64_t ffn, int64_t layers, int64_t heads, int64_t kv_heads,
                        int64_t context);

struct CorpusConfig {
  std::string source = "generated";  // "generated" | "jsonl"
  // generated: "people" forgets whole people; "toxic" (Note [Toxic scenario], io/corpus.h) forgets an
  // abusive register that describes forget_fraction of the people, who stay in retain.
  std::string scenario = "people";
  // generated
  int64_t people = 100;
  double forget_fraction = 0.1;
  double holdout_fraction = 0.1;
  int64_t seed = 7;
  int64_t passages_per_person = 3;
  // jsonl ({"id","text"} per line; QA files {"question","answer"})
  std::string retain_file, forget_file, holdout_file, retain_qa_file, forget_qa_file;
  // either kind: ids (person ids, or document ids for jsonl) moved to the forget split
  std::vector<std::string> forget_ids;
  // > 0: only the first forget_groups groups (people) of the forget split, in corpus order, stay in
  // it; the rest join retain. The documents trained on by the target do not change, so forget sets
  // of growing size share one target (MUSE's scalability and sustainability benches, launch/bench.h).
  int64_t forget_groups = 0;
  bool qa_in_training = true;  // train on "Question: …\nAnswer: …" renderings of trained people's probes
};

struct TokenizerConfig {
  std::string model;         // a sentencepiece tokenizer.model; trained on the corpus when empty
  int64_t vocab_size = 512;  // when training one
};

struct DataConfig {
  int64_t seq_len = 128;  // tokens per packed row (inputs); rows hold seq_len + 1 tokens
};

struct TrainConfig {
  int64_t steps = 500;
  int64_t batch_size = 16;  // rows per optimizer step (global, before accumulation split)
  int64_t grad_accum = 1;   // micro-batches per step; batch_size must divide by it
  double lr = 3e-3;
  double min_lr_ratio = 0.1;
  int64_t warmup_steps = 20;
  std::string schedule = "cosine";  // "cosine" | "constant"
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  // max global L2 norm; 0 disables
  std::string dtype = "fp32";  // weights and compute: "fp32" | "bf16" (bf16: fp32 master weights in the optimizer)
  bool activation_checkpointing = false;  // keep each block's input only; recompute in backward
  int64_t checkpoint_every = 100;
  int64_t keep_checkpoints = 3;
};

// Unlearning (docs/strategies.md): learn-while-unlearn cycles, each `unlearn_steps` steps of the
// method's loss on forget (and retain) batches, then `learn_steps` plain NLL steps on retain data.
struct UnlearnConfig {
  std::vector<std::string> methods = {"ga", "graddiff", "kl", "npo", "simnpo", "icu"};  // each from the target
  std::string from;           // checkpoint to unlearn; default: the newest of <run.dir>/target
  int64_t requests = 1;       // forget set split (by person/group) into sequential requests
  int64_t max_cycles = 8;     // per request
  int64_t eval_every = 1;     // evaluate every this many cycles (and always a request's last)
  // Which evaluated cycle each request keeps: "last" | "holdout" | "oracle" (Note [Checkpoint selection]).
  std::string select = "last";
  int64_t unlearn_steps = 8;  // per cycle
  int64_t learn_steps = 2;    // per cycle, NLL on retain (0: no learning)
  int64_t forget_batch = 8;   // rows per unlearning step
  int64_t retain_batch = 8;   // rows per retain batch (for methods with a retain term, and learn steps)
  double lr = 2e-4;
  double beta1 = 0.9;
  double beta2 = 0.98;
  double weight_decay = 0.0;
  double grad_clip = 1.0;
  double time_budget_s = 0;   // per method; 0 = none
  std::string stop_metric;    // stop a request once this per-cycle metric is at or below stop_value
  double stop_value = 0;
  double forget_weight = 1.0;  // weight of the forget term
  double retain_weight = 1.0;  // weight of the retain term (GradDiff, KL, NPO variants, SimNPO)
  double npo_beta = 0.1;
  std::string npo_retain = "nll";  // "none" | "nll" | "kl"
  double simnpo_beta = 4.5;
  double simnpo_gamma = 0.0;
  double icu_alpha = 0.5;      // NLL on each forget sample's nearest non-target neighbour
  double icu_beta = 1.0;       // KL(ref ‖ θ) on the neighbours
  int64_t icu_prefix = 16;     // tokens of a forget sample given to the refinement check
  double wga_beta = 1.0;       // WGA: token weight π_θ(y)^β
  double satimp_beta1 = 5.0;   // SatImp: token weight p^β1 · (1 − p)^β2
  double satimp_beta2 = 1.0;
  double undial_beta = 10.0;   // UNDIAL: the true token's logit lowered by β in the teacher
  double pdu_eps_ratio = 1.1;  // PDU: retain NLL bound ε = ratio × the starting model's
  double pdu_dual_lr = 1.0;    // PDU: dual step η
  int64_t pdu_warmup_cycles = 2;  // PDU: cycles before λ is updated
  int64_t rmu_layer = -1;       // RMU: the block steered after (-1: round(7 · layers / 32))
  double rmu_steering = 20;     // RMU: c, the length of the random direction
  int64_t rmu_seed = 1234;      // RMU: seed of the random direction u
  double dpo_beta = 0.1;        // IdkDPO, AltPO: β of the preference loss
  std::string idk_file;         // IdkDPO: refusal sentences, one per line ("": the shipped list)
  double task_vector_lambda = 5;  // task vector: θ − λ (θ_ft − θ)
  double whp_alpha = 4;           // WHP (whp, whp_logits): α in v_ref − α · ReLU(v_reinf − v_ref)
  std::string whp_anchors;        // WHP: anchor dictionary, JSON or TOML term → generic ("": the generated corpus's)
  // The reinforced model (task vector, WHP): the source fine-tuned further on the forget passages, once per run.
  // With `reinforced` set, that checkpoint (Lethe or Hugging Face) is the reinforced model instead.
  int64_t reinforce_steps = 40;
  double reinforce_lr = 4e-5;
  std::string reinforced;
  int64_t keep_checkpoints = 2;
  // Low-rank adapters (docs/strategies.md, LoRA): "none" trains every weight; "lora" freezes the
  // base and trains y += (dropout(x) Aᵀ) Bᵀ · lora_alpha / lora_rank on each target projection.
  std::string adapter = "none";  // "none" | "lora"
  int64_t lora_rank = 16;
  double lora_alpha = 32;
  std::vector<std::string> lora_targets = {"q", "k", "v", "o", "gate", "up", "down"};
  double lora_dropout = 0.05;
};

// The methods an [unlearn.<method>] section can name, in registry order (strategies/registry.cc
// makes one per name).
const std::vector<std::string>& unlearn_method_names();

// Whether an [unlearn.<method>] section may set `key` (an [unlearn] key without the section prefix).
bool method_section_key(const std::string& key);

// The projections unlearn.lora_targets can name: q, k, v, o (attention), gate, up, down (MLP);
// Hugging Face's module names without "_proj".
const std::vector<std::string>& lora_target_names();

// Evaluation (docs/metrics.md). Lengths are in tokens.
struct EvalConfig {
  int64_t verbmem_prefix = 16;
  int64_t verbmem_new_tokens = 32;
  int64_t knowmem_shots = 0;  // few-shot examples before each question (docs/metrics.md)
  int64_t knowmem_new_tokens = 32;
  double mink_k = 0.4;
  int64_t el_n = 10;
  int64_t el_stride = 8;         // EL_n starts every el_stride tokens
  int64_t el_max_new_tokens = 32;
  int64_t batch_size = 32;       // rows per teacher-forced forward
  int64_t generate_batch_size = 128;  // continuations decoded together (Note [One generation pool])
  int64_t max_samples = 100;     // cap on each evaluated list (passages, QA probes); 0 = all
  // A JSONL corpus's register to remove (JSON {"words": […], "templates": […], "prompts": […]}):
  // toxicity_rate counts its words in greedy continuations (docs/metrics.md, Toxicity rate).
  std::string toxicity_lexicon;
};

struct MeshConfig {
  int64_t tp = 1;
  int64_t dp = 1;
  // Where AdamW's state lives (docs/distributed.md): "replicated" on every dp rank; "zero1" the
  // moments sharded over dp; "distributed" the moments and the fp32 master weights sharded over dp
  // (with fp32 weights the weights are the masters, so it is the same as "zero1").
  std::string optimizer = "replicated";
  std::string grad_dtype = "fp32";  // bf16 runs: dtype of the gradient buffer and its reduction
  double bucket_mb = 25;    // data-parallel gradient all-reduce bucket size
  bool overlap_grad_reduce = true;  // start each bucket's all-reduce during backward
};

struct RunConfig {
  RunSection run;
  ExperimentConfig experiment;
  ModelConfig model;
  CorpusConfig corpus;
  TokenizerConfig tokenizer;
  DataConfig data;
  TrainConfig train;
  UnlearnConfig unlearn;
  EvalConfig eval;
  MeshConfig mesh;
  // The file's [unlearn.<method>] tables as TOML text, checked (Note [Method sections]).
  std::map<std::string, std::string> method_sections;
  // The [unlearn] keys the file or --set gave: with those set away from their built-in values, they
  // rank above the methods' shipped defaults (Note [Method sections]).
  std::set<std::string> unlearn_given;
  std::string source;  // the file it came from ("" for defaults)

  // The settings `method` runs with: the built-in [unlearn] values, then the method's shipped
  // defaults, then the [unlearn] keys given or changed, then its section (docs/config.md).
  UnlearnConfig unlearn_for(const std::string& method) const;
};

// Parses `path`, applies `overrides` ("section.key=value", value in TOML syntax or a bare string),
// and validates. Every problem is reported at once, one per line, as "file:line: key: problem".
Result<RunConfig> load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The same, from TOML text (tests; `name` stands in for the file name in messages).
Result<RunConfig> parse_config(const std::string& toml_text, const std::string& name,
                               const std::vector<std::string>& overrides = {});

// The effective config (every key, defaults included) as TOML; parse_config reads it back equal.
std::string to_toml(const RunConfig& cfg);

// Reads the architecture fields of a Hugging Face config.json into `model`.
// Unsupported variants (rope_scaling, another activation, a head_dim of its own) are errors.
Status read_hf_config(const std::string& path, ModelConfig& model);
// A Hugging Face LlamaForCausalLM config.json for `model` (parameters stored as `torch_dtype`).
std::string hf_config_json(const ModelConfig& model, const std::string& torch_dtype);

}  // namespace lethe

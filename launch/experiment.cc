#include "launch/experiment.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sched.h>
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "base/log.h"
#include "base/memory.h"
#include "base/torch_compat.h"
#include "eval/muse.h"
#include "strategies/strategies.h"

namespace lethe {

namespace fs = std::filesystem;

namespace {

// The one process-wide state a signal handler may touch.
std::atomic<bool> g_stop_requested{false};
void request_stop(int) { g_stop_requested = true; }

int default_threads(int local_size) {
  cpu_set_t set;
  int cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  return std::max(1, cores / std::max(1, local_size));
}

std::string config_dir(const RunConfig& cfg) { return fs::path(cfg.source).parent_path().string(); }

}  // namespace

std::string config_relative(const RunConfig& cfg, const std::string& path) {
  if (path.empty() || path[0] == '/' || config_dir(cfg).empty()) return path;
  return config_dir(cfg) + "/" + path;
}

namespace {

// Collective over `world` when the tokenizer is trained here.
Result<Tokenizer> experiment_tokenizer(const RunConfig& cfg, const Corpus& corpus, Communicator& world) {
  if (!cfg.tokenizer.model.empty()) {
    return Tokenizer::load(config_relative(cfg, cfg.tokenizer.model));
  }
  const std::string path = cfg.run.dir + "/tokenizer.model";
  if (fs::exists(path)) return Tokenizer::load(path);
  if (!writes_reports()) {  // rank 0 trains it (Experiment::open waits for it)
    world.barrier();
    return Tokenizer::load(path);
  }
  std::vector<std::string> texts;
  for (const auto& d : corpus.training_documents(/*include_forget=*/true, cfg.corpus.qa_in_training)) texts.push_back(d.text);
  log().info("training a {}-piece sentencepiece tokenizer on {} documents", cfg.tokenizer.vocab_size, texts.size());
  auto tok = Tokenizer::train(texts, static_cast<int>(cfg.tokenizer.vocab_size), path);
  world.barrier();  // the other ranks load it now
  return tok;
}

}  // namespace

Status validate_layout(const RunConfig& cfg, int world_size) {
  const int64_t tp = cfg.mesh.tp, dp = cfg.mesh.dp;
  if (tp * dp != world_size) {
    return Status::error("mesh.tp (" + std::to_string(tp) + ") × mesh.dp (" + std::to_string(dp) +
                         ") must equal the number of ranks the launcher started (" + std::to_string(world_size) + ")");
  }
  LETHE_RETURN_IF_ERROR(check_model_for_tp(cfg.model, tp));
  auto divisible = [&](const std::string& key, int64_t rows) {
    if (rows % dp == 0) return Status::ok();
    return Status::error(key + " (" + std::to_string(rows) + " rows) must be divisible by mesh.dp (" + std::to_string(dp) +
                         "): every dp rank takes the same number of rows");
  };
  LETHE_RETURN_IF_ERROR(divisible("train.batch_size / train.grad_accum", cfg.train.batch_size / cfg.train.grad_accum));
  for (const std::string& m : resolve_methods(cfg.unlearn.methods)) {
    const UnlearnConfig& u = cfg.unlearn_for(m);
    auto key = [&](const char* k, int64_t mine, int64_t shared) {
      return std::string("unlearn.") + (mine == shared ? "" : m + ".") + k;  // where the value was set
    };
    LETHE_RETURN_IF_ERROR(divisible(key("forget_batch", u.forget_batch, cfg.unlearn.forget_batch), u.forget_batch));
    LETHE_RETURN_IF_ERROR(divisible(key("retain_batch", u.retain_batch, cfg.unlearn.retain_batch), u.retain_batch));
    bool reinforced = runs_outside_cycles(m);
    if (!reinforced) {
      LETHE_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> s, make_strategy(m, u));
      reinforced = s->needs_reinforced();
    }
    if (reinforced && cfg.unlearn.reinforce_steps == 0 && cfg.unlearn.reinforced.empty()) {
      return Status::error("unlearn method \"" + m + "\" needs a reinforced model: unlearn.reinforce_steps = 0 trains none and "
                           "unlearn.reinforced names none (set one of them)");
    }
  }
  const auto& names = metric_names();
  const std::string& stop = cfg.unlearn.stop_metric;
  if (!stop.empty() && stop != "privleak" && std::find(names.begin(), names.end(), stop) == names.end()) {
    std::string valid;
    for (const auto& n : names) valid += " " + n;
    return Status::error("unlearn.stop_metric: \"" + stop + "\" is not a metric; valid: privleak" + valid);
  }
  return Status::ok();
}

Result<std::unique_ptr<Experiment>> open_mesh(const RunConfig& cfg) {
  LETHE_RETURN_IF_ERROR(validate_layout(cfg, launched_world_size()));  // before MPI starts
  auto e = std::make_unique<Experiment>();
  e->cfg = cfg;
  LETHE_ASSIGN_OR_RETURN(e->world, init_world(cfg.run.collective_timeout_s));
  init_logging(e->world.comm->rank());
  e->threads = cfg.run.threads > 0 ? static_cast<int>(cfg.run.threads) : default_threads(e->world.local_size);
  at::set_num_threads(e->threads);
  LETHE_ASSIGN_OR_RETURN(const at::Device device, resolve_device(cfg.run.device, e->world));
  LETHE_ASSIGN_OR_RETURN(Mesh mesh, Mesh::create(*e->world.comm, cfg.mesh, device));
  log().info("device {} (run.device = {}), {} backend over {} ranks", device.str(), cfg.run.device,
             e->world.comm->backend(), e->world.comm->size());
  e->mesh.emplace(std::move(mesh));
  LETHE_RETURN_IF_ERROR(e->mesh->check_model(cfg.model));
  return e;
}

Result<std::unique_ptr<Experiment>> open_experiment(const RunConfig& cfg) {
  LETHE_ASSIGN_OR_RETURN(auto e, open_mesh(cfg));
  LETHE_ASSIGN_OR_RETURN(e->corpus, load_corpus(cfg.corpus, config_dir(cfg)));
  if (!cfg.eval.toxicity_lexicon.empty()) {
    LETHE_ASSIGN_OR_RETURN(LexiconFile f, read_lexicon(config_relative(cfg, cfg.eval.toxicity_lexicon)));
    e->corpus.lexicon = std::move(f.lexicon);
    e->corpus.neutral_prompts = f.prompts.empty() ? retain_openings(e->corpus) : std::move(f.prompts);
  }
  if (writes_reports()) LETHE_RETURN_IF_ERROR(write_corpus(e->corpus, cfg.run.dir + "/corpus"));
  LETHE_ASSIGN_OR_RETURN(e->tok, experiment_tokenizer(cfg, e->corpus, *e->world.comm));
  // Note [Toxic scenario]: a one-token word could be suppressed by one logit and pass for removal.
  for (const std::string& w : e->corpus.lexicon.words) {
    if (e->tok.encode(w).size() < 2) {
      log().warn("toxicity lexicon: \"{}\" is a single token under {}: lowering one logit would remove it, so its rate alone "
                 "does not show that the register was removed (see the template rate)", w, e->tok.path());
    }
  }
  return e;
}

Result<TokenDataset> Experiment::dataset(const std::string& name, const std::vector<Document>& docs,
                                         Packing packing) const {
  return pack_documents(name, docs, tok, cfg.data.seq_len, cfg.model.vocab_size, packing);
}

std::unique_ptr<Llama> Experiment::new_model(Use use) const {
  ModelOptions o;
  o.dtype = cfg.train.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  o.random_init = use == Use::kTrainFromInit;
  o.trainable = use != Use::kReference;
  auto m = std::make_unique<Llama>(cfg.model, *mesh, static_cast<uint64_t>(cfg.run.seed), o);
  m->set_activation_checkpointing(cfg.train.activation_checkpointing);
  return m;
}

Metrics Experiment::evaluate(const Llama& model, SampleScores* samples) {
  if (!eval_set_) eval_set_ = make_eval_set(corpus, tok, cfg.eval, cfg.data.seq_len, cfg.eval.max_samples);
  return lethe::evaluate(model, tok, *eval_set_, cfg.eval, samples);
}

json cost_json(const Cost& c, double flops_per_token, const Mesh& mesh) {
  const double flops = c.flops(flops_per_token);
  return {{"train_tokens", c.train_tokens},
          {"forward_tokens", c.forward_tokens},
          {"seconds", c.seconds},
          {"devices", mesh.world().size()},
          {"device", mesh.device().is_cuda() ? "cuda" : "cpu"},
          {"peak_host_gb", host_memory_gb("VmHWM")},
          {"peak_device_gb", compat::peak_device_memory_gb(mesh.device())},
          {"flops", flops},
          {"tokens_per_s", c.tokens_per_second()},
          {"flops_per_s", c.seconds > 0 ? flops / c.seconds : 0.0}};
}

Status link_shared(const std::string& shared, const std::string& link) {
  if (fs::is_symlink(link)) return Status::ok();
  if (fs::exists(link)) return Status::error(link + ": exists, and is not a link to " + shared);
  std::error_code ec;
  fs::create_directories(fs::path(link).parent_path(), ec);
  fs::create_symlink(fs::relative(shared, fs::path(link).parent_path()), link, ec);
  if (ec && !fs::is_symlink(link)) return Status::error(link + ": cannot link to " + shared + ": " + ec.message());
  return Status::ok();
}

json profile_json(const Profile& p, double total_s) {
  json j = json::object();
  double parts = 0;
  for (const auto& [part, s] : p.seconds()) {
    j[part] = s;
    parts += s;
  }
  j["other"] = std::max(0.0, total_s - parts);
  j["total"] = total_s;
  return j;
}

json metrics_json(const Metrics& m) {
  json j = json::object();
  for (const auto& [k, v] : m) j[k] = v;
  return j;
}

void add_sample_scores(json& summary, const SampleScores& s) {
  if (!s.forget_truth_ratios.empty()) summary["truth_ratios_forget"] = s.forget_truth_ratios;
  summary["logprobs_forget"] = s.forget_logprobs;
}

Status write_json(const std::string& path, const json& j) {
  if (!writes_reports()) return Status::ok();
  return write_file_atomic(path, j.dump(2) + "\n");
}

Result<json> read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::error(path + ": cannot open");
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::error(path + ": not valid JSON");
  return j;
}

Status draw_gnuplot(const std::string& dir, const std::string& script) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    log().warn("gnuplot not found: {}/{} written, no plot drawn", dir, script);
    return Status::ok();
  }
  const std::string cmd = "cd '" + dir + "' && gnuplot " + script;
  if (std::system(cmd.c_str()) != 0) return Status::error(dir + "/" + script + ": gnuplot failed");
  return Status::ok();
}

StopSignal::StopSignal() {
  g_stop_requested = false;
  signal(SIGINT, request_stop);
  signal(SIGTERM, request_stop);
}

StopSignal::~StopSignal() {
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
}

bool StopSignal::requested(Communicator& world) const {
  at::Tensor flag = at::full({1}, g_stop_requested ? 1 : 0, at::kLong);
  world.all_reduce(flag, ReduceOp::kMax);
  return flag.item<int64_t>() != 0;
}

bool writes_reports() { return read_launch_env().rank == 0; }

Status keep_records(const std::string& path, const std::function<bool(const json&, int64_t)>& keep) {
  if (!writes_reports()) return Status::ok();
  std::ifstream in(path);
  std::string kept, line;
  for (int64_t i = 0; std::getline(in, line); ++i) {
    const json j = json::parse(line, nullptr, false);
    if (!j.is_discarded() && keep(j, i)) kept += line + "\n";
  }
  return write_file_atomic(path, kept);
}

std::string report_path(const std::string& path) { return writes_reports() ? path : "/dev/null"; }

}  // namespace lethe

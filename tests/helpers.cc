#include "tests/helpers.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include <gtest/gtest.h>
#include <unistd.h>

#include "collectives/nccl_communicator.h"
#include "collectives/world.h"
#include "runtime/hf_checkpoint.h"

namespace lethe::test {

namespace {
std::string scratch_path(const std::string& name, int64_t pid) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string unique = std::string(info ? info->name() : "x") + "-" + name + "-" + std::to_string(pid);
  return (std::filesystem::temp_directory_path() / "lethe-tests" / unique).string();
}
}  // namespace

std::string scratch_dir(const std::string& name) {
  const std::string dir = scratch_path(name, ::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string shared_scratch_dir(const std::string& name, Communicator& world) {
  at::Tensor pid = at::scalar_tensor(static_cast<int64_t>(::getpid()), at::kLong).reshape({1});
  world.broadcast(pid, 0);
  const std::string dir = scratch_path(name, pid.item<int64_t>());
  if (world.rank() == 0) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  world.barrier();
  return dir;
}

namespace {
World& world() {
  static World w = [] {
    const char* comm = std::getenv("LETHE_COMM");
    if (comm && std::string(comm) == "nccl" && cuda_device_count() == 0) {
      std::fprintf(stderr, "LETHE_COMM=nccl but no CUDA device is visible: skipped\n");
      std::exit(kSkipExitCode);
    }
    auto r = init_world(/*timeout_s=*/300);
    if (!r) throw std::runtime_error(r.status().message());
    return std::move(*r);
  }();
  return w;
}
}  // namespace

Communicator& test_world() { return *world().comm; }

at::Device test_device() {
  return test_world().backend() == "nccl" ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(world().device))
                                          : at::Device(at::kCPU);
}

ModelConfig small_model() {
  ModelConfig m = llama_shape(30, 16, 32, 1, 2, 1, 256);
  m.initializer_range = 0.3;
  return m;
}

RunConfig tiny_config(const std::string& dir) {
  auto cfg = parse_config(R"(
[run]
threads = 2
log_every = 1
[model]
vocab_size = 512
hidden_size = 64
intermediate_size = 128
num_hidden_layers = 2
num_attention_heads = 4
num_key_value_heads = 2
max_position_embeddings = 64
[corpus]
people = 12
forget_fraction = 0.25
holdout_fraction = 0.25
passages_per_person = 2
qa_in_training = false
[tokenizer]
vocab_size = 512
[data]
seq_len = 64
[train]
steps = 160
batch_size = 8
lr = 5e-3
warmup_steps = 10
checkpoint_every = 40
keep_checkpoints = 3
)", "tiny.toml", {"run.dir=" + dir});
  EXPECT_TRUE(cfg.is_ok()) << cfg.status().message();
  return cfg.value();
}

std::string hf_fixture_dir() { return std::string(LETHE_SOURCE_DIR) + "/tests/data/hf-tiny-llama"; }

std::unique_ptr<Llama> load_hf_fixture(const Mesh& mesh) {
  ModelConfig cfg;
  Status s = read_hf_config(hf_fixture_dir() + "/config.json", cfg);
  EXPECT_TRUE(s.is_ok()) << s.message();
  if (!s) return nullptr;
  auto model = std::make_unique<Llama>(cfg, mesh, /*seed=*/1);
  s = load_hf_weights(hf_fixture_dir(), *model);
  EXPECT_TRUE(s.is_ok()) << s.message();
  return s ? std::move(model) : nullptr;
}

void expect_fixture_logits(const Llama& model) {
  const nlohmann::json e = read_json(hf_fixture_dir() + "/expected_logits.json");
  for (size_t r = 0; r < e["tokens"].size(); ++r) {
    const auto tokens = e["tokens"][r].get<std::vector<int64_t>>();
    const auto T = static_cast<int64_t>(tokens.size());
    at::Tensor input = at::tensor(tokens, at::kLong).unsqueeze(0);
    at::Tensor logits = model.full_logits(input, at::arange(T, at::kLong).unsqueeze(0), at::zeros({1, T}, at::kLong))[0];
    at::Tensor expected = at::empty_like(logits, at::kDouble);
    for (int64_t t = 0; t < T; ++t) {
      expected[t].copy_(at::tensor(e["logits"][r][static_cast<size_t>(t)].get<std::vector<double>>(), at::kDouble));
    }
    EXPECT_LT((logits.to(at::kDouble) - expected).abs().max().item<double>(), 1e-4) << "row " << r;
  }
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

bool is_timing_key(const std::string& key) {
  for (const char* k : {"seconds", "time_s", "tokens_per_s", "flops_per_s", "peak_host_gb", "peak_device_gb", "profile"}) {
    if (key == k) return true;
  }
  return false;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace lethe::test

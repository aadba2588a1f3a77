// Hugging Face interop: the tiny Llama fixture in tests/data/hf-tiny-llama (two BF16 shards and an
// index, made by scripts/make_hf_fixture.py with expected logits from an independent NumPy
// transcription of transformers' LlamaForCausalLM) loads and gives those logits; export → import
// round-trips bit-exactly; bad folders are clear errors. The tp 2 case is Distributed.HfFixture*.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "base/memory.h"
#include "collectives/local_communicator.h"
#include "io/corpus.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "launch/convert.h"
#include "runtime/hf_checkpoint.h"
#include "tests/helpers.h"

namespace lethe {
namespace {

// A world of one and its tp 1 × dp 1 mesh.
struct OneProcess {
  LocalCommunicator world;
  Mesh mesh = Mesh::create(world, MeshConfig{}).value();
};

TEST(HfInterop, NamesFollowTransformersLlama) {
  EXPECT_EQ(hf_name("embed"), "model.embed_tokens.weight");
  EXPECT_EQ(hf_name("layers.11.attn.wk"), "model.layers.11.self_attn.k_proj.weight");
  EXPECT_EQ(hf_name("layers.0.mlp_norm"), "model.layers.0.post_attention_layernorm.weight");
  EXPECT_EQ(hf_name("layers.3.mlp.w_down"), "model.layers.3.mlp.down_proj.weight");
  EXPECT_EQ(hf_name("lm_head"), "lm_head.weight");
}

TEST(HfInterop, FixtureGivesTheExpectedLogits) {
  OneProcess one;
  auto model = test::load_hf_fixture(one.mesh);
  ASSERT_NE(model, nullptr);
  test::expect_fixture_logits(*model);
}

TEST(HfInterop, ExportThenImportRoundTripsBitExactly) {
  OneProcess one;
  auto model = test::load_hf_fixture(one.mesh);
  ASSERT_NE(model, nullptr);
  const std::string dir = test::scratch_dir("hf");
  for (auto [dtype, name] : {std::pair{at::kBFloat16, "bf16"}, {at::kFloat, "f32"}}) {
    SCOPED_TRACE(name);
    const std::string out = dir + "/" + name;
    // 20 kB shards: the fixture's 52 kB (bf16) become several files and an index.
    ASSERT_TRUE(export_hf(*model, out, 20'000, dtype).is_ok());
    ASSERT_TRUE(is_hf_dir(out));
    int shards = 0;
    for (const auto& e : std::filesystem::directory_iterator(out)) shards += e.path().extension() == ".safetensors";
    EXPECT_GE(shards, 3);
    ModelConfig cfg;
    ASSERT_TRUE(read_hf_config(out + "/config.json", cfg).is_ok());
    EXPECT_EQ(cfg.num_key_value_heads, model->config().num_key_value_heads);
    Llama back(cfg, one.mesh, /*seed=*/99);
    Status s = load_hf_weights(out, back);
    ASSERT_TRUE(s.is_ok()) << s.message();
    for (size_t i = 0; i < back.params().size(); ++i) {
      EXPECT_TRUE(at::equal(back.params()[i].value, model->params()[i].value)) << back.params()[i].name;
    }
  }
  // Bit-exact at the file level too: the bf16 export holds the fixture's bytes.
  auto ours = SafetensorsFile::open(dir + "/bf16/model-00001-of-00003.safetensors");
  auto theirs = SafetensorsFile::open(test::hf_fixture_dir() + "/model-00001-of-00002.safetensors");
  ASSERT_TRUE(ours.is_ok() && theirs.is_ok());
  const SafetensorsEntry* a = ours->find("model.embed_tokens.weight");
  const SafetensorsEntry* b = theirs->find("model.embed_tokens.weight");
  ASSERT_TRUE(a && b);
  EXPECT_TRUE(at::equal(ours->read(*a), theirs->read(*b)));
}

// The export streams (Note [Streaming export]): a 48M-parameter model written as bf16 (96 MB in
// one shard) raises the process's peak RSS by about one converted tensor (the largest is 4 MB),
// not by the whole export, and the folder reloads to the same logits.
TEST(HfInterop, StreamedExportHoldsOneTensorAtATimeAndReloadsToTheSameLogits) {
  OneProcess one;
  const ModelConfig m = llama_shape(4096, 512, 4096, 6, 8, 8, 64);
  Llama model(m, one.mesh, 1);
  const int64_t largest = m.hidden_size * m.intermediate_size * 2;  // a bf16 MLP matrix
  const std::string dir = test::scratch_dir("hf-stream");
  reset_peak_host_memory();
  const double before = host_memory_gb("VmRSS");
  ASSERT_TRUE(export_hf(model, dir, int64_t{1} << 30, at::kBFloat16).is_ok());
  const double peak = (host_memory_gb("VmHWM") - before) * 1e9;
  EXPECT_LT(peak, 4.0 * static_cast<double>(largest)) << "peak above RSS: " << peak / 1e6 << " MB";
  std::printf("streamed export: peak %.1f MB above RSS for a %.0f MB bf16 export (largest tensor %.1f MB)\n", peak / 1e6,
              2.0 * static_cast<double>(model.num_params_global()) / 1e6, static_cast<double>(largest) / 1e6);

  Llama back(m, one.mesh, /*seed=*/7, {at::kFloat, /*random_init=*/false});
  ASSERT_TRUE(load_hf_weights(dir, back).is_ok());
  Llama rounded(m, one.mesh, 1, {at::kBFloat16, true, /*trainable=*/false});  // the same weights rounded to bf16
  const at::Tensor ids = at::arange(32, at::kLong).unsqueeze(0);
  const at::Tensor pos = at::arange(32, at::kLong).unsqueeze(0), seg = at::zeros({1, 32}, at::kLong);
  at::Tensor a = back.full_logits(ids, pos, seg);
  back.set_compute_dtype(at::kBFloat16);
  EXPECT_TRUE(at::equal(back.full_logits(ids, pos, seg), rounded.full_logits(ids, pos, seg)));
  EXPECT_LT((a - model.full_logits(ids, pos, seg)).abs().max().item<double>(), 2e-2);  // bf16 weights vs fp32
}

// `lethe convert hf-to-lethe` brings the folder's tokenizer.model along, and refuses one with more
// pieces than the model's vocabulary.
TEST(HfInterop, ImportBringsTheTokenizer) {
  const std::string dir = test::scratch_dir("hf-tok");
  OneProcess one;
  auto cfg = parse_config("", "<test>", {"run.dir=" + dir + "/run"});
  ASSERT_TRUE(cfg.is_ok());
  ASSERT_TRUE(export_hf(Llama(cfg->model, one.mesh, 1), dir + "/hf", 1 << 30, at::kFloat).is_ok());
  CorpusConfig people;
  people.people = 30;
  std::vector<std::string> texts;
  for (const auto& d : generate_corpus(people).training_documents(true, true)) texts.push_back(d.text);
  auto tok = Tokenizer::train(texts, 400, dir + "/hf/tokenizer.model");
  ASSERT_TRUE(tok.is_ok()) << tok.status().message();
  const Status ok = run_convert_from_hf(*cfg, dir + "/hf", dir + "/out");
  ASSERT_TRUE(ok.is_ok()) << ok.message();
  auto copied = Tokenizer::load(dir + "/out/tokenizer.model");
  ASSERT_TRUE(copied.is_ok()) << copied.status().message();
  EXPECT_EQ(copied->encode(texts[0]), tok->encode(texts[0]));

  cfg->model.vocab_size = 384;
  ASSERT_TRUE(export_hf(Llama(cfg->model, one.mesh, 1), dir + "/small", 1 << 30, at::kFloat).is_ok());
  std::filesystem::copy_file(dir + "/hf/tokenizer.model", dir + "/small/tokenizer.model");
  const Status s = run_convert_from_hf(*cfg, dir + "/small", dir + "/out2");
  EXPECT_NE(s.message().find(dir + "/small/tokenizer.model: 400 pieces, more than config.json's vocab_size 384"),
            std::string::npos) << s.message();
}

// config.json variants Lethe does not implement are refused by key, never silently mis-loaded.
TEST(HfInterop, UnsupportedConfigVariantsAreRefused) {
  std::ifstream in(test::hf_fixture_dir() + "/config.json");
  const nlohmann::json base = nlohmann::json::parse(in);
  const std::string path = test::scratch_dir("hf-config") + "/config.json";
  const std::pair<nlohmann::json, std::string> cases[] = {
      {{{"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}}}}, "rope_scaling"},
      {{{"hidden_act", "gelu"}}, "hidden_act \"gelu\" is not supported"},
      {{{"head_dim", 16}}, "head_dim 16 differs from hidden_size / num_attention_heads = 8"},
      {{{"attention_bias", true}}, "attention_bias true is not supported"},
      {{{"mlp_bias", true}}, "mlp_bias true is not supported"}};
  for (const auto& [change, message] : cases) {
    nlohmann::json j = base;
    j.update(change);
    std::ofstream(path) << j.dump();
    ModelConfig m;
    const Status s = read_hf_config(path, m);
    EXPECT_NE(s.message().find(path + ": " + message), std::string::npos) << s.message();
  }
}

TEST(HfInterop, BadFoldersAreClearErrors) {
  OneProcess one;
  ModelConfig cfg;
  ASSERT_TRUE(read_hf_config(test::hf_fixture_dir() + "/config.json", cfg).is_ok());
  cfg.intermediate_size = 128;  // not what the files hold
  Llama wrong(cfg, one.mesh, 1);
  Status s = load_hf_weights(test::hf_fixture_dir(), wrong);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("model.layers.0.mlp.gate_proj.weight has shape [64, 32], the model expects [128, 32]"),
            std::string::npos) << s.message();
  EXPECT_NE(s.message().find("model-00001-of-00002.safetensors"), std::string::npos) << s.message();

  const std::string dir = test::scratch_dir("hf");
  std::filesystem::copy(test::hf_fixture_dir(), dir, std::filesystem::copy_options::recursive);
  std::filesystem::remove(dir + "/model-00002-of-00002.safetensors");
  cfg.intermediate_size = 64;
  Llama model(cfg, one.mesh, 1);
  s = load_hf_weights(dir, model);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("model-00002-of-00002.safetensors: cannot open"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace lethe

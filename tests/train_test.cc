// Training, retraining, resume and checkpoints, through the same phase runner as the CLI.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <signal.h>
#include <sys/resource.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "collectives/local_communicator.h"
#include "io/hdf5_store.h"
#include "launch/train_phase.h"
#include "runtime/checkpoint.h"
#include "runtime/trainer.h"
#include "tests/helpers.h"

namespace lethe {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

using test::read_json;
using test::read_jsonl;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Target and retrained model on the tiny corpus, trained once for the tests of this suite.
class Trained : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(test::scratch_dir("trained"));
    RunConfig cfg = test::tiny_config(*dir_);
    Status t = run_train_phase(cfg, {true, false, 0});
    ASSERT_TRUE(t.is_ok()) << t.message();
    Status r = run_train_phase(cfg, {false, false, 0});
    ASSERT_TRUE(r.is_ok()) << r.message();
  }
  static std::string* dir_;
};
std::string* Trained::dir_ = nullptr;

TEST_F(Trained, LossFallsAndTheTargetMemorisesItsCorpus) {
  auto metrics = read_jsonl(*dir_ + "/target/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 160u);
  const double first = metrics.front()["loss"], last = metrics.back()["loss"];
  EXPECT_LT(last, 0.1 * first) << "first " << first << " last " << last;
  json target = read_json(*dir_ + "/target/summary.json");
  const json& m = target["metrics"];
  EXPECT_GT(m["ma_forget"].get<double>(), 0.8) << target.dump();
  EXPECT_GT(m["ma_retain"].get<double>(), 0.8) << target.dump();
  // Never-seen people are predicted far worse than trained ones.
  EXPECT_LT(m["ma_holdout"].get<double>(), m["ma_retain"].get<double>() - 0.2);
  EXPECT_GT(target["cost"]["train_tokens"].get<int64_t>(), 0);
  EXPECT_GT(target["cost"]["peak_host_gb"].get<double>(), 0);  // VmHWM of this process
  EXPECT_EQ(target["cost"]["devices"], 1);
  EXPECT_TRUE(fs::exists(*dir_ + "/target/config.toml"));
  EXPECT_TRUE(fs::exists(*dir_ + "/tokenizer.model"));
  EXPECT_TRUE(fs::exists(*dir_ + "/corpus/forget.jsonl"));
}

TEST_F(Trained, RetrainedModelDidNotLearnTheForgetPeople) {
  json target = read_json(*dir_ + "/target/summary.json"), retrain = read_json(*dir_ + "/retrain/summary.json");
  const json &t = target["metrics"], &r = retrain["metrics"];
  const double t_forget = t["ma_forget"], r_forget = r["ma_forget"];
  EXPECT_GT(r["ma_retain"].get<double>(), 0.8);
  EXPECT_LT(r_forget, t_forget - 0.2) << "target " << t_forget << " retrain " << r_forget;
  EXPECT_GT(r["ppl_forget"].get<double>(), 2 * t["ppl_forget"].get<double>());
}

TEST_F(Trained, CheckpointsArePrunedAndLatestPointsToTheLast) {
  auto ckpts = list_checkpoints(*dir_ + "/target/checkpoints");
  ASSERT_EQ(ckpts.size(), 3u);
  EXPECT_EQ(fs::path(ckpts[0]).filename(), "step-00000160.h5");
  EXPECT_EQ(fs::path(ckpts[2]).filename(), "step-00000080.h5");
  std::ifstream latest(*dir_ + "/target/checkpoints/latest");
  std::string name;
  latest >> name;
  EXPECT_EQ(name, "step-00000160.h5");
  auto f = H5File::open(ckpts[0]);
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(*f->attr_string("format"), "lethe-checkpoint");
  EXPECT_EQ(*f->attr_int("version"), kCheckpointVersion);
  auto embed = f->read_tensor("model/embed");
  ASSERT_TRUE(embed.is_ok());
  EXPECT_EQ(embed->sizes(), (std::vector<int64_t>{512, 64}));
  auto config = f->read_string("config");
  ASSERT_TRUE(config.is_ok());
  EXPECT_NE(config->find("[train]"), std::string::npos);
}

// A model + trainer on the tiny corpus, for checkpoint-level tests.
struct Rig {
  explicit Rig(const std::string& dir)
      : cfg(test::tiny_config(dir)), mesh(Mesh::create(world, cfg.mesh).value()), corpus(load_corpus(cfg.corpus, "").value()) {
    std::vector<std::string> texts;
    for (const auto& d : corpus.training_documents(true, false)) texts.push_back(d.text);
    tok = std::make_unique<Tokenizer>(Tokenizer::train(texts, 512, dir + "/tokenizer.model").value());
    data = std::make_unique<TokenDataset>(pack_documents("train", corpus.training_documents(true, false), *tok, 64, 512).value());
    model = std::make_unique<Llama>(cfg.model, mesh, 1);
    trainer = std::make_unique<Trainer>(*model, mesh, cfg.train, *data, 1);
    meta = {"target", to_toml(cfg), {{"train", data->checksum()}}, "", 0};
  }
  RunConfig cfg;
  LocalCommunicator world;
  Mesh mesh;
  Corpus corpus;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<TokenDataset> data;
  std::unique_ptr<Llama> model;
  std::unique_ptr<Trainer> trainer;
  CheckpointMeta meta;
};

TEST(Resume, StopAndResumeIsBitIdenticalToAnUninterruptedRun) {
  std::string a = test::scratch_dir("straight"), b = test::scratch_dir("resumed");
  RunConfig ca = test::tiny_config(a), cb = test::tiny_config(b);
  ca.train.steps = cb.train.steps = 50;
  ca.train.checkpoint_every = cb.train.checkpoint_every = 20;
  ASSERT_TRUE(run_train_phase(ca, {true, false, 0}).is_ok());
  ASSERT_TRUE(run_train_phase(cb, {true, false, 27}).is_ok());  // stops after step 27
  EXPECT_EQ(fs::path(list_checkpoints(b + "/target/checkpoints")[0]).filename(), "step-00000027.h5");
  EXPECT_FALSE(fs::exists(b + "/target/summary.json"));
  ASSERT_TRUE(run_train_phase(cb, {true, true, 0}).is_ok());

  auto la = read_jsonl(a + "/target/metrics.jsonl"), lb = read_jsonl(b + "/target/metrics.jsonl");
  ASSERT_EQ(la.size(), 50u);
  ASSERT_EQ(lb.size(), 50u);
  for (size_t i = 0; i < la.size(); ++i) {
    EXPECT_EQ(la[i]["step"], lb[i]["step"]);
    EXPECT_EQ(la[i]["loss"].get<double>(), lb[i]["loss"].get<double>()) << "step " << la[i]["step"];
  }
  auto fa = H5File::open(a + "/target/checkpoints/step-00000050.h5");
  auto fb = H5File::open(b + "/target/checkpoints/step-00000050.h5");
  ASSERT_TRUE(fa.is_ok() && fb.is_ok());
  for (const std::string group : {"model", "optim/exp_avg", "optim/exp_avg_sq"}) {
    auto names = fa->list(group);
    ASSERT_FALSE(names.empty());
    EXPECT_EQ(names, fb->list(group));
    for (const auto& n : names) {
      EXPECT_TRUE(at::equal(fa->read_tensor(group + "/" + n).value(), fb->read_tensor(group + "/" + n).value())) << group << "/" << n;
    }
  }
}

TEST(Resume, RefusesCheckpointsOfOtherData) {
  std::string dir = test::scratch_dir("otherdata");
  RunConfig cfg = test::tiny_config(dir);
  cfg.train.steps = 4;
  ASSERT_TRUE(run_train_phase(cfg, {true, false, 2}).is_ok());
  cfg.corpus.forget_ids = {"p0000", "p0001", "p0002", "p0003", "p0004"};
  Status s = run_train_phase(cfg, {true, true, 0});
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("was trained on different \"train\" data"), std::string::npos) << s.message();
}

// Flips one byte inside the stored values of `dataset` (found by content, so metadata is untouched).
void corrupt_dataset(const std::string& path, const std::string& dataset) {
  at::Tensor t = H5File::open(path).value().read_tensor(dataset).value();
  std::string needle(reinterpret_cast<const char*>(t.data_ptr()) + 64, 32);
  std::string bytes = read_bytes(path);
  size_t at_ = bytes.find(needle);
  ASSERT_NE(at_, std::string::npos);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(at_ + 5));
  f.put(static_cast<char>(bytes[at_ + 5] ^ 0x5A));
}

TEST(Checkpoint, CorruptionIsDetectedAndThePreviousCheckpointIsUsed) {
  std::string dir = test::scratch_dir("corrupt");
  Rig rig(dir);
  const std::string ckpt = dir + "/ckpt";
  rig.trainer->step();
  std::string first = save_checkpoint(ckpt, *rig.trainer, rig.meta, 3).value();
  rig.trainer->step();
  std::string second = save_checkpoint(ckpt, *rig.trainer, rig.meta, 3).value();

  corrupt_dataset(second, "model/layers.1.mlp.w_up");
  Rig fresh(test::scratch_dir("corrupt-fresh"));
  Status s = load_checkpoint(second, *fresh.trainer, rig.meta);
  ASSERT_FALSE(s.is_ok());
  // The file's seal catches it before libhdf5 reads anything (Note [Sealed files])…
  EXPECT_NE(s.message().find(second + ": file checksum mismatch"), std::string::npos) << s.message();
  // …and resealed, the dataset's own checksum does.
  ASSERT_TRUE(H5File::seal(second).is_ok());
  s = load_checkpoint(second, *fresh.trainer, rig.meta);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("model/layers.1.mlp.w_up: checksum mismatch"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(second), std::string::npos);
  EXPECT_EQ(fresh.trainer->steps_taken(), 0);  // all or nothing: nothing was applied

  auto used = resume_latest(ckpt, *fresh.trainer, rig.meta);
  ASSERT_TRUE(used.is_ok()) << used.status().message();
  EXPECT_EQ(*used, first);
  EXPECT_EQ(fresh.trainer->steps_taken(), 1);

  std::string bytes = read_bytes(first);
  std::ofstream(first, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() / 2);
  Status t = load_checkpoint(first, *fresh.trainer, rig.meta);
  ASSERT_FALSE(t.is_ok());
  EXPECT_NE(t.message().find(first), std::string::npos) << t.message();
  auto none = resume_latest(ckpt, *fresh.trainer, rig.meta);
  ASSERT_FALSE(none.is_ok());
  EXPECT_NE(none.status().message().find("no usable checkpoint"), std::string::npos);
}

TEST(Checkpoint, FullDiskLeavesThePreviousCheckpointIntact) {
  std::string dir = test::scratch_dir("fulldisk");
  Rig rig(dir);
  const std::string ckpt = dir + "/ckpt";
  rig.trainer->step();
  std::string first = save_checkpoint(ckpt, *rig.trainer, rig.meta, 3).value();
  rig.trainer->step();

  // The file-size limit makes writes past 64 KiB fail with EFBIG, as a full disk fails them.
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 64 * 1024;
  setrlimit(RLIMIT_FSIZE, &small);
  auto failed = save_checkpoint(ckpt, *rig.trainer, rig.meta, 3);
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, old_handler);

  ASSERT_FALSE(failed.is_ok());
  EXPECT_NE(failed.status().message().find("earlier checkpoints are untouched"), std::string::npos) << failed.status().message();
  EXPECT_EQ(list_checkpoints(ckpt), std::vector<std::string>{first});
  for (const auto& e : fs::directory_iterator(ckpt)) EXPECT_NE(e.path().extension(), ".tmp") << e.path();
  Rig fresh(test::scratch_dir("fulldisk-fresh"));
  auto used = resume_latest(ckpt, *fresh.trainer, rig.meta);
  ASSERT_TRUE(used.is_ok()) << used.status().message();
  EXPECT_EQ(*used, first);
}

TEST(Train, GradientAccumulationMatchesOneBigBatch) {
  std::string dir = test::scratch_dir("accum");
  Rig one(dir), two(dir);
  two.cfg.train.grad_accum = 4;
  two.trainer = std::make_unique<Trainer>(*two.model, two.mesh, two.cfg.train, *two.data, 1);
  for (int i = 0; i < 3; ++i) {
    StepStats a = one.trainer->step(), b = two.trainer->step();
    EXPECT_NEAR(a.loss(), b.loss(), 1e-5 * a.loss()) << "step " << i;
    EXPECT_NEAR(a.grad_norm(), b.grad_norm(), 1e-4 * a.grad_norm()) << "step " << i;
  }
  // AdamW divides each step by √v + ε, so rounding differences between the two reductions grow on
  // elements whose gradients are small: after 3 steps one element of w_up lies 0.5e-6 beyond the
  // relative bound with ATen's RMSNorm ops, 1.6e-6 with the fused kernel (Note [Fused CPU kernels]).
  for (size_t i = 0; i < one.model->params().size(); ++i) {
    EXPECT_TRUE(at::allclose(one.model->params()[i].value, two.model->params()[i].value, 1e-4, 5e-6))
        << one.model->params()[i].name;
  }
}

// The fp32 update is torch.optim.AdamW's, op for op (decoupled decay, bias corrections), applied
// in place: two steps with clipping and weight decay give bit-identical parameters to the formula.
TEST(Train, Fp32AdamWIsTheReferenceUpdateBitForBit) {
  LocalCommunicator world;
  Mesh mesh = Mesh::create(world, MeshConfig{}).value();
  Llama model(test::small_model(), mesh, 3);
  const AdamHyper h{0.9, 0.95, 1e-8, 0.1};
  AdamW opt(model, h, mesh);
  std::vector<at::Tensor> w, m, v;
  for (const Param& p : model.params()) {
    w.push_back(p.value.detach().clone());
    m.push_back(at::zeros_like(w.back()));
    v.push_back(at::zeros_like(w.back()));
  }
  at::Generator gen = at::detail::createCPUGenerator(5);
  for (int64_t step = 1; step <= 2; ++step) {
    std::vector<at::Tensor> g;
    double sq = 0;
    for (Param& p : model.params()) {
      g.push_back(at::randn(p.value.sizes(), gen));
      p.value.mutable_grad() = g.back().clone();
      sq += g.back().to(at::kDouble).pow(2).sum().item<double>();
    }
    const double lr = 1e-2, norm = std::sqrt(sq), scale = 1.0 / (norm + 1e-6);  // clipped to 1
    EXPECT_DOUBLE_EQ(opt.step(lr, 1.0).item<double>(), norm);
    const double bc1 = 1 - std::pow(h.beta1, step), bc2 = 1 - std::pow(h.beta2, step);
    for (size_t i = 0; i < w.size(); ++i) {
      const at::Tensor gi = g[i] * scale;
      if (model.params()[i].decay) w[i].mul_(1 - lr * h.weight_decay);
      m[i].mul_(h.beta1).add_(gi, 1 - h.beta1);
      v[i].mul_(h.beta2).addcmul_(gi, gi, 1 - h.beta2);
      w[i].addcdiv_(m[i], (v[i].sqrt() / std::sqrt(bc2)).add_(h.eps), -lr / bc1);
      EXPECT_TRUE(at::equal(model.params()[i].value, w[i])) << model.params()[i].name << " step " << step;
    }
  }
}

// The foreach form (tensors the one pass does not take: here non-contiguous ones, on a GPU every
// one), run over groups no larger together than the largest tensor, gives the one pass's update
// bit for bit: mixed sizes, some tensors decayed and some not, clipped.
TEST(Train, AdamWForeachGroupsEqualTheOnePass) {
  at::Generator gen = at::detail::createCPUGenerator(9);
  const std::vector<std::vector<int64_t>> shapes{{40, 30}, {7, 3}, {5, 6}, {30, 1}, {12, 12}, {2, 2}};
  std::vector<at::Tensor> w, m, v, g, w2, m2, v2, g2;
  AdamLists one_pass, foreach;
  for (size_t i = 0; i < shapes.size(); ++i) {
    for (auto* list : {&w, &m, &v, &g}) list->push_back(at::randn(shapes[i], gen));
    v.back().abs_();
    // The same values, stored transposed: not contiguous, so adamw_update takes the foreach form.
    for (auto [from, to] : {std::pair{&w, &w2}, {&m, &m2}, {&v, &v2}, {&g, &g2}}) {
      to->push_back(from->back().t().contiguous().t());
    }
    one_pass.add(w[i], m[i], v[i], g[i], i % 2 == 0);
    foreach.add(w2[i], m2[i], v2[i], g2[i], i % 2 == 0);
  }
  ASSERT_FALSE(w2[0].is_contiguous());
  const AdamHyper h{0.9, 0.95, 1e-8, 0.1};
  const at::Tensor clip = at::scalar_tensor(0.25, at::kDouble);
  adamw_update(one_pass, 1e-2, h, 3, clip);
  adamw_update(foreach, 1e-2, h, 3, clip);
  for (size_t i = 0; i < shapes.size(); ++i) {
    EXPECT_TRUE(at::equal(w[i], w2[i]) && at::equal(m[i], m2[i]) && at::equal(v[i], v2[i]) && at::equal(g[i], g2[i]))
        << "tensor " << i;
  }
}

// A dataset claiming 10^12 elements that the file does not store is refused, not allocated.
TEST(Checkpoint, AHugeClaimedShapeIsRefusedBeforeAllocation) {
  const std::string path = test::scratch_dir("h5-huge") + "/t.h5";
  {
    H5File f = H5File::create(path).value();
    const std::vector<Piece> none{Piece{Box{{0, 0}, {0, 0}}, 0}};  // a piece table, no data written
    ASSERT_TRUE(f.write_sharded("w", {1000000, 1000000}, at::kFloat, none, {}, at::Tensor()).is_ok());
    ASSERT_TRUE(f.close().is_ok());
  }
  ASSERT_TRUE(H5File::seal(path).is_ok());
  auto t = H5File::open(path).value().read_box("w", Box{{0, 0}, {1000000, 1000000}});
  ASSERT_FALSE(t.is_ok());
  EXPECT_NE(t.status().message().find("w: its shape [1000000, 1000000] needs 4000000000000 bytes, the file stores 0"),
            std::string::npos) << t.status().message();
}

TEST(Checkpoint, Bf16TensorsRoundTripThroughHdf5) {
  std::string dir = test::scratch_dir("h5");
  at::Tensor x = at::randn({3, 5}).to(at::kBFloat16);
  {
    auto f = H5File::create(dir + "/t.h5");
    ASSERT_TRUE(f.is_ok());
    ASSERT_TRUE(f->write_tensor("a/b.c", x).is_ok());
    ASSERT_TRUE(f->close().is_ok());
  }
  Status unsealed = H5File::open(dir + "/t.h5").status();
  EXPECT_NE(unsealed.message().find("t.h5: no Lethe seal"), std::string::npos) << unsealed.message();
  ASSERT_TRUE(H5File::seal(dir + "/t.h5").is_ok());
  auto f = H5File::open(dir + "/t.h5");
  auto y = f->read_tensor("a/b.c");
  ASSERT_TRUE(y.is_ok()) << y.status().message();
  EXPECT_EQ(y->scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(*y, x));
  EXPECT_FALSE(f->read_tensor("a/missing").is_ok());
}

TEST(Phase, BadInputsAreClearErrors) {
  std::string dir = test::scratch_dir("bad");
  RunConfig cfg = test::tiny_config(dir);
  cfg.model.vocab_size = 128;  // the tokenizer has about 500 pieces
  Status s = run_train_phase(cfg, {true, false, 0});
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("is larger than the model's vocab_size (128)"), std::string::npos) << s.message();

  cfg = test::tiny_config(dir);
  cfg.mesh.tp = 2;
  s = run_train_phase(cfg, {true, false, 0});
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("must equal the number of ranks the launcher started (1)"), std::string::npos) << s.message();

  cfg = test::tiny_config(dir);
  cfg.tokenizer.model = dir + "/missing.model";
  s = run_train_phase(cfg, {true, false, 0});
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("missing.model: tokenizer model not found"), std::string::npos) << s.message();

  cfg = test::tiny_config(test::scratch_dir("noresume"));
  s = run_train_phase(cfg, {true, true, 0});
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("no checkpoint to resume from"), std::string::npos) << s.message();
}

// Run by tests/kill_resume.sh: the run in LETHE_RUN_B (killed and resumed) against the one in
// LETHE_RUN_A (uninterrupted), for each phase in LETHE_PHASES: every parameter and optimizer state
// of the final checkpoint bit-identical (by the stored checksums of the same bytes), and
// metrics.jsonl and summary.json equal without their timings.
json without_timings(json j) {
  if (!j.is_object()) return j;
  json out = json::object();
  for (auto& [k, v] : j.items()) {
    if (!test::is_timing_key(k)) out[k] = without_timings(v);
  }
  return out;
}

void expect_same_datasets(const H5File& a, const H5File& b, const std::string& group) {
  for (const std::string& n : a.list(group)) {
    const std::string name = group + "/" + n;
    if (n.find("seconds") != std::string::npos) continue;  // wall time, not state that shapes the run
    if (a.shape(name).is_ok()) {
      EXPECT_EQ(a.stored_checksum(name).value(), b.stored_checksum(name).value()) << name;
    } else {
      expect_same_datasets(a, b, name);  // a group
    }
  }
  EXPECT_EQ(a.list(group), b.list(group)) << group;
}

TEST(KillResume, DISABLED_RunsAreBitIdentical) {
  const std::string a = std::getenv("LETHE_RUN_A"), b = std::getenv("LETHE_RUN_B");
  std::istringstream phases(std::getenv("LETHE_PHASES"));
  for (std::string phase; phases >> phase;) {
    SCOPED_TRACE(phase);
    const std::string ca = list_checkpoints(a + "/" + phase + "/checkpoints").front();
    const std::string cb = list_checkpoints(b + "/" + phase + "/checkpoints").front();
    EXPECT_EQ(std::filesystem::path(ca).filename(), std::filesystem::path(cb).filename());
    const H5File fa = H5File::open(ca).value(), fb = H5File::open(cb).value();
    for (const char* group : {"model", "optim", "state"}) expect_same_datasets(fa, fb, group);
    EXPECT_EQ(fa.read_tensor("step").value().item<int64_t>(), fb.read_tensor("step").value().item<int64_t>());
    const auto ma = test::read_jsonl(a + "/" + phase + "/metrics.jsonl"), mb = test::read_jsonl(b + "/" + phase + "/metrics.jsonl");
    ASSERT_EQ(ma.size(), mb.size());
    for (size_t i = 0; i < ma.size(); ++i) EXPECT_EQ(without_timings(ma[i]), without_timings(mb[i])) << "record " << i;
    json sa = without_timings(test::read_json(a + "/" + phase + "/summary.json"));
    json sb = without_timings(test::read_json(b + "/" + phase + "/summary.json"));
    sa.erase("from");
    sb.erase("from");
    EXPECT_EQ(sa, sb);
  }
}

}  // namespace
}  // namespace lethe

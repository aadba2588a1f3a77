// The planner against REFERENCE.md's published figures, and the 70B shapes: Llama-2-70B and
// Llama-3-70B sharded at tp 8 without 70B of memory.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>

#include "launch/plan_command.h"
#include "runtime/hf_checkpoint.h"
#include "runtime/mesh.h"
#include "runtime/model.h"
#include "launch/plan.h"
#include "tests/helpers.h"

namespace lethe {
namespace {

PlanInput input(const std::string& preset) {
  PlanInput in;
  auto m = model_preset(preset);
  EXPECT_TRUE(m.is_ok());
  in.model = *m;
  return in;
}

TEST(Plan, ParameterCountsAreThePublishedOnes) {
  const std::pair<const char*, int64_t> known[] = {{"llama-2-7b", 6'738'415'616},
                                                   {"llama-2-13b", 13'015'864'320},
                                                   {"llama-2-70b", 68'976'648'192},
                                                   {"llama-3-8b", 8'030'261'248},
                                                   {"llama-3-70b", 70'553'706'496}};
  for (auto [name, n] : known) EXPECT_EQ(make_plan(input(name))->params, n) << name;
  EXPECT_FALSE(model_preset("llama-9b").is_ok());
}

// REFERENCE.md (Megatron's distributed optimizer): bf16 weights + fp32 gradients 18 bytes per
// parameter unsharded, 6 + 12/dp with the optimizer state sharded; bf16 gradients 16 and 4 + 12/dp;
// fp32 16 and 8 + 8/dp. The runtime adds one thing of its own: fp32 replicated dp keeps its
// all-reduce buckets apart from .grad (4 more). ZeRO-1 in bf16 shards the moments only.
TEST(Plan, BytesPerParameterOfEveryOptimizerLayout) {
  PlanInput in = input("llama-2-7b");
  const double psi = 6'738'415'616.0;
  auto states = [&](bool bf16, const char* optimizer, bool bf16_grads, int64_t dp) {
    PlanInput x = in;
    x.bf16 = bf16;
    x.optimizer = optimizer;
    x.bf16_grads = bf16_grads;
    x.dp = dp;
    return make_plan(x)->memory.states() / psi;
  };
  EXPECT_DOUBLE_EQ(states(true, "replicated", false, 8), 18);
  EXPECT_DOUBLE_EQ(states(true, "distributed", false, 8), 6 + 12.0 / 8);
  EXPECT_DOUBLE_EQ(states(true, "zero1", false, 8), 10 + 8.0 / 8);
  EXPECT_DOUBLE_EQ(states(true, "replicated", true, 8), 16);
  EXPECT_DOUBLE_EQ(states(true, "distributed", true, 8), 4 + 12.0 / 8);
  EXPECT_DOUBLE_EQ(states(false, "replicated", false, 1), 16);
  EXPECT_DOUBLE_EQ(states(false, "replicated", false, 8), 20);
  EXPECT_DOUBLE_EQ(states(false, "zero1", false, 8), 8 + 8.0 / 8);
  EXPECT_DOUBLE_EQ(states(false, "distributed", false, 8), 8 + 8.0 / 8);  // fp32: the weights are the masters
  in.tp = 4;
  in.reference = ReferenceUse::kResident;
  const Plan p = *make_plan(in);
  const double norms = (2 * 32 + 1) * 4096.0, per_rank = (psi - norms) / 4 + norms;  // norms are whole on every rank
  EXPECT_DOUBLE_EQ(p.memory.states(), 18 * per_rank);  // dp 1: nothing to shard
  EXPECT_DOUBLE_EQ(p.memory.reference, 2 * per_rank);
}

// Full-parameter unlearning of Llama-2-70B on 80 GB GPUs (90 % usable; docs/plan.md), per method
// class. A step with a retain term runs two forwards before one backward, and in bf16 runs the
// later forward's bf16 weight gradients (17.2 GB at tp 8) wait in autograd beside the gradient
// buffer: with fp32 gradients nothing fits at tp ≤ 8 (weights, gradients and those alone are
// 69 GB); with bf16 gradients GradDiff and NPO (its reference cached, then freed) fit tp 8 × dp 8,
// a resident reference (KL, ICU) still nowhere. GA's step has one forward: tp 8 × dp 8 with fp32
// gradients, tp 8 × dp 4 with bf16 ones.
TEST(Plan, Llama2_70BGpuCountsPerMethodClass) {
  PlanInput in = input("llama-2-70b");
  in.tp = 8;
  in.dp = 8;
  auto fewest = [&](ReferenceUse ref, bool bf16_grads, int64_t forwards = 2) -> int64_t {
    in.reference = ref;
    in.bf16_grads = bf16_grads;
    in.forwards = forwards;
    const Plan p = *make_plan(in);
    return p.min_layout ? p.min_layout->first * p.min_layout->second : 0;
  };
  EXPECT_EQ(fewest(ReferenceUse::kNone, false), 0);
  EXPECT_EQ(fewest(ReferenceUse::kCached, false), 0);
  EXPECT_EQ(fewest(ReferenceUse::kResident, false), 0);
  EXPECT_EQ(fewest(ReferenceUse::kNone, true), 64);
  EXPECT_EQ(fewest(ReferenceUse::kCached, true), 64);
  EXPECT_EQ(fewest(ReferenceUse::kResident, true), 0);
  EXPECT_EQ(fewest(ReferenceUse::kNone, false, 1), 64);
  EXPECT_EQ(fewest(ReferenceUse::kNone, true, 1), 32);
  in.forwards = 2;
  // REFERENCE.md's worked case: 17.2 GB of bf16 weights and 34.5 of fp32 gradients per GPU at tp 8,
  // 12.9 GB of optimizer state at dp 8; checkpointing is what keeps activations small.
  in.reference = ReferenceUse::kResident;
  in.bf16_grads = false;
  const Plan p = *make_plan(in);
  EXPECT_NEAR(p.memory.weights / 1e9, 17.2, 0.05);
  EXPECT_NEAR(p.memory.grads / 1e9, 34.5, 0.05);
  EXPECT_NEAR((p.memory.master + p.memory.moments) / 1e9, 12.9, 0.05);
  EXPECT_NEAR(p.memory.reference / 1e9, 17.2, 0.05);
  EXPECT_GT(p.memory.activations_no_ckpt, 80e9);
}

// LoRA: the adapters counted by hand (r 16 on all seven projections of Llama-2-70B: per layer
// q and o 2 · 16 · 8192 · 2, k and v 16 · (8192 + 1024) · 2, gate, up and down 16 · (8192 + 28672)
// · 3), the base frozen in bf16 and also the reference, and the fewest GPUs docs/plan.md states.
TEST(Plan, LoraPlansTheFrozenBaseAndFitsSeventyBOnHalfANode) {
  PlanInput in = input("llama-2-70b");
  in.lora_rank = 16;
  in.reference = ReferenceUse::kCached;
  in.tp = 8;
  auto p = make_plan(in);
  ASSERT_TRUE(p.is_ok()) << p.status().message();
  EXPECT_EQ(p->adapter_params, 80 * (2 * 2 * 16 * 8192 + 2 * 16 * (8192 + 1024) + 3 * 16 * (8192 + 28672)));
  EXPECT_EQ(p->memory.reference, 0);
  EXPECT_EQ(p->memory.master, 0);
  EXPECT_EQ(p->memory.held_grads, 0);
  // Per GPU at tp 8: the column-parallel bases' A whole (5 · 16 · 8192), their B ÷ 8 (16 · (8192 + 2 · 1024 +
  // 2 · 28672) / 8); o and down: A ÷ 8 (16 · (8192 + 28672) / 8), B whole (2 · 8192 · 16).
  const double local = 80.0 * (5 * 16 * 8192 + 16 * (8192 + 2 * 1024 + 2 * 28672) / 8 + 16 * (8192 + 28672) / 8 + 2 * 8192 * 16);
  EXPECT_DOUBLE_EQ(p->memory.weights, 2.0 * static_cast<double>(p->params_per_gpu) + 4.0 * local);
  EXPECT_DOUBLE_EQ(p->memory.moments, 8.0 * local);
  ASSERT_TRUE(p->min_layout.has_value());
  EXPECT_EQ(p->min_layout->first * p->min_layout->second, 4);
  in = input("llama-3-8b");
  in.lora_rank = 16;
  in.reference = ReferenceUse::kResident;
  p = make_plan(in);
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p->min_layout->first * p->min_layout->second, 1);
  in.lora_targets = {"q", "qkv"};
  EXPECT_NE(make_plan(in).status().message().find("\"qkv\" is not a projection"), std::string::npos);
}

TEST(Plan, RetrainProjectionMatchesThePublishedLlama2Cost) {
  // Llama-2 pretraining on 2T tokens: 184,320 A100-hours for 7B and 1,720,320 for 70B
  // (REFERENCE.md). At an A100's 312 TFLOP/s and the 43 % MFU typical of such runs the projection
  // is within 10 % of both.
  for (auto [name, published] : {std::pair{"llama-2-7b", 184'320.0}, std::pair{"llama-2-70b", 1'720'320.0}}) {
    PlanInput in = input(name);
    in.retrain_tokens = 2e12;
    in.peak_tflops = 312;
    in.mfu = 0.43;
    const Plan p = *make_plan(in);
    EXPECT_NEAR(p.retrain_gpu_hours / published, 1.0, 0.1) << name << ": " << p.retrain_gpu_hours;
  }
}

TEST(Plan, Fp32KeepsNoMasterCopyAndBadInputIsRefused) {
  PlanInput in = input("llama-2-7b");
  in.bf16 = false;
  in.reference = ReferenceUse::kResident;
  const Plan fp32 = *make_plan(in);
  EXPECT_DOUBLE_EQ(fp32.memory.master, 0);
  EXPECT_DOUBLE_EQ(fp32.memory.reference, 4 * 6'738'415'616.0);
  in.bf16_grads = true;
  EXPECT_NE(make_plan(in).status().message().find("bf16 gradients need bf16 weights"), std::string::npos);
  in.bf16_grads = false;
  in.optimizer = "zero3";
  EXPECT_NE(make_plan(in).status().message().find("optimizer \"zero3\""), std::string::npos);
  in.optimizer = "distributed";
  in.mfu = 0;
  EXPECT_FALSE(make_plan(in).is_ok());
  in.mfu = 0.4;
  in.tp = 3;  // 32 heads over 3 ranks
  EXPECT_FALSE(make_plan(in).is_ok());
}

// `lethe plan` takes a preset or a config.json, and a run's summary.json for its throughput: the
// FLOP/s per device carried to this model's FLOPs per token.
TEST(Plan, CommandReadsConfigJsonAndMeasuredThroughput) {
  const std::string dir = test::scratch_dir("plan");
  const std::string summary = dir + "/summary.json";
  std::ofstream(summary) << R"({"cost": {"flops_per_s": 8e14, "devices": 2}})";
  PlanInput in;
  in.unlearn_tokens = 1e6;
  in.retrain_tokens = 1e9;
  in.tp = 8;
  testing::internal::CaptureStdout();
  ASSERT_TRUE(run_plan(in, "llama-2-7b", summary).is_ok());
  std::string out = testing::internal::GetCapturedStdout();
  const double tps = 4e14 / train_flops_per_token(*model_preset("llama-2-7b"), 4096);
  EXPECT_NE(out.find(fmt::format("throughput: {:.0f} tokens/s per GPU (given)", tps)), std::string::npos) << out;
  EXPECT_NE(out.find("retrain / unlearn: 1000×"), std::string::npos) << out;
  in.tp = 1;
  testing::internal::CaptureStdout();
  ASSERT_TRUE(run_plan(in, test::hf_fixture_dir(), "").is_ok());
  out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("2 layers, d 32, 4 heads / 2 KV heads, vocabulary 96"), std::string::npos) << out;
  std::ofstream(summary) << R"({"cost": {"flops_per_s": 8e14}})";
  const Status bad = run_plan(in, "llama-2-7b", summary);
  EXPECT_NE(bad.message().find(summary + ": expected cost.flops_per_s and cost.devices"), std::string::npos) << bad.message();
  EXPECT_NE(run_plan(in, "llama-7", "").message().find("--model llama-7: no such file"), std::string::npos);
}

// A layout that does not fit is an error after the table: the total, how far over, the largest
// part, and what would help; retired or unknown words are errors naming the flag.
TEST(Plan, CommandSaysWhatDoesNotFitAndByHowMuch) {
  PlanInput in;
  in.tp = 8;
  in.dp = 8;
  testing::internal::CaptureStdout();
  const Status s = run_plan(in, "llama-2-70b", "", PlanFlags{"fp32", "none", "kl", false});
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("does NOT fit"), std::string::npos) << out;
  EXPECT_NE(s.message().find("does not fit: 106.6 GB per GPU, 34.6 GB over the 72.0 GB usable (80 GB × 0.90); largest part: "
                             "gradients (fp32) 34.5 GB; bf16 gradients (--grad-dtype bf16) would save 17.2 GB"),
            std::string::npos) << s.message();
  EXPECT_NE(run_plan(in, "llama-2-70b", "", PlanFlags{"fp32", "none", "", true}).message().find("--zero1: replaced by --optimizer zero1"),
            std::string::npos);
  EXPECT_NE(run_plan(in, "llama-2-70b", "", PlanFlags{"fp16", "none", "", false}).message().find("--grad-dtype fp16"),
            std::string::npos);
  EXPECT_NE(run_plan(in, "llama-2-70b", "", PlanFlags{"fp32", "always", "", false}).message().find("--reference always"),
            std::string::npos);
  const std::string unknown = run_plan(in, "llama-2-70b", "", PlanFlags{"fp32", "none", "amnesia", false}).message();
  EXPECT_NE(unknown.find("--method amnesia: unlearn.methods: \"amnesia\" is not an unlearning method; valid: ga,"),
            std::string::npos) << unknown;
}

// Every parameter of the 70B models at tp 8: the shard shapes, the Hugging Face names, and one real
// layer's shard allocated (the whole model's would be 69B × 4 bytes / 8).
TEST(SeventyB, ShardShapesAtTp8) {
  for (const std::string name : {"llama-2-70b", "llama-3-70b"}) {
    SCOPED_TRACE(name);
    const ModelConfig m = *model_preset(name);
    ASSERT_TRUE(check_model_for_tp(m, 8).is_ok());
    std::set<std::string> hf;
    int64_t layer0 = 0;
    std::vector<at::Tensor> real_layer;
    const std::map<std::string, std::vector<int64_t>> expected = {
        {"layers.0.attn.wq", {1024, 8192}},  {"layers.0.attn.wk", {128, 8192}},  // 8 KV heads: one per rank
        {"layers.0.attn.wo", {8192, 1024}},  {"layers.0.mlp.w_gate", {3584, 8192}},
        {"layers.0.mlp.w_down", {8192, 3584}}, {"embed", {m.vocab_size / 8, 8192}}};
    for (const ParamSpec& s : llama_param_specs(m)) {
      std::vector<int64_t> shard = s.global_shape;
      if (s.split_dim >= 0) {
        ASSERT_EQ(shard[s.split_dim] % 8, 0) << s.name;
        shard[s.split_dim] /= 8;
      }
      EXPECT_TRUE(hf.insert(hf_name(s.name)).second) << s.name;
      if (auto it = expected.find(s.name); it != expected.end()) {
        EXPECT_EQ(shard, it->second) << s.name;
      }
      if (s.name.rfind("layers.0.", 0) == 0) {
        real_layer.push_back(at::zeros(shard, at::kBFloat16));
        layer0 += real_layer.back().numel() * (s.split_dim >= 0 ? 8 : 1);  // norms are replicated
      }
    }
    EXPECT_EQ(hf.size(), 2 + 9 * 80 + 1u);
    EXPECT_EQ(layer0, 2 * 8192 + 2 * 8192 * 8192 + 2 * 1024 * 8192 + 3 * 8192 * 28672);
  }
}

}  // namespace
}  // namespace lethe

// The distributed runtime against one process: tensor parallelism, data parallelism, ZeRO-1 and
// checkpoint resharding. TrainRun under `mpirun -np 2` and `-np 4` by ctest (mpi2/mpi4.Distributed);
// the one-process reference is computed on every rank with a world of one.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <filesystem>
#include <functional>

#include "collectives/local_communicator.h"
#include "eval/dp_split.h"
#include "eval/memorization.h"
#include "launch/train_phase.h"
#include "launch/unlearn_phase.h"
#include "runtime/checkpoint.h"
#include "launch/plan.h"
#include "runtime/tp_ops.h"
#include "runtime/trainer.h"
#include "tests/helpers.h"

namespace lethe {
namespace {

using test::test_world;

// 8 query heads over 4 KV heads (GQA), every size divisible by 4.
ModelConfig model_config() { return llama_shape(256, 64, 128, 2, 8, 4, 64); }

// 16 rows of 32 tokens, two samples per row, random ids.
TokenDataset random_dataset() {
  const int64_t N = 16, T = 32;
  at::Generator gen = at::detail::createCPUGenerator(99);
  TokenDataset ds;
  ds.name = "random";
  ds.seq_len = T;
  ds.tokens = at::randint(3, 256, {N, T + 1}, gen, at::kLong);
  at::Tensor pos = at::arange(T + 1, at::kLong);
  ds.segments = pos.ge(T / 2).to(at::kLong).expand({N, T + 1}).contiguous();
  ds.positions = at::where(pos.ge(T / 2), pos - T / 2, pos).expand({N, T + 1}).contiguous();
  return ds;
}

Mesh make_mesh(Communicator& world, int64_t tp, int64_t dp, const std::string& optimizer = "replicated",
               const std::string& grad_dtype = "fp32") {
  MeshConfig c;
  c.tp = tp;
  c.dp = dp;
  c.optimizer = optimizer;
  c.grad_dtype = grad_dtype;
  auto m = Mesh::create(world, c);
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  return std::move(*m);
}

// The full tensor of a tp-sharded `shard` of parameter `p` (all-gathered over tp).
at::Tensor gather_tp(const Param& p, const at::Tensor& shard, const Mesh& mesh) {
  if (p.split_dim < 0 || mesh.tp_size() == 1) return shard.clone();
  return all_gather_dim(shard, p.split_dim, mesh.tp());
}

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-12, b.abs().max().item<double>());
}

// Rows 0–3 of random_dataset: the batch the tensor-parallel tests compare on.
Batch tp_test_batch() { return make_batch(random_dataset(), {0, 1, 2, 3}); }

// Mean token NLL of a batch: the loss the tensor-parallel tests differentiate.
at::Tensor masked_nll(const Llama& m, const Batch& b) {
  return -(m.token_logprobs(b.input_BT, b.positions_BT, b.segments_BT, b.target_BT) * b.loss_mask_BT).sum() /
         b.loss_mask_BT.sum();
}

TrainConfig train_config() {
  TrainConfig t;
  t.batch_size = 8;
  t.grad_accum = 2;
  t.steps = 6;
  t.lr = 1e-2;
  t.warmup_steps = 0;
  t.weight_decay = 0.1;
  t.grad_clip = 0.5;  // clipping active: the norm must be the global one
  return t;
}

// Tolerances: float32 sums in another order. Logits and losses agree to 1e-5 absolute; gradients
// and parameters to 1e-4 relative to the tensor's largest entry.
// After several AdamW steps parameters agree to 1e-3 of the largest entry: Adam's normalised
// update turns rounding in near-zero gradients into steps of up to lr.
constexpr double kAbs = 1e-5, kRel = 1e-4, kAdamRel = 1e-3;

// tp 2 runs with activation checkpointing (each block recomputed in backward, tp collectives and
// all), tp 4 without.
TEST(Distributed, TensorParallelMatchesOneProcess) {
  Communicator& world = test_world();
  ASSERT_GE(world.size(), 2) << "run by the mpi2/mpi4.Distributed entries";
  LocalCommunicator local;
  Mesh one = make_mesh(local, 1, 1);
  const Batch b = tp_test_batch();
  for (int64_t tp = 2; tp <= world.size(); tp *= 2) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    Mesh mesh = make_mesh(world, tp, world.size() / tp);
    Llama model(model_config(), mesh, 5), ref(model_config(), one, 5);
    model.set_activation_checkpointing(tp == 2);  // blocks recomputed with their tp collectives
    at::Tensor logits = model.full_logits(b.input_BT, b.positions_BT, b.segments_BT);
    at::Tensor ref_logits = ref.full_logits(b.input_BT, b.positions_BT, b.segments_BT);
    EXPECT_LT((logits - ref_logits).abs().max().item<double>(), kAbs);
    at::Tensor loss = masked_nll(model, b);
    at::Tensor ref_loss = masked_nll(ref, b);
    EXPECT_NEAR(loss.item<double>(), ref_loss.item<double>(), kAbs);
    torch::autograd::backward({loss});
    torch::autograd::backward({ref_loss});
    for (size_t i = 0; i < ref.params().size(); ++i) {
      const Param& p = model.params()[i];
      EXPECT_LT(max_rel_diff(gather_tp(p, p.value.grad(), mesh), ref.params()[i].value.grad()), kRel) << p.name;
    }
  }
}

// LoRA on every projection at tp 2 and 4 against tp 1, with adapter dropout on (the masks are
// drawn whole and sliced, so every layout uses the same ones) and B non-zero: logits, loss and
// every adapter's gradient. tp 2 recomputes its blocks (activation checkpointing).
TEST(Distributed, LoraAtTp2EqualsTp1WithDropoutOn) {
  Communicator& world = test_world();
  ASSERT_GE(world.size(), 2) << "run by the mpi2/mpi4.Distributed entries";
  LocalCommunicator local;
  Mesh one = make_mesh(local, 1, 1);
  const Batch b = tp_test_batch();
  ModelOptions frozen;
  frozen.trainable = false;
  const LoraOptions lora{8, 16.0, lora_target_names(), 0.2};
  auto make = [&](const Mesh& mesh) {
    auto m = std::make_unique<Llama>(model_config(), mesh, 5, frozen);
    m->add_lora(lora);
    at::NoGradGuard no_grad;
    for (const Param& p : m->adapters()) {  // B from N(0, 0.1) by name, sliced like the adapter
      if (p.name.find("lora_b") != std::string::npos) p.value.copy_(init_shard(p.name, p.global_shape, p.split_dim, 0.1, 9, mesh.tp()));
    }
    m->set_dropout_step(3);
    return m;
  };
  auto ref = make(one);
  at::Tensor ref_logits = ref->full_logits(b.input_BT, b.positions_BT, b.segments_BT);
  at::Tensor ref_loss = masked_nll(*ref, b);
  torch::autograd::backward({ref_loss + ref_logits.mean()});
  for (int64_t tp = 2; tp <= world.size(); tp *= 2) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    Mesh mesh = make_mesh(world, tp, world.size() / tp);
    auto model = make(mesh);
    model->set_activation_checkpointing(tp == 2);
    at::Tensor logits = model->full_logits(b.input_BT, b.positions_BT, b.segments_BT);
    at::Tensor loss = masked_nll(*model, b);
    torch::autograd::backward({loss + logits.mean()});
    // Each dp rank draws its own masks (its rows are other samples): dp rank 0's are the reference's.
    if (mesh.dp_rank() != 0) continue;
    EXPECT_LT((logits - ref_logits).abs().max().item<double>(), kAbs);
    EXPECT_NEAR(loss.item<double>(), ref_loss.item<double>(), kAbs);
    ASSERT_EQ(model->adapters().size(), ref->adapters().size());
    for (size_t i = 0; i < ref->adapters().size(); ++i) {
      const Param& p = model->adapters()[i];
      EXPECT_LT(max_rel_diff(gather_tp(p, p.value.grad(), mesh), ref->adapters()[i].value.grad()), kRel) << p.name;
    }
    for (const Param& p : model->params()) EXPECT_FALSE(p.value.grad().defined()) << p.name;
  }
}

// Losses of `steps` train steps and the gathered parameters after them.
struct TrainRun {
  std::vector<double> losses, norms;
  std::vector<at::Tensor> params;
};

TrainRun train(const Mesh& mesh, const TokenDataset& ds, int steps, at::ScalarType dtype = at::kFloat, int64_t grad_accum = 2) {
  Llama model(model_config(), mesh, 5, {dtype});
  TrainConfig cfg = train_config();
  cfg.grad_accum = grad_accum;
  Trainer t(model, mesh, cfg, ds, 11);
  TrainRun r;
  for (int s = 0; s < steps; ++s) {
    StepStats st = t.step();
    r.losses.push_back(st.loss());
    r.norms.push_back(st.grad_norm());
  }
  for (const Param& p : model.params()) r.params.push_back(gather_tp(p, p.value.detach(), mesh).to(at::kFloat));
  return r;
}

// ‖a − b‖ / ‖b‖: small when only a few elements differ.
double rel_l2(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).norm().item<double>() / std::max(1e-12, b.norm().item<double>());
}

// `l2`: parameters compared by rel_l2 instead of the largest difference.
void expect_same_run(const TrainRun& a, const TrainRun& ref, double rel, double abs = kAbs, bool l2 = false) {
  ASSERT_EQ(a.losses.size(), ref.losses.size());
  for (size_t s = 0; s < a.losses.size(); ++s) {
    EXPECT_NEAR(a.losses[s], ref.losses[s], abs) << "step " << s;
    EXPECT_NEAR(a.norms[s], ref.norms[s], abs * std::max(1.0, ref.norms[s])) << "step " << s;
  }
  for (size_t i = 0; i < ref.params.size(); ++i) {
    EXPECT_LT(l2 ? rel_l2(a.params[i], ref.params[i]) : max_rel_diff(a.params[i], ref.params[i]), rel) << "param " << i;
  }
}

TEST(Distributed, DataParallelAndZero1MatchOneProcessOnTheSameGlobalBatch) {
  Communicator& world = test_world();
  ASSERT_GE(world.size(), 2) << "run by the mpi2/mpi4.Distributed entries";
  const TokenDataset ds = random_dataset();
  LocalCommunicator local;
  const TrainRun ref = train(make_mesh(local, 1, 1), ds, 6);
  const int W = world.size();
  for (auto [tp, dp] : {std::pair<int64_t, int64_t>{1, W}, {2, W / 2}}) {
    if (dp < 2) continue;
    for (const char* optimizer : {"replicated", "zero1", "distributed"}) {
      SCOPED_TRACE("tp " + std::to_string(tp) + " dp " + std::to_string(dp) + " " + optimizer);
      expect_same_run(train(make_mesh(world, tp, dp, optimizer), ds, 6), ref, kAdamRel);
    }
  }
}

// bf16 weights in buckets with fp32 masters: each optimizer layout at dp = world size (and tp 2 ×
// dp 2 at 4 ranks) against one data-parallel rank on the same global batch. A bf16 weight gradient is
// rounded to bf16 once per micro-batch before it is added into the fp32 bucket, so the one
// process runs the rows each rank holds as micro-batches of their own (grad_accum 2 · dp): then
// only the fp32 sums' order differs, and losses agree to 1e-4, parameters to 1e-2 of each tensor's
// largest entry after 6 steps (a weight may land one bf16 step away). (Without that split, bf16
// rounding of the per-rank sums moves losses by up to 1e-2 after 5 steps at this lr.)
TEST(Distributed, Bf16OptimizerLayoutsMatchOneProcessOnTheSameGlobalBatch) {
  Communicator& world = test_world();
  ASSERT_GE(world.size(), 2) << "run by the mpi2/mpi4.Distributed entries";
  const TokenDataset ds = random_dataset();
  LocalCommunicator local;
  const int W = world.size();
  // At tp 2 the reference is tp 2 × dp 1 on a pair of ranks: row-parallel layers round their
  // partial sums to bf16 before the tp reduction, so tp 2 and tp 1 differ by more than dp does.
  std::unique_ptr<Communicator> pair = world.split(world.rank() / 2, world.rank());
  for (auto [tp, dp] : {std::pair<int64_t, int64_t>{1, W}, {2, W / 2}}) {
    if (dp < 2) continue;
    const TrainRun ref = train(tp == 1 ? make_mesh(local, 1, 1) : make_mesh(*pair, 2, 1), ds, 6, at::kBFloat16, 2 * dp);
    for (const char* optimizer : {"replicated", "zero1", "distributed"}) {
      SCOPED_TRACE("tp " + std::to_string(tp) + " dp " + std::to_string(dp) + " " + optimizer);
      expect_same_run(train(make_mesh(world, tp, dp, optimizer), ds, 6, at::kBFloat16), ref, 1e-2, 1e-4);
    }
    if (tp == 1) {
      // bf16 gradient buckets: each accumulation and the reduction round to bf16, in another order
      // than one process's, and at lr 1e-2 Adam turns that into whole steps on near-zero gradients
      // on the first step already (a sign flip of a near-zero gradient is a 2 · lr difference). So:
      // the sharded layout equals the replicated one at the same dp over 6 steps, and both equal
      // one process with bf16 gradients over 2 steps: losses and norms to 5e-3, parameters to 5e-2
      // in relative L2 norm (2.7 % measured at dp 4: a few elements a whole step apart).
      SCOPED_TRACE("bf16 gradients at dp " + std::to_string(dp));
      const TrainRun replicated = train(make_mesh(world, 1, dp, "replicated", "bf16"), ds, 6, at::kBFloat16);
      expect_same_run(train(make_mesh(world, 1, dp, "distributed", "bf16"), ds, 6, at::kBFloat16), replicated, 1e-2, 1e-4);
      const TrainRun ref16 = train(make_mesh(local, 1, 1, "replicated", "bf16"), ds, 2, at::kBFloat16, 2 * dp);
      expect_same_run(train(make_mesh(world, 1, dp, "distributed", "bf16"), ds, 2, at::kBFloat16), ref16, 5e-2, 5e-3, true);
    }
  }
}

// Shard-local init draws only this rank's slice; it must equal the slice of the whole tensor drawn
// at once, for either split dim, sizes that 16 does or does not divide, and tiny tensors.
TEST(Distributed, ShardLocalInitEqualsTheFullDraw) {
  Communicator& world = test_world();
  ASSERT_GE(world.size(), 2) << "run by the mpi2/mpi4.Distributed entries";
  LocalCommunicator local;
  for (int64_t tp = 1; tp <= world.size(); tp *= 2) {
    Mesh mesh = tp == 1 ? make_mesh(local, 1, 1) : make_mesh(world, tp, world.size() / tp);
    for (std::vector<int64_t> shape : {std::vector<int64_t>{64, 36}, {10, 6}, {1002, 26}, {6, 7, 4}, {4, 3}, {1028, 1027}, {1024, 1030}}) {
      for (int split = 0; split < static_cast<int>(shape.size()); ++split) {
        if (shape[split] % tp != 0) continue;
        SCOPED_TRACE("tp " + std::to_string(tp) + " shape " + c10::str(at::IntArrayRef(shape)) + " split " + std::to_string(split));
        at::Tensor shard = init_shard("w", shape, split, 0.02, 9, mesh.tp());
        Param p{"w", shard, shape, split};
        at::Tensor full = init_shard("w", shape, -1, 0.02, 9, mesh.tp());
        EXPECT_TRUE(at::equal(gather_tp(p, shard, mesh), full));
      }
    }
  }
}

// Saved at tp 2 × dp 2 (tp 1 × dp 2 at 2 ranks) after 3 steps — fp32 with ZeRO-1, and bf16 with
// the distributed optimizer (masters and moments in flat dp shards) — and resumed at tp 1, at tp =
// world size × dp 1, and (bf16) at the saved layout: the same weights exactly, and the same next 3
// losses as the saving run (bit-identical at the saved layout; bf16 elsewhere to 2e-3, as its
// matmuls see other shapes).
TEST(Distributed, CheckpointReshardsToOtherLayoutsAndContinuesTheSameRun) {
  Communicator& world = test_world();
  ASSERT_GE(world.size(), 2) << "run by the mpi2/mpi4.Distributed entries";
  const int W = world.size();
  const TokenDataset ds = random_dataset();
  const int64_t save_tp = W == 4 ? 2 : 1, save_dp = W / save_tp;
  for (auto [dtype, optimizer] : {std::pair<at::ScalarType, const char*>{at::kFloat, "zero1"}, {at::kBFloat16, "distributed"}}) {
    SCOPED_TRACE(std::string(c10::toString(dtype)) + " " + optimizer);
    const std::string dir = test::shared_scratch_dir(std::string("reshard-") + optimizer, world);
    Mesh saved_mesh = make_mesh(world, save_tp, save_dp, optimizer);
    Llama saved_model(model_config(), saved_mesh, 5, {dtype});
    Trainer saver(saved_model, saved_mesh, train_config(), ds, 11);
    for (int s = 0; s < 3; ++s) saver.step();
    auto path = save_checkpoint(dir, saver, CheckpointMeta{"test", "", {}, "", 0}, 2);
    ASSERT_TRUE(path.is_ok()) << path.status().message();
    std::vector<at::Tensor> at_save;
    for (const Param& p : saved_model.params()) at_save.push_back(gather_tp(p, p.value.detach(), saved_mesh));
    std::vector<double> ref_losses;
    for (int s = 0; s < 3; ++s) ref_losses.push_back(saver.step().loss());

    LocalCommunicator local;
    Mesh one = make_mesh(local, 1, 1, optimizer);
    Mesh wide = make_mesh(world, W, 1, optimizer);  // tp 4 (tp 2) × dp 1
    Mesh same = make_mesh(world, save_tp, save_dp, optimizer);
    for (const Mesh* mesh : {&one, &wide, &same}) {
      if (mesh == &same && dtype == at::kFloat) continue;
      SCOPED_TRACE("resumed at tp " + std::to_string(mesh->tp_size()) + " dp " + std::to_string(mesh->dp_size()));
      Llama model(model_config(), *mesh, /*seed=*/77, {dtype});  // other initial values: all must come from the file
      Trainer t(model, *mesh, train_config(), ds, 11);
      Status s = load_checkpoint(*path, t, CheckpointMeta{});
      ASSERT_TRUE(s.is_ok()) << s.message();
      EXPECT_EQ(t.steps_taken(), 3);
      for (size_t i = 0; i < at_save.size(); ++i) {
        const Param& p = model.params()[i];
        EXPECT_TRUE(at::equal(gather_tp(p, p.value.detach(), *mesh), at_save[i])) << p.name;
      }
      const double tol = dtype == at::kFloat ? kAbs : mesh == &same ? 0.0 : 2e-3;
      for (int k = 0; k < 3; ++k) EXPECT_NEAR(t.step().loss(), ref_losses[static_cast<size_t>(k)], tol) << "step " << 3 + k;
    }
  }
}

// Evaluation split over dp: each dp rank generates and scores its block of 13 samples (13 does not
// divide by dp, so blocks differ in size and one may be empty), and every rank gets all results in
// order, equal to one process's: generated tokens and hit-based metrics exactly, log-prob based ones
// to 1e-5 (other batch shapes round differently).
TEST(Distributed, EvaluationSplitOverDpMatchesOneProcess) {
  Communicator& world = test_world();
  ASSERT_GE(world.size(), 2) << "run by the mpi2/mpi4.Distributed entries";
  at::Generator gen = at::detail::createCPUGenerator(7);
  std::vector<Tokens> samples;
  for (int64_t i = 0; i < 13; ++i) {
    at::Tensor x = at::randint(3, 256, {4 + 2 * i}, gen, at::kLong);
    samples.emplace_back(x.data_ptr<int64_t>(), x.data_ptr<int64_t>() + x.numel());
  }
  LocalCommunicator local;
  Mesh one = make_mesh(local, 1, 1);
  Llama ref(model_config(), one, 5);
  const std::vector<Tokens> ref_gen = greedy_generate(ref, samples, 6, /*stop_id=*/9, /*batch_size=*/4);
  const TeacherForced ref_tf = teacher_forced(ref, samples, 0.4, 4);
  const ExtractionOptions el{3, 2, 4, 4};
  const std::vector<double> ref_el = extraction_likelihood(ref, samples, el);
  const int W = world.size();
  for (auto [tp, dp] : {std::pair<int64_t, int64_t>{1, W}, {2, W / 2}}) {
    if (dp < 2) continue;
    SCOPED_TRACE("tp " + std::to_string(tp) + " dp " + std::to_string(dp));
    Mesh mesh = make_mesh(world, tp, dp);
    const DpBlock mine = dp_block(mesh, samples.size());
    const size_t per = (13 + dp - 1) / dp, r = static_cast<size_t>(mesh.dp_rank());
    EXPECT_EQ(mine.first, std::min<size_t>(13, r * per));
    EXPECT_EQ(mine.last, std::min<size_t>(13, (r + 1) * per));
    Llama model(model_config(), mesh, 5);
    EXPECT_EQ(greedy_generate(model, samples, 6, 9, 4), ref_gen);
    const TeacherForced tf = teacher_forced(model, samples, 0.4, 4);
    EXPECT_EQ(tf.ma, ref_tf.ma);
    EXPECT_EQ(tf.es, ref_tf.es);
    EXPECT_EQ(tf.tokens, ref_tf.tokens);
    EXPECT_NEAR(tf.nll_sum, ref_tf.nll_sum, kAbs * ref_tf.nll_sum);
    ASSERT_EQ(tf.mink.size(), ref_tf.mink.size());
    for (size_t i = 0; i < tf.mink.size(); ++i) EXPECT_NEAR(tf.mink[i], ref_tf.mink[i], kAbs * 10) << "sample " << i;
    EXPECT_EQ(extraction_likelihood(model, samples, el), ref_el);
  }
}

// Note [Vocab-parallel argmax]: at every tp the shards' argmax equals argmax over the whole
// vocabulary, ties included: equal maxima in two shards, within one shard, and a constant row.
TEST(Distributed, VocabParallelArgmaxEqualsTheGatheredArgmaxTiesIncluded) {
  Communicator& world = test_world();
  ASSERT_GE(world.size(), 2) << "run by the mpi2/mpi4.Distributed entries";
  const int64_t V = 16;
  at::Tensor logits = at::randn({5, V}, at::detail::createCPUGenerator(3));
  logits[0][3] = 9.0;
  logits[0][12] = 9.0;  // ties across shards (tp 2 and 4)
  logits[1][5] = 9.0;
  logits[1][6] = 9.0;   // a tie within one shard
  logits[2].fill_(1.5);  // every id ties: id 0
  logits[3][15] = 9.0;  // the last id
  const at::Tensor want = logits.argmax(-1);
  EXPECT_EQ(want[0].item<int64_t>(), 3);
  EXPECT_EQ(want[2].item<int64_t>(), 0);
  for (int64_t tp : {1, 2, 4}) {
    if (world.size() % tp != 0) continue;  // tp 4 at 4 ranks
    SCOPED_TRACE("tp " + std::to_string(tp));
    Mesh mesh = make_mesh(world, tp, world.size() / tp);
    const int64_t v = V / tp, start = mesh.tp_rank() * v;
    at::Tensor got = vocab_parallel_argmax(logits.narrow(1, start, v).unsqueeze(0), start, mesh.tp()).squeeze(0);
    EXPECT_TRUE(at::equal(got, want)) << got << want;
  }
}

// The Hugging Face fixture at tp 2 (and tp 2 × dp 2): each rank reads only its slices of the two
// shards, and the gathered logits match the expected ones as at tp 1.
TEST(Distributed, HfFixtureLoadsTensorParallelAndGivesTheExpectedLogits) {
  Communicator& world = test_world();
  ASSERT_GE(world.size(), 2) << "run by the mpi2/mpi4.Distributed entries";
  Mesh mesh = make_mesh(world, 2, world.size() / 2);
  auto model = test::load_hf_fixture(mesh);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->params()[0].value.size(0), 96 / 2);  // this rank's vocabulary half of the embedding
  test::expect_fixture_logits(*model);
}

// Unlearning at tp 2 × dp 2 against one process, through the CLI's phase runners: a target trained
// at tp 2 × dp 2 is unlearned with NPO (reference model) and ICU (refinement by generation) on all
// 4 ranks, and by rank 0 alone as a world of one from the same checkpoint (resharded to tp 1).
// `settings` apply to both runs; `loss_rel` is the tolerance of losses and counts, `metric_abs` of
// argmax-decided metrics on a 0–100 scale (a hundredth of it for fractions).
void expect_unlearning_at_tp2_dp2_matches_one_process(const std::string& name, const std::vector<std::string>& methods,
                                                      const std::vector<std::string>& settings, double loss_rel,
                                                      double metric_abs) {
  Communicator& world = test_world();
  ASSERT_EQ(world.size(), 4) << "run by the mpi4.Distributed entry";
  const std::string dir = test::shared_scratch_dir(name, world);
  std::string list;
  for (const auto& m : methods) list += (list.empty() ? "\"" : ", \"") + m + "\"";
  auto config = [&](const std::string& run_dir, std::vector<std::string> extra) {
    RunConfig cfg = test::tiny_config(run_dir);
    extra.insert(extra.end(), {"run.threads=1", "corpus.qa_in_training=true", "train.steps=80", "unlearn.max_cycles=2",
                               "unlearn.lr=3e-4", "unlearn.methods=[" + list + "]"});
    extra.insert(extra.end(), settings.begin(), settings.end());
    auto c = parse_config(to_toml(cfg), "distributed-test", extra);
    EXPECT_TRUE(c.is_ok()) << c.status().message();
    return *c;
  };
  const RunConfig dist = config(dir + "/dist", {"mesh.tp=2", "mesh.dp=2"});
  ASSERT_TRUE(run_train_phase(dist, {true, false, 0}).is_ok());
  if (world.rank() == 0) {
    std::filesystem::copy(dir + "/dist", dir + "/one", std::filesystem::copy_options::recursive);
    setenv("LETHE_COMM", "local", 1);
    Status s = run_unlearn_phase(config(dir + "/one", {}), {false, 0});
    setenv("LETHE_COMM", "mpi", 1);
    EXPECT_TRUE(s.is_ok()) << s.message();
  }
  world.barrier();
  Status s = run_unlearn_phase(dist, {false, 0});
  ASSERT_TRUE(s.is_ok()) << s.message();
  if (world.rank() != 0) return;
  // Every number of every cycle record (losses, metrics, token counts), except timings, memory and
  // the device count (4 against 1).
  std::function<void(const nlohmann::json&, const nlohmann::json&, const std::string&)> same =
      [&](const nlohmann::json& x, const nlohmann::json& y, const std::string& key) {
        if (y.is_object()) {
          for (const auto& [k, v] : y.items()) {
            if (test::is_timing_key(k)) continue;
            if (k == "devices") {
              EXPECT_EQ(x[k], 4) << key;
              EXPECT_EQ(v, 1) << key;
              continue;
            }
            ASSERT_TRUE(x.contains(k)) << key << "." << k;
            same(x[k], v, key + "." + k);
          }
        } else if (y.is_number() && !key.ends_with(".select_score")) {  // the score: below
          // Losses and counts to 1e-3 relative. Metrics decided by an argmax (MA, VerbMem, KnowMem,
          // EL, ES) flip where two tokens are within float rounding: 0.01 of a fraction, 1 point of
          // a 0–100 score.
          const double v = y.get<double>();
          const bool metric = key.find(".metrics.") != std::string::npos;
          const double tol = metric ? (std::abs(v) > 1 ? metric_abs : metric_abs / 100) : loss_rel * std::max(1.0, std::abs(v));
          EXPECT_NEAR(x.get<double>(), v, tol) << key;
        }
      };
  // The holdout selection score (docs/metrics.md, Checkpoint selection) is made of those metrics,
  // each forget-distance statistic divided by the starting model's distance: a flip moves it by the
  // flip over that distance (one EL flip of 0.0036 against a start at 0.028 moves it by 0.043). It
  // must differ by no more than its metrics' differences explain.
  const nlohmann::json start = test::read_json(dir + "/one/target/summary.json")["metrics"];
  const auto explained = [&](const nlohmann::json& x, const nlohmann::json& y) {
    const auto diff = [&](const char* k) { return std::abs(x[k].get<double>() - y[k].get<double>()); };
    double distance = 0, utility = diff("ma_retain") / start["ma_retain"].get<double>();
    int stats = 0;
    for (const auto& [f, h] : {std::pair{"ma_forget", "ma_holdout"}, {"el_forget", "el_holdout"}, {"mink_auc", ""}}) {
      const double d0 = std::abs(start[f].get<double>() - (*h ? start[h].get<double>() : 0.5));
      if (d0 < 1e-6) continue;
      distance += (diff(f) + (*h ? diff(h) : 0)) / d0, ++stats;
    }
    if (y.contains("knowmem_retain")) utility += diff("knowmem_retain") / start["knowmem_retain"].get<double>();
    return distance / std::max(1, stats) + utility + 1e-6;
  };
  for (const std::string& method : methods) {
    auto a = test::read_jsonl(dir + "/dist/unlearn-" + method + "/metrics.jsonl");
    auto b = test::read_jsonl(dir + "/one/unlearn-" + method + "/metrics.jsonl");
    ASSERT_EQ(a.size(), b.size()) << method;
    ASSERT_FALSE(a.empty()) << method;
    for (size_t i = 0; i < a.size(); ++i) {
      const std::string key = method + "[" + std::to_string(i) + "]";
      same(a[i], b[i], key);
      ASSERT_EQ(a[i].contains("select_score"), b[i].contains("select_score")) << key;
      if (b[i].contains("select_score")) {
        EXPECT_NEAR(a[i]["select_score"].get<double>(), b[i]["select_score"].get<double>(),
                    explained(a[i]["metrics"], b[i]["metrics"])) << key << ".select_score";
      }
    }
  }
}

// With unlearn.select = "holdout": the scores, the choice and a rollback to the chosen cycle's
// sharded checkpoint are those of one process too.
TEST(Distributed4, UnlearningAtTp2Dp2MatchesOneProcess) {  // 4 ranks: the mpi4.Distributed entry
  expect_unlearning_at_tp2_dp2_matches_one_process("unlearn", {"npo", "kl", "icu"}, {"unlearn.select=\"holdout\""}, 1e-3, 1.0);
}

// The later methods (PDU's dual variable updated from the first cycle, so λ is agreed over dp on
// every step; RMU's truncated forward and its three trained matrices; WHP's labels from translated text and
// whp_logits' combined model, evaluated at tp 2 × dp 2).
TEST(Distributed4, LaterMethodsAtTp2Dp2MatchOneProcess) {  // 4 ranks: the mpi4.Distributed entry
  expect_unlearning_at_tp2_dp2_matches_one_process("unlearn-later", {"wga", "satimp", "undial", "ceu", "pdu", "rmu", "idkdpo", "altpo", "task_vector", "whp", "whp_logits"},
                                                   {"unlearn.pdu_warmup_cycles=0"}, 1e-3, 1.0);
}

// NPO in bf16 with the distributed optimizer (fp32 masters and moments sharded over dp 2, the
// reference freed once its log-probs are cached). bf16 matmuls of other batch shapes round
// differently, so losses agree to 2e-2 relative and argmax metrics to 5 points.
TEST(Distributed4, Bf16NpoWithTheDistributedOptimizerAtTp2Dp2MatchesOneProcess) {  // 4 ranks: the mpi4.Distributed entry
  expect_unlearning_at_tp2_dp2_matches_one_process("unlearn-bf16", {"npo"}, {"train.dtype=\"bf16\"", "mesh.optimizer=\"distributed\""},
                                                   2e-2, 5.0);
}

// NPO with LoRA adapters (the frozen base is the reference; dropout off, since dp ranks draw their
// own masks): the same cycle records at tp 2 × dp 2 as at one process.
TEST(Distributed4, LoraNpoAtTp2Dp2MatchesOneProcess) {  // 4 ranks: the mpi4.Distributed entry
  expect_unlearning_at_tp2_dp2_matches_one_process("unlearn-lora", {"npo"}, {"unlearn.adapter=\"lora\"", "unlearn.lora_dropout=0.0",
                                                   "unlearn.npo_retain=\"kl\""}, 1e-3, 1.0);
}

// Buckets started from gradient hooks during the last micro-batch's backward give bit-identical
// parameters to reducing after backward, and they do start early: small buckets, 3 steps of 2
// micro-batches at dp = world size.
TEST(Distributed, OverlappedGradientReductionEqualsReductionAfterBackward) {
  Communicator& world = test_world();
  ASSERT_GE(world.size(), 2) << "run by the mpi2/mpi4.Distributed entries";
  const TokenDataset ds = random_dataset();
  std::vector<at::Tensor> params[2];
  for (bool overlap : {false, true}) {
    MeshConfig c;
    c.dp = world.size();
    c.bucket_mb = 0.01;
    c.overlap_grad_reduce = overlap;
    auto mesh = Mesh::create(world, c);
    ASSERT_TRUE(mesh.is_ok());
    Llama model(model_config(), *mesh, 5);
    Trainer t(model, *mesh, train_config(), ds, 11);
    for (int s = 0; s < 3; ++s) t.step();
    const AdamW& opt = t.optimizer();
    EXPECT_GT(opt.buckets(), 4u);
    EXPECT_EQ(opt.buckets_started_in_backward(), overlap ? opt.buckets() : 0u);
    for (const Param& p : model.params()) params[overlap].push_back(p.value.detach().clone());
  }
  for (size_t i = 0; i < params[0].size(); ++i) EXPECT_TRUE(at::equal(params[0][i], params[1][i])) << i;
}

// One real Llama-2-70B layer (d 8192, 64 heads over 8 KV heads, FFN 28672; the vocabulary cut to
// 1024) at tp 8, each rank holding its 1/8 of it, against the same layer at tp 1 on rank 0 alone:
// logits, loss and every parameter's gradient norm. Run by ctest as mpi8.SeventyBLayer.
TEST(Distributed8, SeventyBLayerAtTp8MatchesOneProcess) {  // 8 ranks: the mpi8.SeventyBLayer entry
  Communicator& world = test_world();
  ASSERT_EQ(world.size(), 8);
  ModelConfig cfg = *model_preset("llama-2-70b");
  cfg.num_hidden_layers = 1;
  cfg.vocab_size = 1024;
  const TokenDataset ds = random_dataset();
  const Batch b = make_batch(ds, {0});
  Mesh mesh = make_mesh(world, 8, 1);
  at::Tensor logits;
  double loss = 0;
  std::vector<double> norms;  // squared gradient norm of each whole parameter
  {  // the shards are freed before rank 0 builds the whole layer
    Llama model(cfg, mesh, 5);
    EXPECT_EQ(model.params()[1].value.sizes(), (std::vector<int64_t>{8192}));  // attention norm: replicated
    EXPECT_EQ(model.params()[2].value.sizes(), (std::vector<int64_t>{1024, 8192}));  // wq: 8 of 64 heads
    logits = model.full_logits(b.input_BT, b.positions_BT, b.segments_BT).detach();
    at::Tensor l = -model.token_logprobs(b.input_BT, b.positions_BT, b.segments_BT, b.target_BT).mean();
    torch::autograd::backward({l});
    loss = l.item<double>();
    for (const Param& p : model.params()) {
      at::Tensor sq = p.value.grad().pow(2).sum().to(at::kDouble);
      if (p.split_dim >= 0) mesh.tp().all_reduce(sq, ReduceOp::kSum);
      norms.push_back(sq.item<double>());
    }
  }
  world.barrier();
  if (world.rank() != 0) return;
  LocalCommunicator local;
  Mesh one = make_mesh(local, 1, 1);
  Llama ref(cfg, one, 5);
  EXPECT_LT(max_rel_diff(logits, ref.full_logits(b.input_BT, b.positions_BT, b.segments_BT)), kRel);
  at::Tensor ref_loss = -ref.token_logprobs(b.input_BT, b.positions_BT, b.segments_BT, b.target_BT).mean();
  EXPECT_NEAR(loss, ref_loss.item<double>(), kAbs * std::max(1.0, ref_loss.item<double>()));
  torch::autograd::backward({ref_loss});
  for (size_t i = 0; i < norms.size(); ++i) {
    const Param& p = ref.params()[i];
    EXPECT_NEAR(norms[i], p.value.grad().pow(2).sum().item<double>(), kRel * norms[i]) << p.name;
  }
}

}  // namespace
}  // namespace lethe

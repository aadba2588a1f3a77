// LoRA adapters on one process: B = 0 is the base exactly, the adapters-off view is the base,
// merging gives the adapted model's logits, A is drawn by name, only the adapters train, and
// adapter dropout draws one mask per forward that a recomputed block draws again.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "collectives/local_communicator.h"
#include "runtime/optimizer.h"
#include "runtime/strategy.h"
#include "tests/helpers.h"

namespace lethe {
namespace {

Mesh one_mesh(Communicator& c) {
  auto m = Mesh::create(c, MeshConfig{});
  EXPECT_TRUE(m.is_ok());
  return std::move(*m);
}

ModelOptions frozen() {
  ModelOptions o;
  o.trainable = false;
  return o;
}

LoraOptions all_targets(double dropout = 0.0) { return {4, 8.0, lora_target_names(), dropout}; }

Batch rows(int64_t n) {
  at::Generator gen = at::detail::createCPUGenerator(3);
  const int64_t T = 12;
  Batch b;
  b.input_BT = at::randint(0, 30, {n, T}, gen, at::kLong);
  b.target_BT = at::randint(0, 30, {n, T}, gen, at::kLong);
  b.positions_BT = at::arange(T, at::kLong).expand({n, T}).contiguous();
  b.segments_BT = at::zeros({n, T}, at::kLong);
  b.loss_mask_BT = at::ones({n, T}, at::kFloat);
  return b;
}

at::Tensor logits_of(const Llama& m, const Batch& b) { return m.full_logits(b.input_BT, b.positions_BT, b.segments_BT); }

void randomise_b(Llama& m) {
  at::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(11);
  for (const Param& p : m.adapters()) {
    if (p.name.size() > 7 && p.name.substr(p.name.size() - 7) == ".lora_b") p.value.normal_(0.0, 0.2, gen);
  }
}

TEST(Lora, ZeroBEqualsTheBaseExactly) {
  LocalCommunicator c;
  Mesh mesh = one_mesh(c);
  Llama base(test::small_model(), mesh, 7, frozen()), adapted(test::small_model(), mesh, 7, frozen());
  adapted.add_lora(all_targets(0.1));
  const Batch b = rows(3);
  {
    at::NoGradGuard eval;
    EXPECT_TRUE(at::equal(logits_of(adapted, b), logits_of(base, b)));
  }
  adapted.set_dropout_step(0);  // gradients recorded: dropout on, and B = 0 still adds exactly nothing
  EXPECT_TRUE(at::equal(logits_of(adapted, b), logits_of(base, b)));
}

TEST(Lora, AdaptersOffEqualsASeparatelyLoadedReferenceAndMergingGivesTheAdaptedLogits) {
  LocalCommunicator c;
  Mesh mesh = one_mesh(c);
  Llama base(test::small_model(), mesh, 7, frozen()), adapted(test::small_model(), mesh, 7, frozen());
  adapted.add_lora(all_targets());
  randomise_b(adapted);
  const Batch b = rows(3);
  const at::Tensor adapted_logits = logits_of(adapted, b);
  EXPECT_GT((adapted_logits - logits_of(base, b)).abs().max().item<double>(), 1e-3);  // the adapters do something
  std::unique_ptr<Llama> off = adapted.base_view();
  EXPECT_TRUE(off->adapters().empty());
  EXPECT_TRUE(at::equal(logits_of(*off, b), logits_of(base, b)));
  EXPECT_EQ(off->params()[1].value.data_ptr(), adapted.params()[1].value.data_ptr());  // shared, not copied
  adapted.merge_adapters();
  EXPECT_TRUE(adapted.adapters().empty());
  EXPECT_LT((logits_of(adapted, b) - adapted_logits).abs().max().item<double>(), 1e-5);
}

TEST(Lora, AdaptersAreNamedShapedAndDrawnByName) {
  LocalCommunicator c;
  Mesh mesh = one_mesh(c);
  Llama m(test::small_model(), mesh, 7, frozen());
  m.add_lora({4, 8.0, {"v", "down"}, 0.0});
  const ModelConfig cfg = test::small_model();
  ASSERT_EQ(m.adapters().size(), 4u * static_cast<size_t>(cfg.num_hidden_layers));  // v and down: A and B each
  EXPECT_EQ(m.adapters()[0].name, "layers.0.attn.wv.lora_a");
  EXPECT_EQ(m.adapters()[0].global_shape, (std::vector<int64_t>{4, cfg.hidden_size}));
  EXPECT_EQ(m.adapters()[1].global_shape, (std::vector<int64_t>{cfg.num_key_value_heads * cfg.head_dim(), 4}));
  EXPECT_EQ(m.adapters()[2].name, "layers.0.mlp.w_down.lora_a");
  EXPECT_EQ(m.adapters()[2].split_dim, 1);  // row-parallel base: A split like the input
  EXPECT_EQ(m.adapters()[3].split_dim, -1);
  EXPECT_EQ(m.adapters()[1].split_dim, 0);  // column-parallel base: B split like the output
  EXPECT_TRUE(at::equal(m.adapters()[1].value, at::zeros_like(m.adapters()[1].value)));
  // A: N(0, 1/(3 · in)), the same draw for the same name and seed.
  Llama again(test::small_model(), mesh, 7, frozen());
  again.add_lora({4, 8.0, {"down"}, 0.0});
  EXPECT_TRUE(at::equal(again.adapters()[0].value, m.adapters()[2].value));
  const double in = static_cast<double>(cfg.intermediate_size);
  EXPECT_NEAR(m.adapters()[2].value.std().item<double>(), 1.0 / std::sqrt(3.0 * in), 0.5 / std::sqrt(3.0 * in));
  EXPECT_EQ(m.trained().size(), m.adapters().size());
}

// Only the adapters take gradients and optimizer state; the base is untouched by a step.
TEST(Lora, OnlyTheAdaptersTrain) {
  LocalCommunicator c;
  Mesh mesh = one_mesh(c);
  Llama m(test::small_model(), mesh, 7, frozen());
  m.add_lora(all_targets(0.1));
  std::vector<at::Tensor> before;
  for (const Param& p : m.params()) before.push_back(p.value.clone());
  AdamW opt(m, AdamHyper{}, mesh);
  const Batch b = rows(4);
  for (int s = 0; s < 2; ++s) {
    m.set_dropout_step(s);
    torch::autograd::backward({-batch_logprobs(m, b).mean()});
    opt.step(1e-2, 1.0);
  }
  for (size_t i = 0; i < m.params().size(); ++i) {
    EXPECT_TRUE(at::equal(m.params()[i].value, before[i])) << m.params()[i].name;
    EXPECT_FALSE(m.params()[i].value.grad().defined()) << m.params()[i].name;
  }
  EXPECT_GT(m.adapters()[1].value.abs().max().item<double>(), 0.0);  // B moved
  EXPECT_EQ(opt.state_of(0).size(), 2u);                             // moments of the first adapter
}

// Dropout: a new mask per forward within a step, the same masks for the same step (what a resumed
// run and a recomputed block rely on), none without gradients; activation checkpointing gives the
// same gradients.
TEST(Lora, DropoutMasksAreDrawnPerForwardAndRedrawnByRecomputation) {
  LocalCommunicator c;
  Mesh mesh = one_mesh(c);
  Llama m(test::small_model(), mesh, 7, frozen());
  m.add_lora(all_targets(0.3));
  randomise_b(m);
  const Batch b = rows(2);
  at::Tensor eval1, eval2;
  {
    at::NoGradGuard eval;  // no gradients: no dropout
    eval1 = logits_of(m, b);
    eval2 = logits_of(m, b);
  }
  EXPECT_TRUE(at::equal(eval1, eval2));
  auto grads_at = [&](int64_t step, bool checkpointing) {
    m.set_activation_checkpointing(checkpointing);
    m.set_dropout_step(step);
    at::Tensor first = logits_of(m, b), second = logits_of(m, b);
    EXPECT_FALSE(at::equal(first, second));  // two forwards, two masks
    EXPECT_FALSE(at::equal(first, eval1));
    torch::autograd::backward({(first.logsumexp(-1).mean() + second.logsumexp(-1).mean())});
    std::vector<at::Tensor> g;
    for (Param& p : m.trained()) {
      g.push_back(p.value.grad().clone());
      p.value.mutable_grad() = at::Tensor();
    }
    return g;
  };
  auto a = grads_at(5, false), again = grads_at(5, false), recomputed = grads_at(5, true), other = grads_at(6, false);
  bool differs = false;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::equal(a[i], again[i])) << i;
    EXPECT_LT((a[i] - recomputed[i]).abs().max().item<double>(), 1e-6) << i;
    differs = differs || !at::equal(a[i], other[i]);
  }
  EXPECT_TRUE(differs);  // another step, other masks
}

}  // namespace
}  // namespace lethe

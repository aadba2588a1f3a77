// Strategy losses against values computed directly from full-vocabulary logits, and the
// gradients of NPO, SimNPO and KL against central finite differences.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include "collectives/local_communicator.h"
#include "strategies/strategies.h"
#include "tests/helpers.h"

namespace lethe {
namespace {

// Two samples of 6 and 4 tokens, one per row (T = 6).
TokenDataset tiny_data(const std::string& name, int64_t seed) {
  TokenDataset ds;
  ds.name = name;
  ds.seq_len = 6;
  ds.tokens = at::full({2, 7}, 3, at::kLong);
  ds.segments = at::full({2, 7}, -1, at::kLong);
  ds.positions = at::zeros({2, 7}, at::kLong);
  const int64_t lens[2] = {7, 5};
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t t = 0; t < lens[r]; ++t) {
      ds.tokens[r][t] = t == 0 ? 1 : 4 + (seed * 31 + r * 17 + t * 7) % 26;
      ds.segments[r][t] = r;
      ds.positions[r][t] = t;
    }
  }
  ds.sample_ids = {name + "0", name + "1"};
  return ds;
}

struct Rig {
  LocalCommunicator world;
  Mesh mesh = Mesh::create(world, MeshConfig{}).value();
  Llama model{test::small_model(), mesh, 1};
  Llama reference{test::small_model(), mesh, 2};  // a different model, so log-ratios and KL are not zero
  TokenDataset forget = tiny_data("f", 1), retain = tiny_data("r", 2);
  Cost cost;
  UnlearnConfig cfg;
  EvalConfig eval;
  UnlearnBatch batch{make_batch(forget, {0, 1}), make_batch(retain, {0, 1})};

  std::unique_ptr<Strategy> strategy(const std::string& name) {
    auto s = make_strategy(name, cfg).value();
    StrategyContext ctx{{&forget, &retain, &retain}, &reference, &cost, &cfg, &eval, /*eos_id=*/2};
    EXPECT_TRUE(s->prepare({&forget}, reference, cost).is_ok());
    EXPECT_TRUE(s->begin(ctx).is_ok());
    return s;
  }
};

// Per-token target log-probs [B, T] and the mask, straight from full logits.
struct Direct {
  at::Tensor lp, mask, logp_all;
};
Direct direct(const Llama& m, const Batch& b) {
  at::Tensor logits = m.full_logits(b.input_BT, b.positions_BT, b.segments_BT);
  at::Tensor all = at::log_softmax(logits, -1);
  return {all.gather(-1, b.target_BT.unsqueeze(-1)).squeeze(-1) * b.loss_mask_BT, b.loss_mask_BT, all};
}
double nll(const Direct& d) { return (-d.lp.sum() / d.mask.sum()).item<double>(); }

TEST(Strategy, LossesMatchDirectComputation) {
  Rig r;
  at::NoGradGuard g;
  const Direct f = direct(r.model, r.batch.forget), re = direct(r.model, r.batch.retain);
  const Direct f_ref = direct(r.reference, r.batch.forget), re_ref = direct(r.reference, r.batch.retain);
  auto total = [&](const std::string& name) { return r.strategy(name)->loss(r.model, r.batch).total().item<double>(); };

  EXPECT_NEAR(total("ga"), -nll(f), 1e-5);
  EXPECT_NEAR(total("graddiff"), -nll(f) + nll(re), 1e-5);
  // KL(ref ‖ θ) per token, mean over the retain tokens.
  at::Tensor kl_tok = (re_ref.logp_all.exp() * (re_ref.logp_all - re.logp_all)).sum(-1);
  const double kl = ((kl_tok * re.mask).sum() / re.mask.sum()).item<double>();
  EXPECT_GT(kl, 1e-3);
  EXPECT_NEAR(total("kl"), -nll(f) + kl, 1e-5);
  // NPO, β = 0.1, with the NLL-retain term (default).
  const double beta = r.cfg.npo_beta;
  at::Tensor ratio = f.lp.sum(1) - f_ref.lp.sum(1);
  const double npo = (-2.0 / beta) * at::log_sigmoid(-beta * ratio).mean().item<double>();
  EXPECT_NEAR(total("npo"), npo + nll(re), 1e-5);
  r.cfg.npo_retain = "kl";
  EXPECT_NEAR(total("npo"), npo + kl, 1e-5);
  r.cfg.npo_retain = "none";
  EXPECT_NEAR(total("npo"), npo, 1e-5);
  // SimNPO, β = 4.5, γ = 0: length-normalised; |y| = 6 and 4 targets.
  const double sb = r.cfg.simnpo_beta;
  at::Tensor len = at::tensor({6.0, 4.0}, at::kFloat);
  const double simnpo = (-2.0 / sb) * at::log_sigmoid(-(sb / len) * f.lp.sum(1)).mean().item<double>();
  EXPECT_NEAR(total("simnpo"), simnpo + nll(re), 1e-5);
  r.cfg.simnpo_gamma = 2.0;
  const double simnpo_g = (-2.0 / sb) * at::log_sigmoid(-(sb / len) * f.lp.sum(1) - 2.0).mean().item<double>();
  EXPECT_NEAR(total("simnpo"), simnpo_g + nll(re), 1e-5);
}

// Rows `rows` of the datasets named, stacked into one dataset (row r of the result is rows[r]).
TokenDataset stack_rows(const std::string& name, const std::vector<std::pair<const TokenDataset*, int64_t>>& rows) {
  TokenDataset ds;
  ds.name = name;
  ds.seq_len = rows.front().first->seq_len;
  std::vector<at::Tensor> tok, seg, pos;
  for (auto [d, r] : rows) {
    tok.push_back(d->tokens[r]);
    seg.push_back(d->segments[r].clone().masked_fill_(d->segments[r].ge(0), static_cast<int64_t>(tok.size()) - 1));
    pos.push_back(d->positions[r]);
    ds.sample_ids.push_back(name + std::to_string(tok.size() - 1));
  }
  ds.tokens = at::stack(tok);
  ds.segments = at::stack(seg);
  ds.positions = at::stack(pos);
  return ds;
}

TEST(Strategy, IcuLossPairsEachForgetSampleWithItsNearestRetainSample) {
  Rig r;
  // Retain rows: two others, and the forget rows in swapped places, so the nearest neighbours are
  // known: forget 0 → retain 3, forget 1 → retain 1.
  const TokenDataset other_a = tiny_data("a", 5), other_b = tiny_data("b", 9);
  r.retain = stack_rows("r", {{&other_a, 0}, {&r.forget, 1}, {&other_b, 1}, {&r.forget, 0}});
  auto icu = r.strategy("icu");
  // Brute force: cosine similarity of the reference's mean-pooled final hidden states, every pair.
  auto embed = [&](const TokenDataset& d, int64_t row) {
    at::NoGradGuard g;
    Batch b = make_batch(d, {row});
    at::Tensor h = r.reference.hidden(b.input_BT, b.positions_BT, b.segments_BT)[0];
    at::Tensor mask = b.segments_BT[0].ge(0).to(at::kFloat).unsqueeze(-1);
    at::Tensor e = (h * mask).sum(0) / mask.sum();
    return e / e.norm();
  };
  std::vector<int64_t> nearest;
  for (int64_t f = 0; f < 2; ++f) {
    int64_t best = -1;
    double best_sim = -2;
    for (int64_t k = 0; k < r.retain.rows(); ++k) {
      const double sim = at::dot(embed(r.forget, f), embed(r.retain, k)).item<double>();
      if (sim > best_sim + 1e-4) best = k, best_sim = sim;
    }
    nearest.push_back(best);
  }
  ASSERT_EQ(nearest, (std::vector<int64_t>{3, 1}));

  r.cfg.icu_alpha = 0.7;
  r.cfg.icu_beta = 1.3;
  icu = r.strategy("icu");
  LossTerms t = icu->loss(r.model, r.batch);
  ASSERT_EQ(t.terms.size(), 3u);
  EXPECT_EQ(t.terms[0].first, "forget_neg_nll");
  EXPECT_EQ(t.terms[1].first, "pair_nll");
  EXPECT_EQ(t.terms[2].first, "pair_kl");
  at::NoGradGuard g;
  EXPECT_NEAR(t.terms[0].second.item<double>(), -nll(direct(r.model, r.batch.forget)), 1e-5);
  // The pair terms are α · NLL and β · KL(ref ‖ θ) over exactly the brute-force neighbours' rows.
  const Batch pairs = make_batch(r.retain, nearest);
  const Direct p = direct(r.model, pairs), p_ref = direct(r.reference, pairs);
  at::Tensor kl_tok = (p_ref.logp_all.exp() * (p_ref.logp_all - p.logp_all)).sum(-1);
  const double kl = ((kl_tok * p.mask).sum() / p.mask.sum()).item<double>();
  EXPECT_NEAR(t.terms[1].second.item<double>(), 0.7 * nll(p), 1e-5);
  EXPECT_NEAR(t.terms[2].second.item<double>(), 1.3 * kl, 1e-5);
  // Any other pairing gives other values (so the check above can fail).
  const Direct wrong = direct(r.model, make_batch(r.retain, {0, 2}));
  EXPECT_GT(std::abs(0.7 * nll(wrong) - t.terms[1].second.item<double>()), 1e-3);
  EXPECT_EQ(icu->forget_rows(), (std::vector<int64_t>{0, 1}));
  // Its state round-trips and rejects a wrong size.
  StateTensors s = icu->state();
  EXPECT_TRUE(icu->set_state(s).is_ok());
  EXPECT_FALSE(icu->set_state({{"remaining", at::ones({5}, at::kLong)}}).is_ok());
}

// d loss / d w for the element of the final norm with the largest gradient, by autograd and by
// central differences.
void expect_gradient_matches(Rig& r, const std::string& name) {
  auto s = r.strategy(name);
  Param* norm = nullptr;
  for (Param& p : r.model.params()) if (p.name == "norm") norm = &p;
  ASSERT_NE(norm, nullptr);
  at::Tensor loss = s->loss(r.model, r.batch).total();
  torch::autograd::backward({loss});
  at::Tensor grad = norm->value.grad().clone();
  norm->value.mutable_grad() = at::Tensor();
  const int64_t i = grad.abs().argmax().item<int64_t>();
  ASSERT_GT(std::abs(grad[i].item<double>()), 1e-3) << name;
  const double eps = 1e-2;
  auto loss_at = [&](double delta) {
    at::NoGradGuard g;
    norm->value[i] += delta;
    const double v = s->loss(r.model, r.batch).total().item<double>();
    norm->value[i] -= delta;
    return v;
  };
  const double numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps);
  EXPECT_NEAR(grad[i].item<double>(), numeric, 0.02 * std::abs(numeric) + 1e-4) << name;
}

TEST(Strategy, NpoSimNpoAndKlGradientsMatchFiniteDifferences) {
  for (const char* name : {"npo", "simnpo", "kl"}) {
    Rig r;
    r.cfg.npo_retain = "kl";
    expect_gradient_matches(r, name);
  }
}

TEST(Strategy, UnknownNameListsTheValidOnes) {
  auto s = make_strategy("forgetful", UnlearnConfig{});
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find("\"forgetful\" is not an unlearning method"), std::string::npos);
  EXPECT_NE(s.status().message().find("ga, graddiff, kl, npo, simnpo, icu"), std::string::npos);
}

}  // namespace
}  // namespace lethe

// Strategy losses against values computed directly from full-vocabulary logits, their gradients
// against central finite differences, and PDU's dual variable.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <functional>

#include "collectives/local_communicator.h"
#include "runtime/fused.h"
#include "runtime/layers.h"
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
  Llama reinforced{test::small_model(), mesh, 3};  // WHP's
  TokenDataset forget = tiny_data("f", 1), retain = tiny_data("r", 2);
  Cost cost;
  UnlearnConfig cfg;
  EvalConfig eval;
  UnlearnBatch batch{make_batch(forget, {0, 1}), make_batch(retain, {0, 1})};

  std::unique_ptr<Strategy> strategy(const std::string& name) {
    auto s = make_strategy(name, cfg).value();
    StrategyContext ctx{{&forget, &retain, &retain}, &reference, &cost, &model, &cfg, &eval, /*eos_id=*/2};
    EXPECT_TRUE(s->prepare({{&forget}, &reference, &reinforced, nullptr, nullptr, &cost}).is_ok());
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

// d loss / d w for the element of `param` (default the final norm) with the largest gradient, by autograd and by
// central differences of `direct` (default: the strategy's own loss). Methods whose loss holds a
// detached factor (token weights, a target distribution from θ itself) pass the definition with
// that factor fixed at the unperturbed model's value: that is the gradient the method follows.
void expect_gradient_matches(Rig& r, const std::string& name, std::function<double(Strategy&)> direct = nullptr,
                             const std::string& param = "norm") {
  auto s = r.strategy(name);
  if (!direct) direct = [&](Strategy& st) { return st.loss(r.model, r.batch).total().item<double>(); };
  Param* norm = nullptr;
  for (Param& p : r.model.params()) if (p.name == param) norm = &p;
  ASSERT_NE(norm, nullptr);
  at::Tensor loss = s->loss(r.model, r.batch).total();
  torch::autograd::backward({loss});
  at::Tensor grad = norm->value.grad().clone().view(-1);
  norm->value.mutable_grad() = at::Tensor();
  const int64_t i = grad.abs().argmax().item<int64_t>();
  ASSERT_GT(std::abs(grad[i].item<double>()), 1e-3) << name;
  const double eps = 1e-2;
  auto loss_at = [&](double delta) {
    at::NoGradGuard g;
    norm->value.view(-1)[i] += delta;
    const double v = direct(*s);
    norm->value.view(-1)[i] -= delta;
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

// The forget loss of WGA, SatImp, UNDIAL, CE-U and PDU from full-vocabulary logits. `frozen`
// (the unperturbed model's Direct) supplies the detached token weights and CE-U's target.
double direct_forget(Rig& r, const std::string& name, const Direct& frozen) {
  const Batch& b = r.batch.forget;
  const Direct f = direct(r.model, b);
  const at::Tensor mask = f.mask;
  auto mean = [](const at::Tensor& x, const at::Tensor& m) { return ((x * m).sum() / m.sum()).item<double>(); };
  const at::Tensor p = frozen.lp.exp();
  if (name == "wga") return mean(p.pow(r.cfg.wga_beta) * f.lp, mask);
  if (name == "satimp") return mean(p.pow(r.cfg.satimp_beta1) * (1 - p).pow(r.cfg.satimp_beta2) * f.lp, mask);
  const at::Tensor onehot = at::one_hot(b.target_BT, f.logp_all.size(-1)).to(at::kFloat);
  if (name == "undial") {
    at::Tensor v_ref = r.reference.full_logits(b.input_BT, b.positions_BT, b.segments_BT);
    at::Tensor q = at::softmax(v_ref - r.cfg.undial_beta * onehot, -1);
    return mean(-(q * f.logp_all).sum(-1), mask);
  }
  if (name == "ceu") {
    // θ's own distribution (frozen) with the target removed; every row's first target skipped.
    at::Tensor q = at::softmax(frozen.logp_all.masked_fill(onehot.to(at::kBool), -INFINITY), -1);
    at::Tensor later = mask.clone();
    later.select(1, 0).zero_();
    return mean(-(q * f.logp_all).sum(-1), later);
  }
  // pdu: (max logit − mean logit)² per token.
  at::Tensor z = r.model.full_logits(b.input_BT, b.positions_BT, b.segments_BT);
  return mean((std::get<0>(z.max(-1)) - z.mean(-1)).pow(2), mask);
}

// Holdout matching (strategies/experimental/): w_f · mean_i (ℓ_i − L)² + NLL(retain), ℓ_i a forget
// sample's mean token NLL and L the holdout's (the rig's holdout is its retain set, all rows).
TEST(Strategy, HoldoutMatchPullsEachForgetSampleTowardTheHoldoutLevel) {
  Rig r;
  r.cfg.forget_weight = 0.7;
  at::NoGradGuard g;
  const Direct f = direct(r.model, r.batch.forget), re = direct(r.model, r.batch.retain);
  const double level = nll(direct(r.model, make_batch(r.retain, all_rows(r.retain.rows()))));
  const at::Tensor per_sample = -f.lp.sum(1) / f.mask.sum(1);
  EXPECT_GT((per_sample - level).abs().min().item<double>(), 1e-3);  // not already at the level
  const double expected = 0.7 * (per_sample - level).pow(2).mean().item<double>() + nll(re);
  auto s = r.strategy("holdout_match");
  EXPECT_NEAR(s->loss(r.model, r.batch).total().item<double>(), expected, 1e-5);
  // The level is state: a resumed request keeps the one it began with.
  const StateTensors saved = s->state();
  ASSERT_EQ(saved.count("holdout_match_level"), 1u);
  EXPECT_NEAR(saved.at("holdout_match_level").item<double>(), level, 1e-6);
  StateTensors other = {{"holdout_match_level", at::full({1}, level + 1.0, at::kDouble)}};
  ASSERT_TRUE(s->set_state(other).is_ok());
  EXPECT_NEAR(s->loss(r.model, r.batch).total().item<double>(),
              0.7 * (per_sample - (level + 1.0)).pow(2).mean().item<double>() + nll(re), 1e-5);
  // Without holdout data the method says so.
  auto bare = make_strategy("holdout_match", r.cfg).value();
  StrategyContext ctx{{&r.forget, &r.retain, nullptr}, nullptr, &r.cost, &r.model, &r.cfg, &r.eval, 2};
  const Status st = bare->begin(ctx);
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("no holdout samples"), std::string::npos) << st.message();
}

TEST(Strategy, TokenLevelLossesMatchDirectComputationAndTheirGradients) {
  for (const std::string name : {"wga", "satimp", "undial", "ceu", "pdu"}) {
    SCOPED_TRACE(name);
    Rig r;
    r.cfg.forget_weight = 0.7;
    at::NoGradGuard g;
    const Direct frozen = direct(r.model, r.batch.forget), re = direct(r.model, r.batch.retain);
    double expected = 0.7 * direct_forget(r, name, frozen);
    if (name == "satimp") expected += nll(re);
    // PDU: λ starts at w_r = 1 and ε = 1.1 × the starting retain NLL (here: the same two rows).
    if (name == "pdu") expected += 1.0 * (nll(re) - 1.1 * nll(re));
    EXPECT_NEAR(r.strategy(name)->loss(r.model, r.batch).total().item<double>(), expected, 1e-5);
  }
  for (const std::string name : {"wga", "satimp", "undial", "ceu", "pdu", "holdout_match"}) {
    Rig r;
    Direct frozen;
    {
      at::NoGradGuard g;
      frozen = direct(r.model, r.batch.forget);
    }
    auto direct_total = [&](Strategy& s) {
      if (name == "undial" || name == "pdu" || name == "holdout_match") return s.loss(r.model, r.batch).total().item<double>();
      const double retain = name == "satimp" ? nll(direct(r.model, r.batch.retain)) : 0.0;
      return direct_forget(r, name, frozen) + retain;
    };
    expect_gradient_matches(r, name, direct_total);
  }
}

// RMU: the residual stream after block ℓ (blocks are drawn by name, so a 2-block model's first
// block is the 1-block model's, whose final norm of it is hidden()), the loss from it with u drawn as
// rand(D) / ‖·‖ from rmu_seed, its gradient on the steered block's down-projection, which
// parameters train, and the default layer scaled from the published 7 of 32.
TEST(Strategy, RmuSteersTheResidualAfterItsLayerAndTrainsOnlyThoseDownProjections) {
  Rig r;
  r.cfg.rmu_layer = 0;
  r.cfg.forget_weight = 0.7;
  r.cfg.retain_weight = 30;
  ModelConfig two = test::small_model();
  two.num_hidden_layers = 2;
  Llama deeper(two, r.mesh, 1);
  {
    at::NoGradGuard g;
    const Batch& f = r.batch.forget;
    at::Tensor w;
    for (const Param& p : r.model.params()) if (p.name == "norm") w = p.value;
    EXPECT_TRUE(at::allclose(rms_norm(deeper.residual_after(f, 0), w, two.rms_norm_eps), r.model.hidden(f), 1e-5, 1e-5));
    at::Generator gen = at::detail::createCPUGenerator(static_cast<uint64_t>(r.cfg.rmu_seed));
    at::Tensor u = at::rand({two.hidden_size}, gen, at::kFloat);
    u = r.cfg.rmu_steering * u / u.norm();
    auto mean_tokens = [](const at::Tensor& x_BT, const Batch& b) {
      return ((x_BT * b.loss_mask_BT).sum() / b.loss_mask_BT.sum()).item<double>();
    };
    const double forget = mean_tokens((r.model.residual_after(f, 0) - u).pow(2).mean(-1), f);
    const Batch& re = r.batch.retain;
    const double retain = mean_tokens((r.model.residual_after(re, 0) - r.reference.residual_after(re, 0)).pow(2).mean(-1), re);
    EXPECT_GT(retain, 1e-4);
    EXPECT_NEAR(r.strategy("rmu")->loss(r.model, r.batch).total().item<double>(), 0.7 * forget + 30 * retain, 1e-5);
  }
  auto rmu = r.strategy("rmu");
  for (const Param& p : r.model.params()) EXPECT_EQ(rmu->trains(p), p.name == "layers.0.mlp.w_down") << p.name;
  EXPECT_TRUE(rmu->trains(Param{"layers.0.mlp.w_down.lora_b", {}, {}, 1, true}));
  EXPECT_FALSE(rmu->trains(Param{"layers.0.mlp.w_downx", {}, {}, 1, true}));
  UnlearnConfig scaled;
  ModelConfig depth = test::small_model();
  depth.num_hidden_layers = 32;
  EXPECT_EQ(rmu_layer(scaled, depth), 7);  // the published layer at the published depth
  depth.num_hidden_layers = 4;
  EXPECT_EQ(rmu_layer(scaled, depth), 1);
  expect_gradient_matches(r, "rmu", nullptr, "layers.0.mlp.w_down");
}

// PDU's dual step λ ← max(0, λ + η (NLL(r) − ε)) once warm-up is over, and its state round-trips
// bit-exactly: a strategy restored from it continues with the same λ.
TEST(Strategy, PduDualVariableStepsClampsAndResumesBitExactly) {
  Rig r;
  r.cfg.pdu_warmup_cycles = 1;
  r.cfg.pdu_dual_lr = 0.5;
  auto pdu = r.strategy("pdu");
  at::NoGradGuard g;
  const double n = nll(direct(r.model, r.batch.retain));
  auto lambda = [](const Strategy& s) { return s.state().at("pdu_lambda").item<double>(); };
  pdu->loss(r.model, r.batch);
  EXPECT_EQ(lambda(*pdu), 1.0);  // still warming up
  pdu->end_cycle({});
  pdu->loss(r.model, r.batch);
  EXPECT_NEAR(lambda(*pdu), 1.0 + 0.5 * (n - 1.1 * n), 1e-6);
  const StateTensors saved = pdu->state();
  const double total = pdu->loss(r.model, r.batch).total().item<double>();
  auto resumed = r.strategy("pdu");
  ASSERT_TRUE(resumed->set_state(saved).is_ok());
  EXPECT_EQ(resumed->loss(r.model, r.batch).total().item<double>(), total);
  EXPECT_EQ(lambda(*resumed), lambda(*pdu));
  for (int i = 0; i < 8; ++i) pdu->loss(r.model, r.batch);
  EXPECT_EQ(lambda(*pdu), 0.0);  // the retain NLL is under its bound: λ falls to 0 and stays
  EXPECT_FALSE(resumed->set_state({{"pdu_lambda", at::ones({1}, at::kDouble)}}).is_ok());
}

// DPO on forget QA (AltPO): the reference's alternate answers (first token: the most likely one
// that is not the true answer's, from full logits; then greedy), the loss from sequence log-probs
// over the answers only, and the alternates restored from the state rather than generated anew.
TEST(Strategy, AltPoPrefersTheReferencesAlternateAnswerOverTheTrueOne) {
  Rig r;
  // Prompts of 3 and 2 tokens, answers of 3 and 2 tokens + EOS (2); padded with 3.
  const TokenDataset qa = pack_rows("fqa", {{1, 5, 6, 7, 8, 9, 2}, {1, 10, 11, 12, 2}}, {2, 1}, 6, 3);
  const Batch b = make_batch(qa, {0, 1});
  ASSERT_EQ(b.loss_tokens, 4 + 3);  // answer tokens and EOS only
  EXPECT_EQ(b.loss_mask_BT[0][1].item<float>(), 0.0f);
  EXPECT_EQ(b.loss_mask_BT[0][2].item<float>(), 1.0f);
  r.eval.knowmem_new_tokens = 3;
  r.cfg.dpo_beta = 0.5;
  auto begin = [&](Strategy& s) {
    StrategyContext ctx{{&qa, &r.retain, nullptr}, &r.reference, &r.cost, &r.model, &r.cfg, &r.eval, /*eos_id=*/2};
    ASSERT_TRUE(s.begin(ctx).is_ok());
  };
  auto s = make_strategy("altpo", r.cfg).value();
  EXPECT_TRUE(s->forget_qa());
  begin(*s);
  const UnlearnBatch batch{b, r.batch.retain};
  const double loss = s->loss(r.model, batch).total().item<double>();
  const at::Tensor alt = s->state().at("altpo_alternates/fqa");
  ASSERT_EQ(alt.size(0), 2);
  at::NoGradGuard g;
  std::vector<std::vector<int64_t>> preferred;
  for (int64_t row = 0; row < 2; ++row) {
    const std::vector<int64_t> prompt = row == 0 ? std::vector<int64_t>{1, 5, 6} : std::vector<int64_t>{1, 10};
    at::Tensor p = at::tensor(prompt, at::kLong).unsqueeze(0);
    at::Tensor logits = r.reference.full_logits(p, at::arange(p.size(1)).unsqueeze(0), at::zeros_like(p))[0][-1].clone();
    logits[row == 0 ? 7 : 11] = -INFINITY;  // the true answer's first token
    EXPECT_EQ(alt[row][0].item<int64_t>(), logits.argmax().item<int64_t>()) << row;
    std::vector<int64_t> x = prompt;
    for (int64_t i = 0; i < alt.size(1) && alt[row][i].item<int64_t>() >= 0; ++i) x.push_back(alt[row][i].item<int64_t>());
    EXPECT_LE(x.size(), prompt.size() + 3);  // knowmem_new_tokens
    x.push_back(2);
    preferred.push_back(x);
  }
  const TokenDataset win = pack_rows("w", preferred, {2, 1}, 6, 3);
  const Batch wb = make_batch(win, {0, 1});
  auto seq = [](const Direct& d) { return d.lp.sum(1); };
  at::Tensor margin = (seq(direct(r.model, wb)) - seq(direct(r.reference, wb))) -
                      (seq(direct(r.model, b)) - seq(direct(r.reference, b)));
  const double expected = (-2.0 / 0.5) * at::log_sigmoid(0.5 * margin).mean().item<double>() + nll(direct(r.model, r.batch.retain));
  EXPECT_NEAR(loss, expected, 1e-5);
  auto resumed = make_strategy("altpo", r.cfg).value();
  begin(*resumed);
  ASSERT_TRUE(resumed->set_state(s->state()).is_ok());
  const Cost before = r.cost;
  EXPECT_EQ(resumed->loss(r.model, batch).total().item<double>(), loss);
  EXPECT_EQ(r.cost.forward_tokens - before.forward_tokens, 2 * 2 * 6);  // the two batches' reference forwards, no generation
  EXPECT_FALSE(resumed->set_state({{"altpo_alternates/fqa", at::zeros({3, 2}, at::kLong)}}).is_ok());
}

// WHP's generic logits on a hand case: v_ref − α · ReLU(v_reinf − v_ref).
TEST(Whp, GenericLogitsOnAHandCase) {
  const at::Tensor v_ref = at::tensor({1.0f, 2.0f, 3.0f, -1.0f}), v_reinf = at::tensor({2.0f, 1.0f, 5.0f, -1.0f});
  // ReLU(v_reinf − v_ref) = (1, 0, 2, 0); α = 2.
  EXPECT_TRUE(at::equal(generic_logits(v_ref, v_reinf, 2.0), at::tensor({-1.0f, 2.0f, -1.0f, -1.0f})));
  EXPECT_TRUE(at::equal(generic_logits(v_ref, v_reinf, 0.0), v_ref));
}

// WHP without anchors: the labels are the argmax of the generic logits of the reference and the
// reinforced model on the forget text, and the loss is θ's mean NLL of them over the loss mask.
TEST(Whp, LossIsTheNllOfTheGenericLabelsAndItsGradientMatches) {
  Rig r;
  r.cfg.forget_weight = 0.7;
  r.cfg.whp_alpha = 3;
  {
    at::NoGradGuard g;
    const Batch& b = r.batch.forget;
    const at::Tensor v_ref = r.reference.full_logits(b.input_BT, b.positions_BT, b.segments_BT);
    const at::Tensor v_reinf = r.reinforced.full_logits(b.input_BT, b.positions_BT, b.segments_BT);
    const at::Tensor labels = (v_ref - 3.0 * at::relu(v_reinf - v_ref)).argmax(-1);
    EXPECT_FALSE(at::equal(labels, b.target_BT));
    const at::Tensor logp = at::log_softmax(r.model.full_logits(b.input_BT, b.positions_BT, b.segments_BT), -1);
    const at::Tensor lp = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1);
    const double expected = 0.7 * (-(lp * b.loss_mask_BT).sum() / b.loss_mask_BT.sum()).item<double>();
    auto s = r.strategy("whp");
    EXPECT_NEAR(s->loss(r.model, r.batch).total().item<double>(), expected, 1e-5);
    // Its labels are its state: they round-trip, and a wrong shape is refused naming the key.
    StateTensors state = s->state();
    ASSERT_EQ(state.count("whp_labels/f"), 1u);
    EXPECT_TRUE(s->set_state(state).is_ok());
    Status bad = s->set_state({{"whp_labels/f", at::zeros({2, 3}, at::kLong)}});
    ASSERT_FALSE(bad.is_ok());
    EXPECT_NE(bad.message().find("whp_labels/f"), std::string::npos) << bad.message();
  }
  expect_gradient_matches(r, "whp");
}

// The config's method sections and the registry name the same methods, in the same order.
TEST(Strategy, RegistryAndConfigNameTheSameMethods) {
  EXPECT_EQ(strategy_names(), unlearn_method_names());
  EXPECT_EQ(resolve_methods({"all"}), strategy_names());
  std::vector<std::string> npo_first = {"npo"};
  for (const std::string& m : strategy_names()) if (m != "npo") npo_first.push_back(m);
  EXPECT_EQ(resolve_methods({"npo", "all", "ga"}), npo_first);
  EXPECT_EQ(resolve_methods({"npo", "ga", "npo"}), (std::vector<std::string>{"npo", "ga"}));
}

TEST(Strategy, UnknownNameListsTheValidOnes) {
  auto s = make_strategy("forgetful", UnlearnConfig{});
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find("\"forgetful\" is not an unlearning method"), std::string::npos);
  EXPECT_NE(s.status().message().find("ga, graddiff, kl, npo, simnpo, icu, wga, satimp, undial, ceu, pdu, rmu, idkdpo, altpo"), std::string::npos);
}

}  // namespace
}  // namespace lethe

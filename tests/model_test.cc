// The Llama model: shapes, causal masking, RoPE, GQA, KV cache, sample isolation, vocab-parallel
// log-probs.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/Allocator.h>
#include <c10/util/ThreadLocalDebugInfo.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <cstring>

#include "base/torch_compat.h"
#include "collectives/local_communicator.h"
#include "runtime/attention.h"
#include "runtime/fused.h"
#include "runtime/model.h"
#include "runtime/simd.h"
#include "runtime/tp_ops.h"

namespace lethe {
namespace {

ModelConfig small_model(int64_t kv_heads = 2) {
  ModelConfig m;
  m.vocab_size = 50;
  m.hidden_size = 32;
  m.intermediate_size = 64;
  m.num_hidden_layers = 2;
  m.num_attention_heads = 4;
  m.num_key_value_heads = kv_heads;
  m.max_position_embeddings = 64;
  m.initializer_range = 0.2;  // large enough that every logit depends visibly on the input
  return m;
}

struct Fixture {
  LocalCommunicator world;
  Mesh mesh = Mesh::create(world, MeshConfig{}).value();
};

at::Tensor positions(int64_t B, int64_t T) { return at::arange(T, at::kLong).unsqueeze(0).expand({B, T}).contiguous(); }
at::Tensor one_segment(int64_t B, int64_t T) { return at::zeros({B, T}, at::kLong); }

TEST(Model, ShapesNamesAndParameterCount) {
  Fixture f;
  ModelConfig cfg = small_model();
  Llama model(cfg, f.mesh, 1);
  at::Tensor ids = at::randint(0, 50, {3, 7}, at::kLong);
  EXPECT_EQ(model.hidden(ids, positions(3, 7), one_segment(3, 7)).sizes(), (std::vector<int64_t>{3, 7, 32}));
  EXPECT_EQ(model.full_logits(ids, positions(3, 7), one_segment(3, 7)).sizes(), (std::vector<int64_t>{3, 7, 50}));
  // embed + per layer (2 norms, q, k, v, o, gate, up, down) + norm + lm_head
  const int64_t per_layer = 2 * 32 + 32 * 32 + 2 * (16 * 32) + 32 * 32 + 3 * 32 * 64;
  EXPECT_EQ(model.num_params_global(), 50 * 32 + 2 * per_layer + 32 + 50 * 32);
  EXPECT_EQ(model.params()[1].name, "layers.0.attn_norm");
  EXPECT_EQ(model.params()[2].name, "layers.0.attn.wq");
  EXPECT_EQ(model.params().back().name, "lm_head");
  cfg.tie_word_embeddings = true;
  Llama tied(cfg, f.mesh, 1);
  EXPECT_EQ(tied.num_params_global(), model.num_params_global() - 50 * 32);
  // Same seed, same weights; another seed, other weights.
  Llama again(small_model(), f.mesh, 1), other(small_model(), f.mesh, 2);
  EXPECT_TRUE(at::equal(model.params()[2].value, again.params()[2].value));
  EXPECT_FALSE(at::equal(model.params()[2].value, other.params()[2].value));
}

TEST(Model, LaterTokensNeverChangeEarlierLogits) {
  Fixture f;
  Llama model(small_model(), f.mesh, 3);
  at::NoGradGuard no_grad;
  at::Tensor ids = at::randint(0, 50, {2, 12}, at::kLong);
  at::Tensor changed = ids.clone();
  changed.select(1, 8).fill_(0);
  changed.select(1, 11).fill_(1);
  at::Tensor a = model.full_logits(ids, positions(2, 12), one_segment(2, 12));
  at::Tensor b = model.full_logits(changed, positions(2, 12), one_segment(2, 12));
  EXPECT_TRUE(at::equal(a.narrow(1, 0, 8), b.narrow(1, 0, 8)));
  EXPECT_GT((a.narrow(1, 8, 4) - b.narrow(1, 8, 4)).abs().max().item<float>(), 1e-4);
}

TEST(Model, RopeMatchesHandComputedCase) {
  // d = 4, theta = 10000: frequencies 1 and 1/100; x = [1, 2, 3, 4] at position 1.
  at::Tensor x = at::tensor({1.0f, 2.0f, 3.0f, 4.0f}).view({1, 1, 1, 4});
  at::Tensor y = apply_rotary(x, at::ones({1, 1}, at::kLong), 10000.0).flatten();
  const double c1 = std::cos(1.0), s1 = std::sin(1.0), c2 = std::cos(0.01), s2 = std::sin(0.01);
  const double expected[] = {1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[i].item<double>(), expected[i], 1e-6) << i;
  // Position 0 is the identity; relative property: <R(p)q, R(p+k)k> depends on k only.
  EXPECT_TRUE(at::allclose(apply_rotary(x, at::zeros({1, 1}, at::kLong), 10000.0), x));
  at::Tensor q = at::randn({1, 1, 1, 8}), k = at::randn({1, 1, 1, 8});
  auto dot = [&](int64_t p, int64_t s) {
    return (apply_rotary(q, at::full({1, 1}, p, at::kLong), 10000.0) * apply_rotary(k, at::full({1, 1}, s, at::kLong), 10000.0))
        .sum().item<double>();
  };
  EXPECT_NEAR(dot(3, 5), dot(10, 12), 1e-4);
}

TEST(Model, GroupedQueryAttentionEqualsMultiHeadWithSharedKV) {
  Fixture f;
  Llama gqa(small_model(2), f.mesh, 4), mha(small_model(4), f.mesh, 5);
  at::NoGradGuard no_grad;
  // Copy every weight; MHA's K/V heads 2j and 2j+1 are GQA's KV head j.
  for (size_t i = 0; i < gqa.params().size(); ++i) {
    const Param& src = gqa.params()[i];
    at::Tensor dst = mha.params()[i].value;
    if (src.name.ends_with("attn.wk") || src.name.ends_with("attn.wv")) {
      dst.copy_(src.value.view({2, 1, 8, 32}).expand({2, 2, 8, 32}).reshape({32, 32}));
    } else {
      dst.copy_(src.value);
    }
  }
  at::Tensor ids = at::randint(0, 50, {2, 9}, at::kLong);
  EXPECT_TRUE(at::allclose(gqa.full_logits(ids, positions(2, 9), one_segment(2, 9)),
                           mha.full_logits(ids, positions(2, 9), one_segment(2, 9)), 1e-5, 1e-5));
}

// Note [CPU attention] against the explicit softmax over repeated keys and values, computed by
// autograd from plain ops: outputs and the gradients of q, k and v, causal and with a mask that
// splits each row into two samples, for 1, 2 and 4 query heads per KV head.
TEST(Model, CpuGroupedAttentionEqualsTheExplicitSoftmaxWithGradients) {
  const int64_t B = 3, T = 7, d = 8, h = 4;
  const at::Tensor seg = (at::arange(T, at::kLong) >= 4).to(at::kLong).unsqueeze(0).expand({B, T});
  const at::Tensor packed = (seg.unsqueeze(2).eq(seg.unsqueeze(1)) & at::ones({T, T}, at::kBool).tril()).unsqueeze(1);
  for (int64_t g : {4, 2, 1}) {
    for (const at::Tensor& mask : {at::Tensor(), packed}) {
      SCOPED_TRACE("kv heads " + std::to_string(g) + (mask.defined() ? ", packed" : ", causal"));
      const at::Tensor q = at::randn({B, h, T, d}).requires_grad_(), k = at::randn({B, g, T, d}).requires_grad_();
      const at::Tensor v = at::randn({B, g, T, d}).requires_grad_(), up = at::randn({B, h, T, d});
      const at::Tensor out = attention(q, k, v, mask);
      const auto grads = torch::autograd::grad({(out * up).sum()}, {q, k, v});
      const at::Tensor allowed = mask.defined() ? mask : at::ones({T, T}, at::kBool).tril();
      const at::Tensor kr = k.repeat_interleave(h / g, 1), vr = v.repeat_interleave(h / g, 1);
      const at::Tensor scores = at::matmul(q, kr.transpose(-2, -1)) / std::sqrt(double(d));
      const at::Tensor ref = at::matmul(at::softmax(scores.masked_fill(allowed.logical_not(), -INFINITY), -1), vr);
      const auto ref_grads = torch::autograd::grad({(ref * up).sum()}, {q, k, v});
      EXPECT_TRUE(at::allclose(out, ref, 1e-5, 1e-6));
      for (int i = 0; i < 3; ++i) EXPECT_TRUE(at::allclose(grads[i], ref_grads[i], 1e-5, 1e-5)) << "gradient " << i;
      at::NoGradGuard no_grad;  // the forward without a graph is the same (one query head per KV head:
      // Note [Decoding attention]'s loop, the same up to rounding)
      EXPECT_TRUE(g == h ? at::allclose(attention(q, k, v, mask), out, 1e-5, 1e-6) : at::equal(attention(q, k, v, mask), out));
    }
  }
}

// Note [CPU attention]'s tiles and ranges: 37 positions (row tiles and a tail, keys padded to 48),
// a head size of 20 (padded to 32), a mask with holes inside each row's key range (not one span),
// and a row that sees no key at all (its output 0, and it adds nothing to any gradient); fp32
// against the fp64 formula, bf16 against the fp32 formula on the same bf16 inputs.
TEST(Model, CpuAttentionOverTilesHolesAndEmptyRows) {
  const int64_t B = 2, h = 4, g = 2, T = 37, d = 20;
  at::Tensor mask = (at::rand({B, 1, T, T}) > 0.3).logical_and(at::ones({T, T}, at::kBool).tril());
  mask.diagonal(0, 2, 3).fill_(true);
  mask[1][0][5].fill_(false);  // sees nothing
  at::Tensor fake = mask.clone();
  fake[1][0][5][0] = true;  // the reference's stand-in key for the empty row, whose output it zeroes
  const at::Tensor sees_any = mask.any(-1, true);  // [B, 1, T, 1]
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(dtype == at::kFloat ? "fp32" : "bf16");
    const auto ref_type = dtype == at::kFloat ? at::kDouble : at::kFloat;
    const at::Tensor q = at::randn({B, h, T, d}).to(dtype).requires_grad_();
    const at::Tensor k = at::randn({B, g, T, d}).to(dtype).requires_grad_();
    const at::Tensor v = at::randn({B, g, T, d}).to(dtype).requires_grad_(), up = at::randn({B, h, T, d});
    const at::Tensor out = attention(q, k, v, mask);
    ASSERT_EQ(out.scalar_type(), dtype);
    const auto grads = torch::autograd::grad({(out.to(ref_type) * up.to(ref_type)).sum()}, {q, k, v});
    const at::Tensor qr = q.detach().to(ref_type).requires_grad_(), kr = k.detach().to(ref_type).requires_grad_();
    const at::Tensor vr = v.detach().to(ref_type).requires_grad_();
    const at::Tensor scores =
        at::matmul(qr, kr.repeat_interleave(h / g, 1).transpose(-2, -1)) / std::sqrt(static_cast<double>(d));
    const at::Tensor ref =
        at::matmul(at::softmax(scores.masked_fill(fake.logical_not(), -INFINITY), -1), vr.repeat_interleave(h / g, 1)) *
        sees_any.to(ref_type);
    const auto ref_grads = torch::autograd::grad({(ref * up.to(ref_type)).sum()}, {qr, kr, vr});
    EXPECT_TRUE(at::equal(out[1].select(1, 5).to(at::kFloat), at::zeros({h, d})));
    const double tol = dtype == at::kFloat ? 1e-5 : 2e-2;
    EXPECT_TRUE(at::allclose(out.to(ref_type), ref, tol, tol));
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(grads[i].scalar_type(), dtype);
      EXPECT_TRUE(at::allclose(grads[i].to(ref_type), ref_grads[i], tol, tol)) << "gradient " << i;
    }
  }
}

// Note [Decoding attention]: one query position against a cache's keys and values read in place
// (a narrowed buffer), rows whose padding the mask hides, head dims with and without a tail of 8.
TEST(Model, DecodingAttentionEqualsTheExplicitSoftmax) {
  const int64_t B = 3, h = 4, capacity = 20, S = 13;
  for (const int64_t d : {32, 12}) {
    for (const int64_t g : {2, 1}) {
      SCOPED_TRACE("d " + std::to_string(d) + ", kv heads " + std::to_string(g));
      const at::Tensor q = at::randn({B, h, 1, d});
      const at::Tensor k = at::randn({B, g, capacity, d}).narrow(2, 0, S), v = at::randn({B, g, capacity, d}).narrow(2, 0, S);
      at::Tensor mask = at::ones({B, 1, 1, S}, at::kBool);
      mask.narrow(3, 2, 5).select(0, 1).fill_(false);  // row 1 skips its padding
      mask.narrow(3, 0, 1).select(0, 2).fill_(false);
      at::NoGradGuard no_grad;
      const at::Tensor out = attention(q, k, v, mask);
      const at::Tensor qd = q.to(at::kDouble), kd = k.to(at::kDouble).repeat_interleave(h / g, 1), vd = v.to(at::kDouble).repeat_interleave(h / g, 1);
      const at::Tensor scores = at::matmul(qd, kd.transpose(-2, -1)) / std::sqrt(double(d));
      const at::Tensor ref = at::matmul(at::softmax(scores.masked_fill(mask.logical_not(), -INFINITY), -1), vd);
      EXPECT_TRUE(at::allclose(out.to(at::kDouble), ref, 1e-5, 1e-6));
    }
  }
}

// The fused fp32 CPU kernels (Note [Fused CPU kernels]) against the ATen formulas they replace,
// forward and backward, in fp64 (where ATen runs the formulas: the fused path is fp32 only).
TEST(Model, FusedRmsNormAndRopeEqualTheirFormulasWithGradients) {
  const int64_t B = 3, T = 5, h = 4, d = 16, D = 200;  // RMSNorm over 450 rows: several ∂w blocks
  const at::Tensor up = at::randn({B, T * 30, D});
  for (const bool grad_x : {true, false}) {
    SCOPED_TRACE(grad_x ? "x and w" : "w only");
    const at::Tensor x = (at::randn({B, T * 30, D}) * 3).requires_grad_(grad_x);
    const at::Tensor w = (1 + at::randn({D}) * 0.1).requires_grad_();
    const at::Tensor y = rms_norm(x, w, 1e-5);
    const at::Tensor xd = x.detach().to(at::kDouble).requires_grad_(grad_x), wd = w.detach().to(at::kDouble).requires_grad_();
    const at::Tensor ref = xd * at::rsqrt(xd.pow(2).mean(-1, true) + 1e-5) * wd;
    EXPECT_TRUE(at::allclose(y.to(at::kDouble), ref, 1e-5, 1e-6));
    std::vector<at::Tensor> in = {w}, in_ref = {wd};
    if (grad_x) in.push_back(x), in_ref.push_back(xd);
    const auto grads = torch::autograd::grad({(y * up).sum()}, in);
    const auto ref_grads = torch::autograd::grad({(ref * up.to(at::kDouble)).sum()}, in_ref);
    for (size_t i = 0; i < in.size(); ++i) {
      EXPECT_TRUE(at::allclose(grads[i].to(at::kDouble), ref_grads[i], 1e-4, 1e-4)) << "gradient " << i;
    }
  }
  // RoPE on q as the model makes it: a transposed view of a wider projection, tables per row of the
  // batch and shared by it.
  const at::Tensor angles = at::randn({B, 1, T, d / 2}) * 3;
  const at::Tensor emb = at::cat({angles, angles}, -1);
  for (const int64_t tables : {B, int64_t{1}}) {
    SCOPED_TRACE("tables " + std::to_string(tables));
    const at::Tensor cos = emb.narrow(0, 0, tables).cos(), sin = emb.narrow(0, 0, tables).sin();
    const at::Tensor proj = at::randn({B, T, 3 * h * d}).requires_grad_();
    const at::Tensor x = proj.narrow(-1, h * d, h * d).view({B, T, h, d}).transpose(1, 2);
    const at::Tensor out_up = at::randn({B, h, T, d});
    const at::Tensor y = apply_rope(x, cos, sin);
    const at::Tensor xd = x.to(at::kDouble), cd = cos.to(at::kDouble), sd = sin.to(at::kDouble);
    const at::Tensor ref = xd * cd + at::cat({-xd.narrow(-1, d / 2, d / 2), xd.narrow(-1, 0, d / 2)}, -1) * sd;
    EXPECT_TRUE(at::allclose(y.to(at::kDouble), ref, 1e-5, 1e-6));
    EXPECT_TRUE(y.is_contiguous());
    const at::Tensor grad = torch::autograd::grad({(y * out_up).sum()}, {proj})[0];
    const at::Tensor ref_grad = torch::autograd::grad({(ref * out_up.to(at::kDouble)).sum()}, {proj})[0];
    EXPECT_TRUE(at::allclose(grad, ref_grad, 1e-5, 1e-6));
    EXPECT_TRUE(at::equal(grad.narrow(-1, 0, h * d), at::zeros({B, T, h * d})));  // only x's columns
  }
}

// bf16 on the CPU takes the same kernels, reading and writing bf16 and computing in fp32: against
// ATen's ops on the fp32 upcast, rounded to bf16 once (what they replaced), forward and gradients.
TEST(Model, FusedRmsNormAndRopeInBf16MatchTheirFp32Formulas) {
  const int64_t B = 2, T = 6, h = 4, d = 16, D = 96;
  const auto bf16 = at::kBFloat16;
  const at::Tensor x = (at::randn({B, T * 20, D}) * 3).to(bf16).requires_grad_();
  const at::Tensor w = (1 + at::randn({D}) * 0.1).to(bf16).requires_grad_();
  const at::Tensor up = at::randn({B, T * 20, D}).to(bf16);
  const at::Tensor y = rms_norm(x, w, 1e-5);
  ASSERT_EQ(y.scalar_type(), bf16);
  EXPECT_TRUE(at::equal(rms_norm(x, w.to(at::kFloat), 1e-5), y));  // fp32 weights computing in bf16: the same kernel
  const at::Tensor xf = x.detach().to(at::kFloat).requires_grad_(), wf = w.detach().to(at::kFloat).requires_grad_();
  const at::Tensor ref = xf * at::rsqrt(xf.pow(2).mean(-1, true) + 1e-5) * wf;
  EXPECT_TRUE(at::allclose(y.to(at::kFloat), ref.to(bf16).to(at::kFloat), 8e-3, 1e-3));
  const auto grads = torch::autograd::grad({(y.to(at::kFloat) * up.to(at::kFloat)).sum()}, {x, w});
  const auto ref_grads = torch::autograd::grad({(ref * up.to(at::kFloat)).sum()}, {xf, wf});
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(grads[i].scalar_type(), bf16);
    EXPECT_TRUE(at::allclose(grads[i].to(at::kFloat), ref_grads[i], 2e-2, 2e-2)) << "gradient " << i;
  }
  const at::Tensor angles = at::randn({1, 1, T, d / 2}) * 3;
  const at::Tensor emb = at::cat({angles, angles}, -1);
  const at::Tensor cos = emb.cos(), sin = emb.sin();
  const at::Tensor proj = at::randn({B, T, 2 * h * d}).to(bf16).requires_grad_();
  const at::Tensor q = proj.narrow(-1, h * d, h * d).view({B, T, h, d}).transpose(1, 2);
  const at::Tensor out_up = at::randn({B, h, T, d});
  const at::Tensor r = apply_rope(q, cos, sin);
  ASSERT_EQ(r.scalar_type(), bf16);
  const at::Tensor qf = q.detach().to(at::kFloat).requires_grad_();
  const at::Tensor r_ref = qf * cos + at::cat({-qf.narrow(-1, d / 2, d / 2), qf.narrow(-1, 0, d / 2)}, -1) * sin;
  EXPECT_TRUE(at::equal(r.to(at::kFloat), r_ref.to(bf16).to(at::kFloat)));  // one rounding of the same fp32 sums
  const at::Tensor g = torch::autograd::grad({(r.to(at::kFloat) * out_up).sum()}, {proj})[0];
  const at::Tensor g_ref = torch::autograd::grad({(r_ref * out_up).sum()}, {qf})[0];
  EXPECT_TRUE(at::allclose(g.narrow(-1, h * d, h * d).view({B, T, h, d}).transpose(1, 2).to(at::kFloat), g_ref, 1e-2, 1e-2));
}

// SwiGLU (Note [Fused CPU kernels]) as the model calls it, on the two halves of one projection
// (row stride 2f), rows of 21 values (two vectors and a part), saturated gates included: against
// silu(a) · b in fp64 with gradients for fp32, and against the fp32 formula rounded once for bf16.
TEST(Model, FusedSwigluEqualsItsFormulaWithGradients) {
  const int64_t N = 150, f = 21;
  at::Tensor init = at::randn({N, 2 * f}) * 3;
  init[0][0] = 100, init[0][1] = -100, init[1][0] = 88.5, init[1][1] = -88.5;  // e^−a over- and underflowing
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(dtype == at::kFloat ? "fp32" : "bf16");
    const at::Tensor proj = init.to(dtype).requires_grad_();
    const at::Tensor a = proj.narrow(-1, 0, f), b = proj.narrow(-1, f, f), up = at::randn({N, f});
    const at::Tensor y = swiglu(a, b);
    ASSERT_EQ(y.scalar_type(), dtype);
    const auto ref_type = dtype == at::kFloat ? at::kDouble : at::kFloat;
    const at::Tensor pr = proj.detach().to(ref_type).requires_grad_();
    const at::Tensor ref = at::silu(pr.narrow(-1, 0, f)) * pr.narrow(-1, f, f);
    const at::Tensor grad = torch::autograd::grad({(y.to(ref_type) * up.to(ref_type)).sum()}, {proj})[0];
    const at::Tensor ref_grad = torch::autograd::grad({(ref * up.to(ref_type)).sum()}, {pr})[0];
    ASSERT_EQ(grad.scalar_type(), dtype);
    EXPECT_FALSE(grad.isnan().any().item<bool>());
    if (dtype == at::kFloat) {
      EXPECT_TRUE(at::allclose(y.to(at::kDouble), ref, 1e-5, 1e-6));
      EXPECT_TRUE(at::allclose(grad.to(at::kDouble), ref_grad, 1e-5, 1e-6));
    } else {
      EXPECT_TRUE(at::allclose(y.to(at::kFloat), ref.to(dtype).to(at::kFloat), 8e-3, 1e-3));
      EXPECT_TRUE(at::allclose(grad.to(at::kFloat), ref_grad.to(dtype).to(at::kFloat), 8e-3, 1e-3));
    }
  }
}

// Note [Concatenated weights are not kept]: column_parallel's fused product gives autograd's
// y = x · cat(ws)ᵀ outputs and gradients bit for bit, for weights in fp32 and bf16, computed in
// their dtype or in bf16, and for frozen weights (only the input's gradient).
TEST(Model, ConcatLinearIsAutogradsLinearBitForBit) {
  Fixture f;
  struct Case {
    const char* name;
    at::ScalarType weights, compute;
    bool frozen;
  };
  for (const Case c : {Case{"fp32", at::kFloat, at::kFloat, false}, Case{"bf16", at::kBFloat16, at::kBFloat16, false},
                       Case{"fp32 weights, bf16 compute", at::kFloat, at::kBFloat16, false},
                       Case{"frozen", at::kFloat, at::kFloat, true}}) {
    SCOPED_TRACE(c.name);
    std::vector<ColumnParallelLinear> layers(3);
    const int64_t widths[] = {12, 5, 7};
    for (size_t i = 0; i < layers.size(); ++i) layers[i].w = at::randn({widths[i], 16}).to(c.weights).requires_grad_(!c.frozen);
    const at::Tensor x = at::randn({3, 9, 16}).to(c.weights).requires_grad_();
    const at::Tensor up = at::randn({3, 9, 24});
    const std::vector<at::Tensor> y = column_parallel({&layers[0], &layers[1], &layers[2]}, x, c.compute, f.mesh.tp());
    std::vector<at::Tensor> ws, leaves{x};
    for (auto& l : layers) {
      ws.push_back(l.w.detach().requires_grad_(!c.frozen));
      if (!c.frozen) leaves.push_back(l.w);
    }
    const at::Tensor xr = x.detach().requires_grad_();
    const at::Tensor ref = at::linear(xr.to(c.compute), at::cat(ws).to(c.compute));
    std::vector<at::Tensor> ref_leaves{xr};
    if (!c.frozen) ref_leaves.insert(ref_leaves.end(), ws.begin(), ws.end());
    EXPECT_TRUE(at::equal(at::cat(y, -1), ref));
    const torch::autograd::variable_list g = torch::autograd::grad({(at::cat(y, -1).to(at::kFloat) * up).sum()}, leaves);
    const torch::autograd::variable_list g_ref = torch::autograd::grad({(ref.to(at::kFloat) * up).sum()}, ref_leaves);
    ASSERT_EQ(g.size(), g_ref.size());
    for (size_t i = 0; i < g.size(); ++i) {
      EXPECT_EQ(g[i].scalar_type(), leaves[i].scalar_type());
      EXPECT_TRUE(at::equal(g[i], g_ref[i])) << "gradient " << i;
    }
  }
}

// Note [Concatenated weights are not kept], through the whole model: what a forward with gradients
// leaves allocated for backward, counted by LibTorch's CPU allocator, is its activations — far
// less than one copy of the concatenated q/k/v and gate/up weights, which autograd kept before.
TEST(Model, AForwardKeepsNoCopyOfTheProjectionWeights) {
  struct LiveBytes : c10::MemoryReportingInfoBase {
    int64_t live = 0;
    void reportMemoryUsage(void*, int64_t size, compat::AllocatorTotal, compat::AllocatorTotal, c10::Device) override {
      live += size;
    }
    bool memoryProfilingEnabled() const override { return true; }
  };
  Fixture f;
  ModelConfig cfg = small_model();
  cfg.hidden_size = 256, cfg.intermediate_size = 1024, cfg.num_hidden_layers = 1;  // wide weights, few tokens
  Llama model(cfg, f.mesh, 8);
  const int64_t concatenated = 4 * cfg.hidden_size * (cfg.hidden_size + 2 * cfg.num_key_value_heads * cfg.head_dim() +
                                                      2 * cfg.intermediate_size);  // bytes, fp32
  const at::Tensor ids = at::randint(0, 50, {1, 4}, at::kLong);
  auto live = std::make_shared<LiveBytes>();
  at::Tensor loss;
  {
    c10::DebugInfoGuard counting(c10::DebugInfoKind::PROFILER_STATE, live);
    loss = -model.token_logprobs(ids, positions(1, 4), one_segment(1, 4), ids).sum();
  }
  EXPECT_GT(live->live, 0);
  EXPECT_LT(live->live, concatenated / 4) << "a forward left " << live->live << " bytes for backward; the weights "
                                          << "concatenated are " << concatenated;
  torch::autograd::backward({loss});
}

// simd.h's eight-lane bf16 conversions against c10::BFloat16's value by value, bit for bit:
// round-to-nearest-even ties both ways, ±0, ±∞, NaN, subnormals and random values.
TEST(Model, VectorBf16ConversionsAreC10s) {
  std::vector<float> x = {1.0f + 0x1p-8f, 1.0f + 0x3p-8f, -(1.0f + 0x1p-8f), 0.0f, -0.0f, INFINITY, -INFINITY,
                          NAN, 1e-40f, -3.4e38f, 65504.0f, 0.1f, -7.25f, 3.0e-39f, 1.0f, 2.0f};
  const at::Tensor r = at::randn({4096}) * 1e3;
  x.insert(x.end(), r.data_ptr<float>(), r.data_ptr<float>() + r.numel());
  for (size_t i = 0; i < x.size(); i += simd::kLane) {
    c10::BFloat16 out[simd::kLane];
    simd::store8(out, simd::load8(x.data() + i));
    float back[simd::kLane];
    simd::store8(back, simd::load8(out));
    for (int l = 0; l < simd::kLane; ++l) {
      const c10::BFloat16 want(x[i + l]);
      EXPECT_EQ(out[l].x, want.x) << x[i + l];
      const float wf = static_cast<float>(want);
      EXPECT_EQ(std::memcmp(&back[l], &wf, sizeof wf), 0) << x[i + l];
    }
  }
}

// The gradient norm's Σ x² (Note [Sum of squares]): against fp64 ATen over several blocks and a
// tail, fp32 and bf16, strided input; the same bits at one thread as at two.
TEST(Model, SumOfSquaresIsFp64AndIndependentOfThreads) {
  const at::Tensor x = at::randn({3, 40000}) * 1e-3;
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    const at::Tensor t = x.to(dtype).t();  // not contiguous
    const double ref = t.to(at::kDouble).pow(2).sum().item<double>();
    const int threads = at::get_num_threads();
    at::set_num_threads(2);
    const at::Tensor two = sum_of_squares(t);
    at::set_num_threads(1);
    const double one = sum_of_squares(t).item<double>();
    at::set_num_threads(threads);
    EXPECT_EQ(two.scalar_type(), at::kDouble);
    EXPECT_NEAR(two.item<double>(), ref, 1e-13 * ref);
    EXPECT_EQ(one, two.item<double>());
  }
}

TEST(Model, KvCacheDecodingMatchesFullForward) {
  Fixture f;
  Llama model(small_model(), f.mesh, 6);
  at::NoGradGuard no_grad;
  at::Tensor ids = at::randint(0, 50, {2, 10}, at::kLong);
  at::Tensor full = model.full_logits(ids, positions(2, 10), one_segment(2, 10));
  // Reserved for all 10 positions (written in place: the buffers never move), and reserved for 7
  // (grown once, by copying, when the 8th position comes).
  for (int64_t capacity : {10, 7}) {
    SCOPED_TRACE("capacity " + std::to_string(capacity));
    KVCache cache(capacity);
    at::Tensor prefix = model.full_logits(ids.narrow(1, 0, 6), positions(2, 6), one_segment(2, 6), &cache);
    EXPECT_TRUE(at::allclose(prefix, full.narrow(1, 0, 6), 1e-5, 1e-5));
    const void* first_buffer = cache.k[0].data_ptr();
    for (int64_t t = 6; t < 10; ++t) {
      at::Tensor step = model.full_logits(ids.narrow(1, t, 1), at::full({2, 1}, t, at::kLong), one_segment(2, 1), &cache);
      EXPECT_TRUE(at::allclose(step.squeeze(1), full.select(1, t), 1e-4, 1e-5)) << "position " << t;
    }
    EXPECT_EQ(cache.length, 10);
    EXPECT_EQ(cache.k[0].data_ptr() == first_buffer, capacity >= 10);
    EXPECT_EQ(cache.k[0].size(2), capacity >= 10 ? 10 : 14);  // doubled
  }
}

// Also the two attention paths against each other: a row that is one sample takes plain causal
// attention (no mask), a packed row the segment mask.
TEST(Model, PackedSamplesDoNotSeeEachOther) {
  Fixture f;
  Llama model(small_model(), f.mesh, 7);
  at::NoGradGuard no_grad;
  at::Tensor a = at::randint(0, 50, {1, 5}, at::kLong), b = at::randint(0, 50, {1, 7}, at::kLong);
  at::Tensor alone = model.full_logits(a, positions(1, 5), one_segment(1, 5));
  at::Tensor packed_ids = at::cat({b, a}, 1);
  at::Tensor packed_pos = at::cat({positions(1, 7), positions(1, 5)}, 1);
  at::Tensor packed_seg = at::cat({at::zeros({1, 7}, at::kLong), at::ones({1, 5}, at::kLong)}, 1);
  at::Tensor packed = model.full_logits(packed_ids, packed_pos, packed_seg);
  EXPECT_TRUE(at::allclose(packed.narrow(1, 7, 5), alone, 1e-5, 1e-5));
}

TEST(Model, VocabParallelLogProbsMatchLogSoftmaxWithGradients) {
  LocalCommunicator tp;
  at::Tensor logits = at::randn({2, 5, 11}, at::kDouble).set_requires_grad(true);
  at::Tensor target = at::randint(0, 11, {2, 5}, at::kLong);
  at::Tensor weights = at::randn({2, 5}, at::kDouble);
  at::Tensor ours = vocab_parallel_logprobs(logits, target, 0, tp);
  at::Tensor ref = at::log_softmax(logits.to(at::kFloat), -1).gather(-1, target.unsqueeze(-1)).squeeze(-1);
  EXPECT_TRUE(at::allclose(ours, ref, 1e-6, 1e-6));
  auto g_ours = torch::autograd::grad({(ours.to(at::kDouble) * weights).sum()}, {logits})[0];
  auto g_ref = torch::autograd::grad({(at::log_softmax(logits, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1) * weights).sum()},
                                     {logits})[0];
  EXPECT_TRUE(at::allclose(g_ours, g_ref, 1e-5, 1e-6));
}

TEST(Model, Bf16ComputeStaysCloseToFp32) {
  Fixture f;
  Llama model(small_model(), f.mesh, 8);
  at::NoGradGuard no_grad;
  at::Tensor ids = at::randint(0, 50, {2, 9}, at::kLong);
  at::Tensor fp32 = model.full_logits(ids, positions(2, 9), one_segment(2, 9));
  model.set_compute_dtype(at::kBFloat16);
  at::Tensor bf16 = model.full_logits(ids, positions(2, 9), one_segment(2, 9));
  EXPECT_LT((fp32 - bf16).abs().max().item<float>(), 0.1f * fp32.abs().max().item<float>());
  EXPECT_EQ(model.params()[2].value.scalar_type(), at::kFloat);  // master weights stay fp32
}

// Recomputing each block in backward changes nothing: the same loss and gradients, with or
// without earlier gradients to accumulate into; with a KV cache or without grad mode the switch is
// ignored.
TEST(Model, ActivationCheckpointingGivesTheSameLossAndGradients) {
  Fixture f;
  Llama model(small_model(), f.mesh, 8);
  const at::Tensor ids = at::randint(0, 50, {2, 9}, at::kLong), target = at::randint(0, 50, {2, 9}, at::kLong);
  std::vector<at::Tensor> grads[2];
  double losses[2];
  for (bool on : {false, true}) {
    model.set_activation_checkpointing(on);
    for (Param& p : model.params()) p.value.mutable_grad() = at::Tensor();
    at::Tensor loss = -model.token_logprobs(ids, positions(2, 9), one_segment(2, 9), target).mean();
    torch::autograd::backward({loss});
    losses[on] = loss.item<double>();
    for (const Param& p : model.params()) grads[on].push_back(p.value.grad().clone());
  }
  EXPECT_EQ(losses[0], losses[1]);
  for (size_t i = 0; i < grads[0].size(); ++i) {
    EXPECT_TRUE(at::allclose(grads[0][i], grads[1][i], 1e-5, 1e-7)) << model.params()[i].name;
  }
}

// A trainable bf16 model (Note [Parameter buckets]): every weight is a bf16 view into a bucket,
// its .grad an fp32 view into the bucket's gradient buffer, and two accumulated backwards add
// exactly the bf16 gradients autograd computes for those weights (summed in fp32) into it; with
// activation checkpointing the same to 1e-6. A frozen model has the same bf16 weights and no
// gradients.
TEST(Model, Bf16WeightsAndGradientsLiveInBuckets) {
  Fixture f;
  Llama model(small_model(), f.mesh, 8, {at::kBFloat16});
  Llama frozen(small_model(), f.mesh, 8, {at::kBFloat16, true, /*trainable=*/false});
  ASSERT_FALSE(model.buckets().empty());
  std::vector<at::Tensor> weights;
  for (size_t i = 0; i < model.params().size(); ++i) {
    const Param& p = model.params()[i];
    weights.push_back(p.value);
    EXPECT_EQ(p.value.scalar_type(), at::kBFloat16) << p.name;
    EXPECT_EQ(p.value.grad().scalar_type(), at::kFloat) << p.name;
    EXPECT_TRUE(at::equal(p.value, frozen.params()[i].value)) << p.name;
    EXPECT_FALSE(frozen.params()[i].value.requires_grad()) << p.name;
    bool in_bucket = false;
    for (const ParamBucket& b : model.buckets()) {
      const auto* base = static_cast<const char*>(b.grads.data_ptr());
      const auto* g = static_cast<const char*>(p.value.grad().data_ptr());
      in_bucket = in_bucket || (g >= base && g < base + b.grads.nbytes());
    }
    EXPECT_TRUE(in_bucket) << p.name;
  }
  const at::Tensor ids = at::randint(0, 50, {2, 2, 9}, at::kLong), target = at::randint(0, 50, {2, 2, 9}, at::kLong);
  auto loss = [&](int k) { return -model.token_logprobs(ids[k], positions(2, 9), one_segment(2, 9), target[k]).mean(); };
  std::vector<at::Tensor> expected(weights.size());
  for (int k = 0; k < 2; ++k) {
    auto g = torch::autograd::grad({loss(k)}, weights);
    for (size_t i = 0; i < g.size(); ++i) expected[i] = k == 0 ? g[i].to(at::kFloat) : expected[i] + g[i].to(at::kFloat);
  }
  for (bool on : {false, true}) {
    SCOPED_TRACE(on ? "checkpointing" : "no checkpointing");
    for (ParamBucket& b : model.buckets()) b.grads.zero_();
    model.set_activation_checkpointing(on);
    for (int k = 0; k < 2; ++k) torch::autograd::backward({loss(k)});
    for (size_t i = 0; i < weights.size(); ++i) {
      const at::Tensor& g = model.params()[i].value.grad();
      if (on) {
        EXPECT_TRUE(at::allclose(g, expected[i], 1e-6, 1e-6)) << model.params()[i].name;
      } else {
        EXPECT_TRUE(at::equal(g, expected[i])) << model.params()[i].name;
      }
    }
  }
}

TEST(Model, FlopsFollowMegatronConvention) {
  ModelConfig m = small_model();
  const double gemm = 2 * (32 * 32 * 2 + 32 * 16 * 2 + 3 * 32 * 64) + 50 * 32;
  EXPECT_DOUBLE_EQ(train_flops_per_token(m, 16), 6 * gemm + 6.0 * 2 * 32 * 16);
}

}  // namespace
}  // namespace lethe

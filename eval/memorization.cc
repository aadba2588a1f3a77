#include "eval/memorization.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "eval/dp_split.h"
#include "runtime/tp_ops.h"

namespace lethe {

namespace {

// Right-padded inputs/targets of samples[first, last), on the host.
struct Padded {
  Batch batch;
  std::vector<int64_t> targets;  // per row
};

Padded pad_samples(const std::vector<Tokens>& samples, size_t first, size_t last) {
  int64_t T = 1;
  bool same_length = true;
  for (size_t i = first; i < last; ++i) {
    T = std::max<int64_t>(T, static_cast<int64_t>(samples[i].size()) - 1);
    same_length = same_length && samples[i].size() == samples[first].size();
  }
  const int64_t B = static_cast<int64_t>(last - first);
  Padded p;
  Batch& b = p.batch;
  b.input_BT = at::zeros({B, T}, at::kLong);
  b.target_BT = at::zeros({B, T}, at::kLong);
  b.segments_BT = at::full({B, T}, -1, at::kLong);
  b.positions_BT = at::arange(T, at::kLong).unsqueeze(0).repeat({B, 1});
  b.one_sample_per_row = same_length;  // no padding anywhere
  auto in = b.input_BT.accessor<int64_t, 2>(), tg = b.target_BT.accessor<int64_t, 2>();
  auto sg = b.segments_BT.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const Tokens& x = samples[first + b];
    const int64_t n = static_cast<int64_t>(x.size()) - 1;
    for (int64_t t = 0; t < n; ++t) {
      in[b][t] = x[t];
      tg[b][t] = x[t + 1];
      sg[b][t] = 0;
    }
    p.targets.push_back(n);
  }
  return p;
}

double extraction_strength(const uint8_t* hit, int64_t n) {
  int64_t run = 0;
  while (run < n && hit[n - 1 - run]) ++run;
  return n > 0 ? static_cast<double>(run) / static_cast<double>(n) : 0.0;
}

double min_k_score(const float* lp, int64_t n, double k) {
  std::vector<float> v(lp, lp + n);
  const auto m = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(k * static_cast<double>(n))));
  std::partial_sort(v.begin(), v.begin() + m, v.end());
  double s = 0;
  for (int64_t i = 0; i < m; ++i) s += v[i];
  return -s / static_cast<double>(m);
}

}  // namespace

std::vector<Tokens> row_samples(const TokenDataset& ds) {
  at::Tensor tok = ds.tokens.contiguous(), seg = ds.segments.contiguous();
  std::vector<Tokens> out;
  for (int64_t r = 0; r < ds.rows(); ++r) {
    const int64_t* t = tok[r].data_ptr<int64_t>();
    const int64_t* s = seg[r].data_ptr<int64_t>();
    Tokens x;
    for (int64_t i = 0; i < tok.size(1) && s[i] >= 0; ++i) x.push_back(t[i]);
    out.push_back(std::move(x));
  }
  return out;
}

double TeacherForced::perplexity() const {
  return tokens > 0 ? std::exp(nll_sum / static_cast<double>(tokens)) : 0.0;
}

TeacherForced teacher_forced(const Llama& model, const std::vector<Tokens>& samples, double mink_k, int64_t batch_size) {
  at::NoGradGuard no_grad;
  enum { kMa, kEs, kMink, kNll, kTargets, kFields };
  const DpBlock mine = dp_block(model.mesh(), samples.size());
  at::Tensor rows = at::zeros({static_cast<int64_t>(mine.last - mine.first), kFields}, at::kDouble);
  auto out = rows.accessor<double, 2>();
  for (size_t first = mine.first; first < mine.last; first += static_cast<size_t>(batch_size)) {
    const size_t last = std::min(mine.last, first + static_cast<size_t>(batch_size));
    const Padded p = pad_samples(samples, first, last);
    // This rank's vocabulary shard only: log-probs and argmax are vocab-parallel (nothing gathered).
    at::Tensor shard = model.logits(model.hidden(p.batch));
    const at::Tensor target_BT = p.batch.target_BT.to(shard.device());
    at::Tensor lp = vocab_parallel_logprobs(shard, target_BT, model.vocab_start(), model.tp()).cpu().contiguous();
    at::Tensor hit = vocab_parallel_argmax(shard, model.vocab_start(), model.tp()).eq(target_BT).to(at::kByte).cpu().contiguous();
    for (size_t b = 0; b < p.targets.size(); ++b) {
      const int64_t n = p.targets[b];
      const float* lpb = lp[static_cast<int64_t>(b)].data_ptr<float>();
      const uint8_t* hb = hit[static_cast<int64_t>(b)].data_ptr<uint8_t>();
      double nll = 0, hits = 0;
      for (int64_t t = 0; t < n; ++t) {
        nll -= lpb[t];
        hits += hb[t];
      }
      const auto i = static_cast<int64_t>(first - mine.first + b);
      out[i][kMa] = hits / static_cast<double>(n);
      out[i][kEs] = extraction_strength(hb, n);
      out[i][kMink] = min_k_score(lpb, n, mink_k);
      out[i][kNll] = nll;
      out[i][kTargets] = static_cast<double>(n);
    }
  }
  at::Tensor all = dp_gather_rows(model.mesh(), rows, samples.size()).contiguous();
  auto a = all.accessor<double, 2>();
  TeacherForced r;
  for (int64_t i = 0; i < all.size(0); ++i) {
    r.ma.push_back(a[i][kMa]);
    r.es.push_back(a[i][kEs]);
    r.mink.push_back(a[i][kMink]);
    r.nll.push_back(a[i][kNll]);
    r.nll_sum += a[i][kNll];
    r.tokens += static_cast<int64_t>(a[i][kTargets]);
  }
  return r;
}

std::vector<PrefixGeneration> extraction_jobs(const std::vector<Tokens>& samples, const ExtractionOptions& o) {
  std::vector<PrefixGeneration> jobs;
  for (size_t i = 0; i < samples.size(); ++i) {
    const auto len = static_cast<int64_t>(samples[i].size());
    for (int64_t t = o.stride; t + o.n <= len; t += o.stride) {
      jobs.push_back({i, t, o.max_new > 0 ? std::min(len - t, o.max_new) : len - t, -1});
    }
  }
  return jobs;
}

std::vector<double> extraction_scores(const std::vector<Tokens>& samples, const ExtractionOptions& o,
                                      std::span<const PrefixGeneration> jobs, std::span<const Tokens> gens) {
  std::vector<double> sum(samples.size(), 0.0);
  std::vector<int64_t> starts(samples.size(), 0);
  for (size_t j = 0; j < jobs.size(); ++j) {
    const PrefixGeneration& job = jobs[j];
    const Tokens truth(samples[job.text].begin() + job.start, samples[job.text].end());
    const auto m = std::min<int64_t>(job.max_new, static_cast<int64_t>(gens[j].size()));
    sum[job.text] += ngram_overlap(Tokens(gens[j].begin(), gens[j].begin() + m), truth, o.n);
    ++starts[job.text];
  }
  std::vector<double> el(samples.size(), 0.0);
  for (size_t i = 0; i < samples.size(); ++i) if (starts[i] > 0) el[i] = sum[i] / static_cast<double>(starts[i]);
  return el;
}

std::vector<double> extraction_likelihood(const Llama& model, const std::vector<Tokens>& samples,
                                          const ExtractionOptions& o, int64_t* forward_tokens) {
  const std::vector<PrefixGeneration> jobs = extraction_jobs(samples, o);
  const std::vector<Tokens> gens = greedy_generate(model, samples, jobs, o.batch_size);
  if (forward_tokens) *forward_tokens += generation_tokens(samples, jobs);
  return extraction_scores(samples, o, jobs, gens);
}

using Ngram = std::vector<int64_t>;

double ngram_overlap(const Tokens& gen, const Tokens& truth, int64_t n) {
  if (static_cast<int64_t>(gen.size()) < n) return 0.0;
  std::set<Ngram> ref;
  for (size_t i = 0; i + n <= truth.size(); ++i) ref.emplace(truth.begin() + i, truth.begin() + i + n);
  int64_t found = 0, total = 0;
  for (size_t i = 0; i + n <= gen.size(); ++i, ++total) found += ref.count(Ngram(gen.begin() + i, gen.begin() + i + n));
  return static_cast<double>(found) / static_cast<double>(total);
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

double auc(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.empty() || b.empty()) return 0.5;
  double wins = 0;
  for (double x : a) {
    for (double y : b) wins += x > y ? 1.0 : (x == y ? 0.5 : 0.0);
  }
  return wins / (static_cast<double>(a.size()) * static_cast<double>(b.size()));
}

double privleak(double auc_model, double auc_retrained) {
  return (auc_model - auc_retrained) / auc_retrained * 100.0;
}

}  // namespace lethe

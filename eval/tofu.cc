#include "eval/tofu.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "eval/memorization.h"

namespace lethe {

TofuScores tofu_scores(const Llama& model, const Tokenizer& tok, const std::vector<QaItem>& items, int64_t batch_size) {
  // Samples: each item's prompt, then each of its answers after the prompt; an answer's NLL given
  // the question is the difference of the two sums (the prompt's targets are the same in both).
  std::vector<Tokens> samples;
  std::vector<size_t> prompt_at, answer_len;
  auto add_answer = [&](const Tokens& prompt, const std::string& answer) {
    Tokens x = prompt;
    const std::vector<int> a = tok.encode(answer);
    x.insert(x.end(), a.begin(), a.end());
    samples.push_back(std::move(x));
    answer_len.push_back(std::max<size_t>(1, a.size()));
  };
  for (const QaItem& it : items) {
    Tokens prompt{tok.bos()};
    for (int id : tok.encode(knowmem_prompt({}, it.question))) prompt.push_back(id);
    prompt_at.push_back(samples.size());
    samples.push_back(prompt);
    answer_len.push_back(0);
    add_answer(prompt, it.answer);
    if (!it.has_truth_ratio()) continue;
    add_answer(prompt, it.paraphrased);
    for (const std::string& p : it.perturbed) add_answer(prompt, p);
  }
  const TeacherForced tf = teacher_forced(model, samples, 0.4, batch_size);
  TofuScores s;
  for (size_t i = 0; i < items.size(); ++i) {
    const size_t at = prompt_at[i];
    auto prob = [&](size_t k) {  // the k-th answer after the prompt
      return std::exp(-(tf.nll[at + 1 + k] - tf.nll[at]) / static_cast<double>(answer_len[at + 1 + k]));
    };
    s.prob.push_back(prob(0));
    if (!items[i].has_truth_ratio()) continue;
    double wrong = 0;
    for (size_t k = 0; k < items[i].perturbed.size(); ++k) wrong += prob(2 + k);
    wrong /= static_cast<double>(items[i].perturbed.size());
    s.truth_ratio.push_back(wrong / (prob(1) + 1e-10));
  }
  return s;
}

double truth_ratio_forget(const std::vector<double>& tr) {
  std::vector<double> v;
  for (double x : tr) v.push_back(std::min(x, 1.0 / (x + 1e-10)));
  return mean(v);
}

double truth_ratio_retain(const std::vector<double>& tr) {
  std::vector<double> v;
  for (double x : tr) v.push_back(std::max(0.0, 1.0 - x));
  return mean(v);
}

// Note [Exact KS]: with n and m samples, the empirical CDFs after i of a's and j of b's smallest
// values differ by |i·m − j·n| / (n·m). Under the null every interleaving of the two samples is
// equally likely, a lattice path from (0, 0) to (n, m). The observed statistic is K = the largest
// |i·m − j·n| over the observed path, taken only where no tie straddles (a tie group is passed in
// one go, as the CDFs are). The p-value is the probability that a random path reaches K: the walk
// steps right with probability (n − i)/(n − i + m − j), and mass that first reaches |i·m − j·n| ≥ K
// is absorbed and summed, so small p-values keep their relative precision. Integer arithmetic
// for the band, as scipy's exact method.
double ks_2samp_pvalue(std::vector<double> a, std::vector<double> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  const auto n = static_cast<int64_t>(a.size()), m = static_cast<int64_t>(b.size());
  int64_t k = 0;
  for (int64_t i = 0, j = 0; i < n || j < m;) {
    const double v = j == m || (i < n && a[static_cast<size_t>(i)] <= b[static_cast<size_t>(j)]) ? a[static_cast<size_t>(i)]
                                                                                             : b[static_cast<size_t>(j)];
    while (i < n && a[static_cast<size_t>(i)] == v) ++i;
    while (j < m && b[static_cast<size_t>(j)] == v) ++j;
    k = std::max(k, std::abs(i * m - j * n));
  }
  if (k == 0) return 1.0;
  std::vector<double> row(static_cast<size_t>(m + 1), 0.0), next(static_cast<size_t>(m + 1), 0.0);
  row[0] = 1.0;
  double outside = 0;
  for (int64_t i = 0; i <= n; ++i) {
    std::fill(next.begin(), next.end(), 0.0);
    for (int64_t j = 0; j <= m; ++j) {
      const double p = row[static_cast<size_t>(j)];
      if (p == 0) continue;
      if (std::abs(i * m - j * n) >= k) {  // reached the statistic: absorbed
        outside += p;
        continue;
      }
      const double rest = static_cast<double>(n - i + m - j);
      if (i < n) next[static_cast<size_t>(j)] += p * static_cast<double>(n - i) / rest;
      if (j < m) row[static_cast<size_t>(j + 1)] += p * static_cast<double>(m - j) / rest;
    }
    std::swap(row, next);
  }
  return std::min(1.0, outside);
}

double harmonic_mean(const std::vector<double>& xs) {
  double inv = 0;
  for (double x : xs) {
    if (x <= 0) return 0.0;
    inv += 1.0 / x;
  }
  return xs.empty() ? 0.0 : static_cast<double>(xs.size()) / inv;
}

}  // namespace lethe

#include "eval/rouge.h"

#include <cctype>
#include <cstdint>

namespace lethe {

namespace {

template <class T>
size_t lcs_length(const std::vector<T>& a, const std::vector<T>& b) {
  std::vector<int> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  return static_cast<size_t>(prev[b.size()]);
}

template <class T>
double lcs_f1(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.empty() || b.empty()) return 0.0;
  const double lcs = static_cast<double>(lcs_length(a, b));
  if (lcs == 0) return 0.0;
  const double p = lcs / static_cast<double>(a.size()), r = lcs / static_cast<double>(b.size());
  return 2 * p * r / (p + r);
}

}  // namespace

std::vector<std::string> rouge_words(const std::string& text) {
  std::vector<std::string> words;
  std::string cur;
  for (unsigned char c : text) {
    if (std::isalnum(c)) {
      cur.push_back(static_cast<char>(std::tolower(c)));
    } else if (!cur.empty()) {
      words.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) words.push_back(std::move(cur));
  return words;
}

double rouge_l_f1(const std::string& prediction, const std::string& reference) {
  return lcs_f1(rouge_words(prediction), rouge_words(reference));
}

double rouge_l_recall(const std::string& prediction, const std::string& reference) {
  const std::vector<std::string> p = rouge_words(prediction), r = rouge_words(reference);
  return r.empty() ? 0.0 : static_cast<double>(lcs_length(p, r)) / static_cast<double>(r.size());
}

double rouge_l_f1(const std::vector<int64_t>& prediction, const std::vector<int64_t>& reference) {
  return lcs_f1(prediction, reference);
}

}  // namespace lethe

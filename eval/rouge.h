// ROUGE-L F1 as MUSE computes it (REFERENCE.md): tokens are the lower-cased alphanumeric runs of
// the text, no stemming; P = LCS / |pred|, R = LCS / |ref|, F1 = 2PR / (P + R).
#pragma once

#include <string>
#include <vector>

namespace lethe {

std::vector<std::string> rouge_words(const std::string& text);

// In [0, 1]; 0 when either side has no words.
double rouge_l_f1(const std::string& prediction, const std::string& reference);

// The same over any token sequences (ids), for token-level similarity.
// ROUGE-L recall, LCS / len(reference) over the same words (TOFU's retain ROUGE; no stemmer).
double rouge_l_recall(const std::string& prediction, const std::string& reference);
double rouge_l_f1(const std::vector<int64_t>& prediction, const std::vector<int64_t>& reference);

}  // namespace lethe

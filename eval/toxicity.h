// Behaviour unlearning's metric (REFERENCE.md, "Toxicity rate"; Note [Toxic scenario] in
// io/corpus.h): how often a model's greedy continuations of neutral prompts use the register to
// remove. Text only: no models.
#pragma once

#include <string>
#include <vector>

#include "io/corpus.h"

namespace lethe {

// Whether `word` occurs in `text` as a whole word (not inside a longer word), ignoring ASCII case.
bool contains_word(const std::string& text, const std::string& word);

// toxicity_rate: the fraction of `continuations` that contain a lexicon word; toxicity_template_rate:
// the fraction that contain a template's marker phrase (ignoring case). 0 for no continuations.
struct ToxicityRates {
  double words = 0, templates = 0;
};
ToxicityRates toxicity_rates(const std::vector<std::string>& continuations, const Lexicon& lexicon);

}  // namespace lethe

// Corpora: the text a run trains on, forgets and probes.
//
// A Corpus holds documents (passages) and question/answer probes, each labelled with a split:
//   forget  — Y, the data to unlearn (trained on by the target, not by the retrained model);
//   retain  — X \ Y, trained on by both;
//   holdout — never trained on; the "unseen" side of membership inference.
// Two sources: a deterministic generator of fictitious people (the embedded default), and the
// user's JSONL files. See docs/corpus.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "io/config.h"

namespace lethe {

enum class Split { kForget, kRetain, kHoldout };
const char* split_name(Split s);

struct Document {
  std::string id;     // unique within the corpus
  std::string group;  // the person (generated) or the id itself (jsonl): forget_ids match either
  Split split = Split::kRetain;
  std::string text;
};

struct QaProbe {
  std::string group;
  Split split = Split::kRetain;
  std::string question;
  std::string answer;
  std::string paraphrased_answer;              // same fact, other words ("" when unknown)
  std::vector<std::string> perturbed_answers;  // plausible but wrong
};

// Note [Toxic scenario]: a register to remove rather than records. corpus.scenario = "toxic" adds
// to the generated people one abusive document for each of forget_fraction of them (who stay in
// retain: their biographies and facts are not forgotten) and for as many holdout people (holdout:
// the never-trained side of membership inference, in the same form). The documents use a fixed
// lexicon of invented slur-like words (nothing real is reproduced; each long enough to be several
// tokens) and abusive sentence templates, so a model that stops producing a handful of tokens has
// not yet dropped the register. The forget set is those documents (one group each, "toxic-<person>"),
// across many people. toxicity_rate continues neutral prompts about trained people.
struct Lexicon {
  std::vector<std::string> words;      // matched as whole words, ignoring case
  std::vector<std::string> templates;  // a phrase that marks each abusive template, matched ignoring case
  bool empty() const { return words.empty() && templates.empty(); }
};

struct Corpus {
  std::vector<Document> docs;
  std::vector<QaProbe> qa;
  Lexicon lexicon;                           // the register to remove (empty: none)
  std::vector<std::string> neutral_prompts;  // toxicity_rate's prompts (with a lexicon)

  // Documents and QA renderings a model is trained on. `include_forget`: the target (X) or the
  // retrained model (X \ Y). Holdout data is never included.
  std::vector<Document> training_documents(bool include_forget, bool qa_in_training) const;
  std::vector<Document> documents(Split split) const;
};

// The embedded default: `cfg.people` fictitious people, each with attributes, several biography
// phrasings and QA probes. Same config, same bytes, on any machine.
Corpus generate_corpus(const CorpusConfig& cfg);

// Loads the configured corpus (generated, or JSONL files relative to `base_dir`), then moves
// `cfg.forget_ids` into the forget split. Errors name the file and line.
Result<Corpus> load_corpus(const CorpusConfig& cfg, const std::string& base_dir);

// eval.toxicity_lexicon: a JSON object {"words": [...], "templates": [...], "prompts": [...]} (words
// required; prompts optional). Errors name the file and the key.
struct LexiconFile {
  Lexicon lexicon;
  std::vector<std::string> prompts;
};
Result<LexiconFile> read_lexicon(const std::string& path);

// A JSONL corpus's neutral prompts when its lexicon file gives none: the first eight words of each
// retain passage.
std::vector<std::string> retain_openings(const Corpus& corpus);

// Writes forget/retain/holdout documents and QA probes as JSONL files in `dir`, in the format
// load_corpus reads (so a generated corpus can be inspected and reused).
Status write_corpus(const Corpus& corpus, const std::string& dir);

// WHP's anchor dictionary (docs/strategies.md, WHP): a term idiosyncratic to the forget set and
// the generic translation that replaces it.
struct Anchor {
  std::string term, generic;
};

// The generated corpus's anchors: each forget person's name, first name, parents' and spouse's
// names, and work titles (cities, jobs and awards are shared with retain people, so they are not
// anchors). Names translate word by word — a first (last) name to the first pool name in order
// that no forget person's names use as a first (last) name, consistently — and a title to the
// next title of the generator's words that no forget person wrote. `cfg` is the corpus's config;
// the forget people are those of `corpus`'s forget split. An error when the pools have no name
// left to give.
Result<std::vector<Anchor>> generated_anchors(const CorpusConfig& cfg, const Corpus& corpus);

// A user's anchor dictionary: a JSON object, or a TOML table when the name ends in .toml, of
// "term" = "generic" strings. Errors name the file and the key.
Result<std::vector<Anchor>> read_anchors(const std::string& path);

// An anchored term's occurrence in a text: bytes [begin, end) hold anchors[anchor].term.
struct AnchorMatch {
  size_t begin = 0, end = 0, anchor = 0;
};
// Occurrences of the terms as whole words (not inside a longer word), left to right, the longest
// term first where several start at one place; they do not overlap.
std::vector<AnchorMatch> find_anchors(const std::string& text, const std::vector<Anchor>& anchors);
// `text` with every occurrence replaced by its generic translation.
std::string translate_anchors(const std::string& text, const std::vector<Anchor>& anchors);

// "Question: …\nAnswer: …" — the few-shot prompt unit of KnowMem (REFERENCE.md).
std::string render_qa(const std::string& question, const std::string& answer);

}  // namespace lethe

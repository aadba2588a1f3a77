// Tokenizer: a sentencepiece model, loaded from a user's tokenizer.model or trained on the corpus.
// Ids: 0 <unk>, 1 <s> (bos), 2 </s> (eos), 3 <pad> for trained models; loaded models keep theirs
// (a model without a pad piece pads with eos).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace lethe {

class Tokenizer {
 public:
  static Result<Tokenizer> load(const std::string& path);
  // Trains a BPE model on `texts` (newlines kept as a token, no normalisation, byte fallback so
  // any text encodes), writes it to `save_path`, and loads it.
  static Result<Tokenizer> train(const std::vector<std::string>& texts, int vocab_size, const std::string& save_path);

  std::vector<int> encode(const std::string& text) const;
  std::string decode(const std::vector<int>& ids) const;
  int vocab_size() const { return vocab_size_; }
  int bos() const { return bos_; }
  int eos() const { return eos_; }
  int pad() const { return pad_; }
  const std::string& path() const { return path_; }

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;  // sentencepiece, loaded privately (Note [Sentencepiece isolation])
  int vocab_size_ = 0, bos_ = -1, eos_ = -1, pad_ = -1;
  std::string path_;
};

}  // namespace lethe

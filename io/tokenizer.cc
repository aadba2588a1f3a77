#include "io/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <fstream>
#include <unordered_map>

namespace lethe {

namespace {

class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& v_;
  size_t i_ = 0;
};

}  // namespace

Result<Tokenizer> Tokenizer::load(const std::string& path) {
  auto sp = std::make_shared<sentencepiece::SentencePieceProcessor>();
  if (!std::filesystem::exists(path)) return Status::error(path + ": tokenizer model not found");
  auto st = sp->Load(path);
  if (!st.ok()) return Status::error(path + ": not a sentencepiece model: " + st.ToString());
  Tokenizer t;
  t.sp_ = std::move(sp);
  t.path_ = path;
  return t;
}

Result<Tokenizer> Tokenizer::train(const std::vector<std::string>& texts, int vocab_size, const std::string& save_path) {
  if (texts.empty()) return Status::error("cannot train a tokenizer on an empty corpus");
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"hard_vocab_limit", "false"},
      {"character_coverage", "1.0"},
      {"byte_fallback", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"split_digits", "true"},
      {"user_defined_symbols", "\n"},
      {"unk_id", "0"}, {"bos_id", "1"}, {"eos_id", "2"}, {"pad_id", "3"},
      {"num_threads", "2"},
      {"minloglevel", "2"},
      {"max_sentence_length", "1000000"},
  };
  VectorIterator it(texts);
  std::string proto;
  auto st = sentencepiece::SentencePieceTrainer::Train(args, &it, &proto);
  if (!st.ok()) return Status::error("training the tokenizer failed: " + st.ToString());
  std::string tmp = save_path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out.write(proto.data(), static_cast<std::streamsize>(proto.size()));
    if (!out.flush()) return Status::error(tmp + ": write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, save_path, ec);
  if (ec) return Status::error(save_path + ": " + ec.message());
  return load(save_path);
}

std::vector<int> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  sp_->Encode(text, &ids).IgnoreError();
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::string out;
  sp_->Decode(ids, &out).IgnoreError();
  return out;
}

int Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int Tokenizer::bos() const { return sp_->bos_id(); }
int Tokenizer::eos() const { return sp_->eos_id(); }
int Tokenizer::pad() const { return sp_->pad_id() >= 0 ? sp_->pad_id() : sp_->eos_id(); }

}  // namespace lethe

// A plain C interface to sentencepiece, built as its own module and loaded by tokenizer.cc with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND).
//
// Note [Sentencepiece isolation]: Debian's libsentencepiece bundles and exports its own copy of
// protobuf-lite, and Debian's LibTorch loads the system libprotobuf (through libonnx_proto). In
// one global symbol scope each library calls into the other's protobuf and the process crashes
// during static initialisation. Loading sentencepiece privately, with its own symbols first,
// keeps the two apart. Nothing C++ crosses this boundary: only ints, chars and malloc'd buffers.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

void set_error(char* err, size_t len, const std::string& msg) {
  if (err && len) {
    std::strncpy(err, msg.c_str(), len - 1);
    err[len - 1] = '\0';
  }
}

class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  VectorIterator(const char* const* texts, size_t n) : texts_(texts), n_(n) { load(); }
  bool done() const override { return i_ >= n_; }
  void Next() override {
    ++i_;
    load();
  }
  const std::string& value() const override { return current_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void load() {
    if (i_ < n_) current_ = texts_[i_];
  }
  const char* const* texts_;
  size_t n_;
  size_t i_ = 0;
  std::string current_;
};

}  // namespace

extern "C" {

void* lspm_load(const char* path, char* err, size_t errlen) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  auto st = sp->Load(path);
  if (!st.ok()) {
    set_error(err, errlen, st.ToString());
    delete sp;
    return nullptr;
  }
  return sp;
}

void lspm_free(void* sp) { delete static_cast<sentencepiece::SentencePieceProcessor*>(sp); }

void lspm_info(void* h, int* vocab, int* bos, int* eos, int* pad) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  *vocab = sp->GetPieceSize();
  *bos = sp->bos_id();
  *eos = sp->eos_id();
  *pad = sp->pad_id();
}

// *ids is malloc'd; the caller frees it with lspm_release.
int lspm_encode(void* h, const char* text, size_t len, int** ids, size_t* n) {
  std::vector<int> v;
  auto st = static_cast<sentencepiece::SentencePieceProcessor*>(h)->Encode(std::string(text, len), &v);
  *n = v.size();
  *ids = static_cast<int*>(std::malloc(std::max<size_t>(1, v.size()) * sizeof(int)));
  std::copy(v.begin(), v.end(), *ids);
  return st.ok() ? 0 : 1;
}

int lspm_decode(void* h, const int* ids, size_t n, char** out, size_t* len) {
  std::string s;
  auto st = static_cast<sentencepiece::SentencePieceProcessor*>(h)->Decode(std::vector<int>(ids, ids + n), &s);
  *len = s.size();
  *out = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(*out, s.data(), s.size() + 1);
  return st.ok() ? 0 : 1;
}

void lspm_release(void* p) { std::free(p); }

// `kv` holds nkv key/value pairs (2·nkv strings). The serialized model lands in *model (malloc'd).
int lspm_train(const char* const* texts, size_t n, const char* const* kv, size_t nkv, char** model, size_t* model_len,
               char* err, size_t errlen) {
  std::unordered_map<std::string, std::string> args;
  for (size_t i = 0; i < nkv; ++i) args[kv[2 * i]] = kv[2 * i + 1];
  VectorIterator it(texts, n);
  std::string proto;
  auto st = sentencepiece::SentencePieceTrainer::Train(args, &it, &proto);
  if (!st.ok()) {
    set_error(err, errlen, st.ToString());
    return 1;
  }
  *model_len = proto.size();
  *model = static_cast<char*>(std::malloc(proto.size()));
  std::memcpy(*model, proto.data(), proto.size());
  return 0;
}

}  // extern "C"

#include "io/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <mutex>

#include "io/atomic_file.h"

namespace lethe {

namespace fs = std::filesystem;

// The sentencepiece module's C interface (Note [Sentencepiece isolation] in sentencepiece_module.cc).
struct SpmApi {
  void* (*load)(const char*, char*, size_t);
  void (*free)(void*);
  void (*info)(void*, int*, int*, int*, int*);
  int (*encode)(void*, const char*, size_t, int**, size_t*);
  int (*decode)(void*, const int*, size_t, char**, size_t*);
  void (*release)(void*);
  int (*train)(const char* const*, size_t, const char* const*, size_t, char**, size_t*, char*, size_t);
};

struct Tokenizer::Impl {
  Impl(const SpmApi* a, void* h) : api(a), handle(h) {}
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() { api->free(handle); }
  const SpmApi* api;
  void* handle;
};

namespace {

// Note [Sentencepiece isolation] in sentencepiece_module.cc. AddressSanitizer refuses RTLD_DEEPBIND,
// so a sanitizer build (scripts/sanitize.sh) loads the module, built uninstrumented, into a link
// namespace of its own instead; only ints, chars and the module's own buffers cross either way.
void* load_module(const std::string& path) {
#if defined(__SANITIZE_ADDRESS__)
  return dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
#else
  return dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
#endif
}

// The module sits next to the executable once installed, or in the build tree (LETHE_SPM_MODULE).
Result<const SpmApi*> spm_api() {
  static SpmApi api;
  static std::string error;
  static std::once_flag once;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    std::error_code ec;
    fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) candidates.push_back((exe.parent_path() / "liblethe_sentencepiece.so").string());
    candidates.push_back(LETHE_SPM_MODULE);
    void* lib = nullptr;
    for (const auto& c : candidates) {
      if (fs::exists(c) && (lib = load_module(c))) break;
      if (fs::exists(c)) error = dlerror();
    }
    if (!lib) {
      error = "cannot load the sentencepiece module (" + std::string(LETHE_SPM_MODULE) + "): " + error;
      return;
    }
    auto sym = [&](const char* name) {
      void* f = dlsym(lib, name);
      if (!f && error.empty()) error = std::string(LETHE_SPM_MODULE) + ": missing symbol " + name + " (a stale build?)";
      return f;
    };
    api.load = reinterpret_cast<decltype(api.load)>(sym("lspm_load"));
    api.free = reinterpret_cast<decltype(api.free)>(sym("lspm_free"));
    api.info = reinterpret_cast<decltype(api.info)>(sym("lspm_info"));
    api.encode = reinterpret_cast<decltype(api.encode)>(sym("lspm_encode"));
    api.decode = reinterpret_cast<decltype(api.decode)>(sym("lspm_decode"));
    api.release = reinterpret_cast<decltype(api.release)>(sym("lspm_release"));
    api.train = reinterpret_cast<decltype(api.train)>(sym("lspm_train"));
  });
  if (!error.empty()) return Status::error(error);
  return &api;
}

}  // namespace

Result<Tokenizer> Tokenizer::load(const std::string& path) {
  LETHE_ASSIGN_OR_RETURN(const SpmApi* api, spm_api());
  if (!fs::exists(path)) return Status::error(path + ": tokenizer model not found");
  char err[512] = {0};
  void* h = api->load(path.c_str(), err, sizeof err);
  if (!h) return Status::error(path + ": not a sentencepiece model: " + err);
  Tokenizer t;
  t.impl_ = std::make_shared<Impl>(api, h);
  api->info(h, &t.vocab_size_, &t.bos_, &t.eos_, &t.pad_);
  if (t.pad_ < 0) t.pad_ = t.eos_;
  t.path_ = path;
  return t;
}

Result<Tokenizer> Tokenizer::train(const std::vector<std::string>& texts, int vocab_size, const std::string& save_path) {
  LETHE_ASSIGN_OR_RETURN(const SpmApi* api, spm_api());
  if (texts.empty()) return Status::error("cannot train a tokenizer on an empty corpus");
  const std::string vocab = std::to_string(vocab_size);
  const char* kv[] = {
      "model_type", "bpe", "vocab_size", vocab.c_str(), "hard_vocab_limit", "false",
      "character_coverage", "1.0", "byte_fallback", "true", "normalization_rule_name", "identity",
      "remove_extra_whitespaces", "false", "split_digits", "true", "user_defined_symbols", "\n",
      "unk_id", "0", "bos_id", "1", "eos_id", "2", "pad_id", "3",
      "num_threads", "2", "minloglevel", "2", "max_sentence_length", "1000000",
  };
  std::vector<const char*> ptrs;
  for (const auto& t : texts) ptrs.push_back(t.c_str());
  char* model = nullptr;
  size_t model_len = 0;
  char err[512] = {0};
  if (api->train(ptrs.data(), ptrs.size(), kv, std::size(kv) / 2, &model, &model_len, err, sizeof err) != 0)
    return Status::error(std::string("training the tokenizer failed: ") + err);
  Status written = write_file_atomic(save_path, std::string_view(model, model_len));
  api->release(model);
  LETHE_RETURN_IF_ERROR(written);
  return load(save_path);
}

std::vector<int> Tokenizer::encode(const std::string& text) const {
  int* ids = nullptr;
  size_t n = 0;
  impl_->api->encode(impl_->handle, text.data(), text.size(), &ids, &n);
  std::vector<int> out(ids, ids + n);
  impl_->api->release(ids);
  return out;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  char* s = nullptr;
  size_t n = 0;
  impl_->api->decode(impl_->handle, ids.data(), ids.size(), &s, &n);
  std::string out(s, n);
  impl_->api->release(s);
  return out;
}

}  // namespace lethe

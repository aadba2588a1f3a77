// lethe_fuzz FORMAT INPUTS [SEED] [KEEP_DIR]: feeds INPUTS mutants of a valid file to Lethe's reader
// of that format and reports how many were accepted, how many rejected, every distinct error message
// (numbers and paths folded), and crashes. FORMAT: toml, jsonl, config_json, safetensors, h5,
// h5_resealed, tokenizer, or all. `lethe_fuzz FORMAT replay FILE` reads one kept input in-process.
//
// A deterministic mutator, not libFuzzer: libFuzzer needs the code under test built by clang with
// -fsanitize=fuzzer, a third full build of Lethe and its LibTorch headers; this driver runs in the
// gcc ASan/UBSan build CI already makes (scripts/sanitize.sh). Mutations, seeded per input: byte
// flips, truncations, huge lengths and shapes, wrong dtypes, duplicated keys, deep nesting, splices.
//
// Lethe's own readers run in this process: a crash there (or an ASan/UBSan report) ends the run, and
// the input is left in KEEP_DIR/current. libhdf5 and sentencepiece parse in a forked child: a crash
// inside them is counted apart and its input kept as a reproducer. `h5` mutates sealed checkpoints
// (the seal must refuse every one before libhdf5 sees it); `h5_resealed` seals each mutant again, so
// that libhdf5 itself parses it.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>

#include "collectives/local_communicator.h"
#include "io/config.h"
#include "io/corpus.h"
#include "io/hdf5_store.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "runtime/checkpoint.h"
#include "runtime/mesh.h"
#include "runtime/model.h"

namespace lethe {
namespace {

namespace fs = std::filesystem;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void spit(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes; }

ModelConfig fuzz_model() { return llama_shape(64, 16, 32, 1, 2, 1, 32); }

// The mutator. `text`: the format is text (TOML, JSON), so numbers, keys and nesting are edited as text.
std::string mutate(std::string s, std::mt19937_64& rng, bool text) {
  auto pick = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  static const char* kHuge[] = {"99999999999999999999", "1000000000000", "-1", "0", "4294967296", "1e308", "nan"};
  static const char* kDtypes[] = {"F32", "BF16", "F16", "I64", "U8", "float32", "bfloat16", "int64", "F64", "BOOL"};
  const int kind = static_cast<int>(rng() % 7);
  if (s.empty()) return "\x01";
  switch (kind) {
    case 0: {  // byte flips
      const int n = 1 + static_cast<int>(rng() % 8);
      for (int i = 0; i < n; ++i) s[pick(s.size())] ^= static_cast<char>(1 + rng() % 255);
      return s;
    }
    case 1: return s.substr(0, pick(s.size()));  // truncation
    case 2: {  // huge lengths and shapes
      if (text) {
        std::vector<size_t> digits;
        for (size_t i = 0; i < s.size(); ++i) if (std::isdigit(static_cast<unsigned char>(s[i])) && (i == 0 || !std::isdigit(static_cast<unsigned char>(s[i - 1])))) digits.push_back(i);
        if (digits.empty()) break;
        const size_t at = digits[pick(digits.size())];
        size_t end = at;
        while (end < s.size() && std::isdigit(static_cast<unsigned char>(s[end]))) ++end;
        return s.substr(0, at) + kHuge[pick(std::size(kHuge))] + s.substr(end);
      }
      const uint64_t values[] = {~uint64_t{0}, uint64_t{1000000000000}, uint64_t{0x7fffffff}, uint64_t{1} << 40};
      const uint64_t v = values[pick(std::size(values))];
      const size_t at = pick(s.size() >= 8 ? s.size() - 7 : 1) & ~size_t{7};
      for (size_t i = 0; i < 8 && at + i < s.size(); ++i) s[at + i] = static_cast<char>(v >> (8 * i));
      return s;
    }
    case 3: {  // wrong dtypes
      for (const char* d : kDtypes) {
        if (size_t p = s.find(d); p != std::string::npos && rng() % 2) return s.replace(p, std::strlen(d), kDtypes[pick(std::size(kDtypes))]);
      }
      break;
    }
    case 4: {  // duplicated keys: a line, or a "key": value segment
      const size_t a = pick(s.size());
      const size_t b = s.find_first_of(text ? "\n," : "\n", a);
      if (b == std::string::npos) break;
      const size_t start = s.rfind(text ? '\n' : '\n', a) == std::string::npos ? 0 : s.rfind('\n', a) + 1;
      const size_t from = std::min(start, a);
      return s.substr(0, b + 1) + s.substr(from, b + 1 - from) + s.substr(b + 1);
    }
    case 5: {  // deep nesting
      const size_t depth = std::vector<size_t>{64, 10000, 200000}[pick(3)];
      if (!text) break;
      const size_t at = s.find_first_of(":=", pick(s.size()));
      const std::string open = std::string(depth, '['), close = std::string(depth, ']');
      if (at == std::string::npos) return open + s;
      return s.substr(0, at + 1) + " " + open + "1" + (rng() % 2 ? close : "") + s.substr(at + 1);
    }
    default: {  // splice: a chunk copied elsewhere
      const size_t a = pick(s.size()), n = 1 + pick(std::min<size_t>(64, s.size() - a));
      return s.insert(pick(s.size()), s.substr(a, n));
    }
  }
  s[pick(s.size())] ^= 0x20;  // the kind did not apply: one flip
  return s;
}

// One format: its valid seed files, which file each mutant replaces, and its reader.
struct Format {
  std::string name;
  bool text = false;
  bool third_party = false;    // parsed by libhdf5 / sentencepiece: in a forked child
  bool reseal = false;         // h5_resealed: the mutant is sealed again
  std::string file;            // the valid file the mutants are made from
  std::function<Status(const std::string& mutant)> read;  // reads a mutant of `file` at that path
};

// The message with the scratch folder as <dir>, 16-hex-digit checksums as H and numbers as N.
std::string fold(std::string m, const std::string& dir) {
  for (size_t p; (p = m.find(dir)) != std::string::npos;) m.replace(p, dir.size(), "<dir>");
  std::string out;
  for (size_t i = 0; i < m.size();) {
    size_t hex = i;
    while (hex < m.size() && std::isxdigit(static_cast<unsigned char>(m[hex])) && !std::isupper(static_cast<unsigned char>(m[hex]))) ++hex;
    if (hex - i == 16) {
      out += 'H';
      i = hex;
    } else if (std::isdigit(static_cast<unsigned char>(m[i]))) {
      out += 'N';
      while (i < m.size() && (std::isalnum(static_cast<unsigned char>(m[i])) || m[i] == '.')) ++i;
    } else {
      out += m[i++];
    }
  }
  return out;
}

struct Tally {
  int64_t tried = 0, accepted = 0, rejected = 0, crashed = 0;
  std::map<std::string, int64_t> errors;
};

std::vector<Format> formats(const std::string& dir) {
  std::vector<Format> f;
  static LocalCommunicator world;
  static Mesh mesh = Mesh::create(world, MeshConfig{}).value();

  const std::string toml = dir + "/run.toml";
  spit(toml, to_toml(RunConfig{}));
  f.push_back({"toml", true, false, false, toml, [](const std::string& m) { return load_config(m).status(); }});

  CorpusConfig cc;
  cc.people = 10;
  cc.forget_fraction = 0.2;
  cc.passages_per_person = 1;
  Corpus corpus = generate_corpus(cc);
  const std::string corpus_dir = dir + "/corpus";
  (void)write_corpus(corpus, corpus_dir);
  f.push_back({"jsonl", true, false, false, corpus_dir + "/retain.jsonl", [corpus_dir](const std::string& m) {
                 CorpusConfig j;
                 j.source = "jsonl";
                 j.retain_file = m;
                 j.forget_file = corpus_dir + "/forget.jsonl";
                 j.retain_qa_file = corpus_dir + "/retain_qa.jsonl";
                 return load_corpus(j, "").status();
               }});

  const std::string cfg_json = dir + "/config.json";
  spit(cfg_json, hf_config_json(fuzz_model(), "bfloat16"));
  f.push_back({"config_json", true, false, false, cfg_json, [](const std::string& m) {
                 ModelConfig model;
                 return read_hf_config(m, model);
               }});

  const std::string st = dir + "/model.safetensors";
  (void)write_safetensors(st, {{"a", at::randn({3, 5})}, {"b", at::randn({7}).to(at::kBFloat16)}}, {{"format", "pt"}});
  f.push_back({"safetensors", false, false, false, st, [](const std::string& m) -> Status {
                 LETHE_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::open(m));
                 for (const SafetensorsEntry& e : file.entries()) {
                   if (static_cast<uint64_t>(file.read(e).nbytes()) != e.end - e.begin) return Status::error("read size differs");
                 }
                 return Status::ok();
               }});

  // A checkpoint of a small model's weights, as load_weights reads it.
  const std::string h5 = dir + "/step.h5";
  {
    Llama model(fuzz_model(), mesh, 1);
    H5File w = H5File::create(h5).value();
    (void)w.set_attr("format", "lethe-checkpoint");
    (void)w.set_attr("version", kCheckpointVersion);
    for (const Param& p : model.params()) (void)w.write_tensor("model/" + p.name, p.value);
    (void)w.write_string("config", "[run]\n");
    (void)w.close();
    (void)H5File::seal(h5);
  }
  auto read_h5 = [](const std::string& m) {
    Llama model(fuzz_model(), mesh, 2);
    return load_weights(m, model, mesh);
  };
  f.push_back({"h5", false, false, false, h5, read_h5});
  f.push_back({"h5_resealed", false, true, true, h5, read_h5});

  const std::string tok = dir + "/tokenizer.model";
  std::vector<std::string> texts;
  for (const Document& d : corpus.docs) texts.push_back(d.text);
  if (auto t = Tokenizer::train(texts, 512, tok); !t) std::fprintf(stderr, "tokenizer seed: %s\n", t.status().message().c_str());
  f.push_back({"tokenizer", false, true, false, tok, [](const std::string& m) -> Status {
                 LETHE_ASSIGN_OR_RETURN(Tokenizer t, Tokenizer::load(m));
                 return t.decode(t.encode("Ada Lovelace was born in 1815.")).empty() ? Status::error("empty decode") : Status::ok();
               }});
  return f;
}

bool read_exact(int fd, void* p, size_t n) {
  for (size_t done = 0; done < n;) {
    const ssize_t r = ::read(fd, static_cast<char*>(p) + done, n - done);
    if (r <= 0) return false;
    done += static_cast<size_t>(r);
  }
  return true;
}

// A forked child that reads mutants for a third-party parser one after another (a fork per input
// costs about 25 ms in a LibTorch process). When it crashes, the next input gets a new child.
class IsolatedReader {
 public:
  explicit IsolatedReader(const Format& f) : f_(f) {}
  ~IsolatedReader() { reap(); }
  // False when the child died on this input.
  bool read(const std::string& mutant, Status& out) {
    if (pid_ < 0 && !start()) return false;
    const uint32_t len = static_cast<uint32_t>(mutant.size());
    uint32_t n = 0;
    if (::write(cmd_, &len, 4) != 4 || ::write(cmd_, mutant.data(), len) != static_cast<ssize_t>(len) ||
        !read_exact(res_, &n, 4)) {
      reap();
      return false;
    }
    std::string msg(n, '\0');
    if (!read_exact(res_, msg.data(), n)) {
      reap();
      return false;
    }
    out = n == 0 ? Status::ok() : Status::error(msg);
    return true;
  }

 private:
  bool start() {
    int cmd[2], res[2];
    if (pipe(cmd) != 0 || pipe(res) != 0) return false;
    pid_ = fork();
    if (pid_ == 0) {
      close(cmd[1]);
      close(res[0]);
      for (uint32_t len = 0; read_exact(cmd[0], &len, 4);) {
        std::string path(len, '\0');
        if (!read_exact(cmd[0], path.data(), len)) break;
        const Status s = f_.read(path);
        const std::string msg = s ? std::string() : s.message().empty() ? "error" : s.message();
        const uint32_t n = static_cast<uint32_t>(msg.size());
        if (::write(res[1], &n, 4) != 4 || ::write(res[1], msg.data(), n) != static_cast<ssize_t>(n)) break;
      }
      _exit(0);
    }
    close(cmd[0]);
    close(res[1]);
    cmd_ = cmd[1];
    res_ = res[0];
    return pid_ > 0;
  }
  void reap() {
    if (pid_ < 0) return;
    close(cmd_);
    close(res_);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  const Format& f_;
  pid_t pid_ = -1;
  int cmd_ = -1, res_ = -1;
};

// Reads one kept input in this process (a reproducer: a crash shows its stack).
int replay(const std::string& which, const std::string& file) {
  const std::string dir = fs::temp_directory_path() / ("lethe-fuzz-" + std::to_string(getpid()));
  fs::create_directories(dir);
  for (const Format& f : formats(dir)) {
    if (f.name != which) continue;
    const std::string path = dir + "/replay-" + fs::path(f.file).filename().string();
    fs::copy_file(file, path, fs::copy_options::overwrite_existing);
    if (f.reseal) (void)H5File::seal(path);
    const Status s = f.read(path);
    std::printf("%s: %s\n", file.c_str(), s ? "accepted" : s.message().c_str());
  }
  fs::remove_all(dir);
  return 0;
}

int run(const std::string& which, int64_t inputs, uint64_t seed, const std::string& keep) {
  const std::string dir = fs::temp_directory_path() / ("lethe-fuzz-" + std::to_string(getpid()));
  fs::create_directories(dir);
  fs::create_directories(keep);
  int own_crashes = 0;
  for (const Format& f : formats(dir)) {
    if (which != "all" && which != f.name) continue;
    const std::string good = slurp(f.file);
    if (Status s = f.read(f.file); !s) {
      std::fprintf(stderr, "%s: the seed file does not read: %s\n", f.name.c_str(), s.message().c_str());
      return 2;
    }
    Tally t;
    IsolatedReader isolated(f);
    for (int64_t i = 0; i < inputs; ++i) {
      std::mt19937_64 rng(seed * 1000003 + static_cast<uint64_t>(i));
      std::string m = mutate(good, rng, f.text);
      if (rng() % 4 == 0) m = mutate(m, rng, f.text);  // sometimes two mutations
      while (m == good) m = mutate(m, rng, f.text);   // a replacement by the same bytes is no mutant
      // A new name per input: nothing a reader remembers about a path (a verified seal) carries over.
      const fs::path p(f.file);
      const std::string path = (p.parent_path() / (std::to_string(i) + "-" + p.filename().string())).string();
      spit(path, m);
      if (f.reseal) (void)H5File::seal(path);
      spit(keep + "/current", m);
      Status s = Status::ok();
      const bool survived = f.third_party ? isolated.read(path, s) : (s = f.read(path), true);
      fs::remove(path);
      ++t.tried;
      if (!survived) {
        ++t.crashed;
        spit(keep + "/" + f.name + "-crash-" + std::to_string(i), m);
      } else if (s) {
        ++t.accepted;
        if (f.name == "h5") spit(keep + "/h5-past-the-seal-" + std::to_string(i), m);  // must never happen
      } else {
        ++t.rejected;
        ++t.errors[fold(s.message(), dir)];
      }
    }
    std::printf("%s: %lld inputs, %lld accepted, %lld rejected, %lld crashed%s; %zu distinct errors\n", f.name.c_str(),
                static_cast<long long>(t.tried), static_cast<long long>(t.accepted), static_cast<long long>(t.rejected),
                static_cast<long long>(t.crashed), f.third_party ? " (inside the third-party parser)" : "", t.errors.size());
    for (const auto& [e, n] : t.errors) std::printf("  %6lld  %s\n", static_cast<long long>(n), e.c_str());
    if (f.name == "h5" && t.accepted > 0) {
      std::printf("FAIL: %lld mutated sealed checkpoints got past the seal\n", static_cast<long long>(t.accepted));
      ++own_crashes;
    }
    if (!f.third_party) own_crashes += static_cast<int>(t.crashed);
  }
  fs::remove_all(dir);
  return own_crashes == 0 ? 0 : 1;
}

}  // namespace
}  // namespace lethe

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: lethe_fuzz FORMAT INPUTS [SEED] [KEEP_DIR] | lethe_fuzz FORMAT replay FILE\n");
    return 2;
  }
  at::set_num_threads(1);  // the forked readers must not inherit a thread pool
  std::signal(SIGPIPE, SIG_IGN);  // a reader child that died is seen as a short write
  if (std::string(argv[2]) == "replay") return argc > 3 ? lethe::replay(argv[1], argv[3]) : 2;
  const std::string keep = argc > 4 ? argv[4] : "fuzz-findings";
  return lethe::run(argv[1], std::atoll(argv[2]), argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1, keep);
}

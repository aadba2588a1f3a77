#include "runtime/hf_checkpoint.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <xxhash.h>

#include "base/check.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "runtime/checkpoint.h"
#include "runtime/tp_ops.h"

namespace lethe {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Lethe name (after "layers.<i>." for per-layer ones) → Hugging Face LlamaForCausalLM name.
constexpr std::pair<const char*, const char*> kHfNames[] = {
    {"embed", "model.embed_tokens.weight"},
    {"norm", "model.norm.weight"},
    {"lm_head", "lm_head.weight"},
    {"attn_norm", "input_layernorm.weight"},
    {"attn.wq", "self_attn.q_proj.weight"},
    {"attn.wk", "self_attn.k_proj.weight"},
    {"attn.wv", "self_attn.v_proj.weight"},
    {"attn.wo", "self_attn.o_proj.weight"},
    {"mlp_norm", "post_attention_layernorm.weight"},
    {"mlp.w_gate", "mlp.gate_proj.weight"},
    {"mlp.w_up", "mlp.up_proj.weight"},
    {"mlp.w_down", "mlp.down_proj.weight"},
};

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

// Tensor name → file (relative to the folder), from the index or the single file's header.
Result<std::map<std::string, std::string>> weight_map(const std::string& dir) {
  std::map<std::string, std::string> m;
  const std::string index = dir + "/model.safetensors.index.json";
  if (fs::exists(index)) {
    std::ifstream in(index);
    const json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      return Status::error(index + ": expected a JSON object with a weight_map object");
    }
    for (const auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos) {
        return Status::error(index + ": weight_map." + name + " must name a file in the same folder");
      }
      m[name] = file.get<std::string>();
    }
    return m;
  }
  LETHE_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open(dir + "/model.safetensors"));
  for (const auto& e : f.entries()) m[e.name] = "model.safetensors";
  return m;
}

// PEFT's name of a Lethe adapter ("layers.0.attn.wq.lora_a" → "base_model.model.model.layers.0.
// self_attn.q_proj.lora_A.weight").
std::string peft_name(const std::string& adapter) {
  const size_t dot = adapter.rfind('.');
  std::string module = hf_name(adapter.substr(0, dot));
  module.resize(module.size() - std::string(".weight").size());
  return "base_model.model." + module + (adapter.substr(dot + 1) == "lora_a" ? ".lora_A.weight" : ".lora_B.weight");
}

const std::map<std::string, std::string>& peft_modules() {  // Lethe target → PEFT target module
  static const std::map<std::string, std::string> m = {{"q", "q_proj"}, {"k", "k_proj"},       {"v", "v_proj"},
                                                       {"o", "o_proj"}, {"gate", "gate_proj"}, {"up", "up_proj"},
                                                       {"down", "down_proj"}};
  return m;
}

}  // namespace

std::string hf_name(const std::string& name) {
  std::string prefix, rest = name;
  if (name.rfind("layers.", 0) == 0) {
    const size_t dot = name.find('.', 7);
    prefix = "model." + name.substr(0, dot + 1);
    rest = name.substr(dot + 1);
  }
  for (const auto& [lethe, hf] : kHfNames) {
    if (rest == lethe) return prefix + hf;
  }
  LETHE_CHECK_MSG(false, "no Hugging Face name for parameter " + name);
  return "";
}

bool is_hf_dir(const std::string& path) {
  return fs::is_directory(path) && fs::exists(path + "/config.json") &&
         (fs::exists(path + "/model.safetensors") || fs::exists(path + "/model.safetensors.index.json"));
}

Status load_hf_weights(const std::string& dir, Llama& model) {
  LETHE_ASSIGN_OR_RETURN(auto files, weight_map(dir));
  std::map<std::string, SafetensorsFile> open;
  const int tp = model.mesh().tp_size(), r = model.mesh().tp_rank();
  // All or nothing: every name, file and shape is checked (and every file's header validated by
  // open) before the first parameter changes; then each slice is read and copied in turn, so the
  // import needs this rank's shard plus one slice, never the file.
  std::vector<std::pair<const SafetensorsFile*, const SafetensorsEntry*>> found;
  for (const Param& p : model.params()) {
    const std::string name = hf_name(p.name);
    auto f = files.find(name);
    if (f == files.end()) return Status::error(dir + ": tensor " + name + " (Lethe " + p.name + ") is missing");
    if (!open.count(f->second)) {
      LETHE_ASSIGN_OR_RETURN(SafetensorsFile st, SafetensorsFile::open(dir + "/" + f->second));
      open.emplace(f->second, std::move(st));
    }
    const SafetensorsFile& st = open.at(f->second);
    const SafetensorsEntry* e = st.find(name);
    if (!e) return Status::error(st.path() + ": tensor " + name + " is not in the file the index names");
    if (e->shape != p.global_shape) {
      return Status::error(st.path() + ": tensor " + name + " has shape " + shape_text(e->shape) + ", the model expects " +
                           shape_text(p.global_shape) + " (does config.json match the weights?)");
    }
    found.emplace_back(&st, e);
  }
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < found.size(); ++i) {
    Param& p = model.params()[i];
    const auto [st, e] = found[i];
    const int64_t n = p.split_dim < 0 ? 0 : p.global_shape[p.split_dim] / tp;
    p.value.copy_(p.split_dim < 0 ? st->read(*e) : st->read(*e, p.split_dim, r * n, n));
  }
  return Status::ok();
}

Status export_hf(const Llama& model, const std::string& dir, int64_t shard_bytes, at::ScalarType dtype) {
  const Mesh& mesh = model.mesh();
  const bool writer = mesh.world().rank() == 0;
  const char* torch_dtype = dtype == at::kFloat ? "float32" : dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kHalf ? "float16" : nullptr;
  if (!torch_dtype) return Status::error(std::string("export dtype ") + c10::toString(dtype) + ": expected F32, BF16 or F16");
  std::error_code ec;
  if (writer) fs::create_directories(dir, ec);
  if (ec) return Status::error(dir + ": cannot create: " + ec.message());
  // Note [Streaming export]: shards are planned from the parameters' shapes before any data moves
  // (filled in parameter order; a new shard when the next tensor would overflow the current one),
  // so each shard's header is written first and every tensor is gathered, appended and freed in
  // turn: rank 0 holds one gathered tensor (and its converted copy) at a time.
  std::vector<std::vector<SafetensorsLayout>> shards(1);
  std::vector<size_t> shard_of;
  int64_t filled = 0, total = 0;
  const int64_t element = static_cast<int64_t>(c10::elementSize(dtype));
  for (const Param& p : model.params()) {
    int64_t bytes = element;
    for (int64_t d : p.global_shape) bytes *= d;
    if (filled > 0 && filled + bytes > shard_bytes) {
      shards.emplace_back();
      filled = 0;
    }
    shards.back().push_back({hf_name(p.name), dtype, p.global_shape});
    shard_of.push_back(shards.size() - 1);
    filled += bytes;
    total += bytes;
  }
  auto hf_file = [&](size_t k) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", k + 1, shards.size());
    return std::string(buf);
  };
  json weight_map = json::object();
  std::optional<SafetensorsWriter> out;
  Status written = Status::ok();
  const auto& params = model.params();
  for (size_t i = 0; i < params.size(); ++i) {
    const Param& p = params[i];
    at::Tensor full = p.value.detach();
    if (p.split_dim >= 0 && mesh.tp_size() > 1) full = all_gather_dim(full, p.split_dim, mesh.tp());
    if (!writer || !written) continue;  // after a failed write rank 0 still joins every gather
    written = [&]() -> Status {
      const size_t k = shard_of[i];
      if (i == 0 || k != shard_of[i - 1]) {
        if (out) LETHE_RETURN_IF_ERROR(out->close());
        LETHE_ASSIGN_OR_RETURN(SafetensorsWriter w, SafetensorsWriter::create(dir + "/" + hf_file(k), shards[k], {{"format", "pt"}}));
        out.emplace(std::move(w));
      }
      weight_map[hf_name(p.name)] = hf_file(k);
      return out->append(full.to(at::kCPU, dtype));
    }();
  }
  if (!writer) return Status::ok();
  LETHE_RETURN_IF_ERROR(written);
  if (out) LETHE_RETURN_IF_ERROR(out->close());
  const json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  LETHE_RETURN_IF_ERROR(write_file_atomic(dir + "/model.safetensors.index.json", index.dump(2) + "\n"));
  return write_file_atomic(dir + "/config.json", hf_config_json(model.config(), torch_dtype));
}

Result<uint64_t> hf_checksum(const std::string& dir) {
  std::vector<std::string> files = {dir + "/config.json"};
  std::vector<std::string> tensors;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".safetensors") tensors.push_back(e.path().string());
  }
  std::sort(tensors.begin(), tensors.end());
  files.insert(files.end(), tensors.begin(), tensors.end());
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st(XXH3_createState(), XXH3_freeState);
  XXH3_64bits_reset(st.get());
  std::vector<char> buf(16 << 20);
  for (const std::string& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return Status::error(file + ": cannot open to checksum the base");
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      XXH3_64bits_update(st.get(), buf.data(), static_cast<size_t>(in.gcount()));
    }
    if (in.bad()) return Status::error(file + ": read error while checksumming the base");
  }
  return static_cast<uint64_t>(XXH3_64bits_digest(st.get()));
}

bool is_peft_dir(const std::string& path) {
  return fs::is_directory(path) && fs::exists(path + "/adapter_config.json") &&
         fs::exists(path + "/adapter_model.safetensors");
}

Result<AdapterSource> read_peft_source(const std::string& dir) {
  const std::string path = dir + "/adapter_config.json";
  std::ifstream in(path);
  const json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Status::error(path + ": not a JSON object");
  auto need = [&](const char* key, json::value_t type) -> Status {
    if (!j.contains(key)) return Status::error(path + ": key \"" + key + "\" is missing");
    const json& v = j[key];
    const bool ok = type == json::value_t::number_float ? v.is_number() : v.type() == type;
    return ok ? Status::ok() : Status::error(path + ": key \"" + key + "\" has the wrong type");
  };
  LETHE_RETURN_IF_ERROR(need("peft_type", json::value_t::string));
  if (j["peft_type"] != "LORA") return Status::error(path + ": peft_type " + j["peft_type"].dump() + ", expected \"LORA\"");
  LETHE_RETURN_IF_ERROR(need("r", json::value_t::number_unsigned));
  LETHE_RETURN_IF_ERROR(need("lora_alpha", json::value_t::number_float));
  LETHE_RETURN_IF_ERROR(need("target_modules", json::value_t::array));
  LETHE_RETURN_IF_ERROR(need("base_model_name_or_path", json::value_t::string));
  if (j.contains("bias") && j["bias"] != "none") return Status::error(path + ": bias " + j["bias"].dump() + ": Lethe adapters have none (\"none\")");
  AdapterSource src;
  src.lora.rank = j["r"].get<int64_t>();
  if (src.lora.rank <= 0) return Status::error(path + ": r must be positive");
  src.lora.alpha = j["lora_alpha"].get<double>();
  src.lora.dropout = j.contains("lora_dropout") && j["lora_dropout"].is_number() ? j["lora_dropout"].get<double>() : 0.0;
  for (const json& m : j["target_modules"]) {
    std::string found;
    for (const auto& [target, module] : peft_modules()) {
      if (m.is_string() && m.get<std::string>() == module) found = target;
    }
    if (found.empty()) {
      return Status::error(path + ": target module " + m.dump() + " is not a Llama projection Lethe adapts " +
                           "(q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
    }
    src.lora.targets.push_back(found);
  }
  src.base = j["base_model_name_or_path"].get<std::string>();
  if (!src.base.empty() && src.base[0] != '/') src.base = (fs::path(dir) / src.base).lexically_normal().string();
  LETHE_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open(dir + "/adapter_model.safetensors"));
  auto sum = f.metadata().find("lethe_base_checksum");
  if (sum != f.metadata().end()) {
    const std::string& v = sum->second;
    if (std::from_chars(v.data(), v.data() + v.size(), src.base_checksum).ec != std::errc()) {
      return Status::error(f.path() + ": metadata lethe_base_checksum \"" + v + "\" is not a number");
    }
  }
  return src;
}

Status load_peft_adapters(const std::string& dir, Llama& model) {
  LETHE_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open(dir + "/adapter_model.safetensors"));
  const int tp = model.mesh().tp_size(), r = model.mesh().tp_rank();
  std::vector<const SafetensorsEntry*> found;
  for (const Param& p : model.trained()) {
    const std::string name = peft_name(p.name);
    const SafetensorsEntry* e = f.find(name);
    if (!e) return Status::error(f.path() + ": tensor " + name + " (Lethe " + p.name + ") is missing");
    if (e->shape != p.global_shape) {
      return Status::error(f.path() + ": tensor " + name + " has shape " + shape_text(e->shape) + ", the base model expects " +
                           shape_text(p.global_shape) + " (adapters of another base, or another lora rank?)");
    }
    found.push_back(e);
  }
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < found.size(); ++i) {
    Param& p = model.trained()[i];
    const int64_t n = p.split_dim < 0 ? 0 : p.global_shape[p.split_dim] / tp;
    p.value.copy_(p.split_dim < 0 ? f.read(*found[i]) : f.read(*found[i], p.split_dim, r * n, n));
  }
  return Status::ok();
}

Status export_peft(const Llama& model, const std::string& dir, const std::string& base, uint64_t base_checksum) {
  const Mesh& mesh = model.mesh();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const Param& p : model.adapters()) {
    at::Tensor full = p.value.detach();
    if (p.split_dim >= 0 && mesh.tp_size() > 1) full = all_gather_dim(full, p.split_dim, mesh.tp());
    tensors.emplace_back(peft_name(p.name), full.to(at::kCPU));
  }
  if (mesh.world().rank() != 0) return Status::ok();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::error(dir + ": cannot create: " + ec.message());
  LETHE_RETURN_IF_ERROR(write_safetensors(dir + "/adapter_model.safetensors", tensors,
                                          {{"format", "pt"}, {"lethe_base", base},
                                           {"lethe_base_checksum", std::to_string(base_checksum)}}));
  json modules = json::array();
  for (const std::string& t : model.lora().targets) modules.push_back(peft_modules().at(t));
  const json config = {{"peft_type", "LORA"},
                       {"task_type", "CAUSAL_LM"},
                       {"r", model.lora().rank},
                       {"lora_alpha", model.lora().alpha},
                       {"lora_dropout", model.lora().dropout},
                       {"target_modules", modules},
                       {"bias", "none"},
                       {"fan_in_fan_out", false},
                       {"inference_mode", true},
                       {"base_model_name_or_path", base}};
  return write_file_atomic(dir + "/adapter_config.json", config.dump(2) + "\n");
}

}  // namespace lethe

#include "runtime/mesh.h"

#include <string>

namespace lethe {

Result<Mesh> Mesh::create(Communicator& world, const MeshConfig& cfg, at::Device device) {
  if (cfg.tp * cfg.dp != world.size()) {
    return Status::error("mesh.tp (" + std::to_string(cfg.tp) + ") × mesh.dp (" + std::to_string(cfg.dp) +
                         ") must equal the number of ranks (" + std::to_string(world.size()) + ")");
  }
  const int tp = static_cast<int>(cfg.tp);
  Mesh m;
  m.world_ = &world;
  m.cfg_ = cfg;
  m.device_ = device;
  m.tp_ = world.split(/*color=*/world.rank() / tp, /*key=*/world.rank() % tp);
  m.dp_ = world.split(/*color=*/world.rank() % tp, /*key=*/world.rank() / tp);
  return m;
}

Status Mesh::check_model(const ModelConfig& m) const { return check_model_for_tp(m, tp_size()); }

Status check_model_for_tp(const ModelConfig& m, int64_t tp) {
  const std::pair<const char*, int64_t> sizes[] = {{"num_attention_heads", m.num_attention_heads},
                                                   {"num_key_value_heads", m.num_key_value_heads},
                                                   {"vocab_size", m.vocab_size},
                                                   {"intermediate_size", m.intermediate_size}};
  for (auto [name, v] : sizes) {
    if (v % tp != 0) {
      return Status::error(std::string("model.") + name + " (" + std::to_string(v) +
                           ") is not divisible by mesh.tp (" + std::to_string(tp) + ")");
    }
  }
  return Status::ok();
}

}  // namespace lethe

// Shared test helpers: scratch folders and a tiny run config.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <c10/core/Device.h>

#include "collectives/communicator.h"
#include "io/config.h"
#include "runtime/model.h"

namespace lethe::test {

// A fresh, empty folder under the system temp dir, unique per test.
std::string scratch_dir(const std::string& name);
// The same, shared by every rank of `world` (collective; rank 0 creates it).
std::string shared_scratch_dir(const std::string& name, Communicator& world);

// This process's world (init_world once): the local backend without mpirun, MPI under it. Tests of
// the Distributed suite run under `mpirun -np 2/4` from ctest and skip at a world of one.
Communicator& test_world();
// Where collectives tests put their tensors: this rank's GPU under the NCCL backend, else the CPU.
at::Device test_device();
// A test process that cannot run here (LETHE_COMM=nccl without a GPU) exits with this code, which
// ctest reports as skipped (SKIP_RETURN_CODE).
inline constexpr int kSkipExitCode = 77;

// A one-layer GQA model of 30 tokens, d 16: for tests of the model's mechanics.
ModelConfig small_model();

// A config that trains in seconds: 12 people, a 2-layer GQA model, 64-token rows.
RunConfig tiny_config(const std::string& dir);

// tests/data/hf-tiny-llama: the Hugging Face fixture (scripts/make_hf_fixture.py).
std::string hf_fixture_dir();
// The fixture's model, loaded for `mesh` (nullptr after a test failure).
std::unique_ptr<Llama> load_hf_fixture(const Mesh& mesh);
// The fixture's logits for its token rows against expected_logits.json (1e-4 absolute).
void expect_fixture_logits(const Llama& model);

// A JSON file, and a JSON-lines file as one value per line (tests fail loudly on bad JSON).
nlohmann::json read_json(const std::string& path);
std::vector<nlohmann::json> read_jsonl(const std::string& path);
// Keys of reports and metrics records that hold wall time or memory, which no two runs share.
bool is_timing_key(const std::string& key);

}  // namespace lethe::test

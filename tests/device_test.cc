// Device placement (run.device): how the choice resolves, and a run on CUDA against the same run on
// the CPU (skipped where this build or machine has no GPU).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include "collectives/local_communicator.h"
#include "collectives/nccl_communicator.h"
#include "collectives/world.h"
#include "io/config.h"
#include "runtime/trainer.h"

namespace lethe {
namespace {

World world_of_one() {
  World w{std::make_unique<LocalCommunicator>()};
  w.device = cuda_device_count() > 0 ? 0 : -1;
  return w;
}

bool have_cuda() { return at::hasCUDA() && cuda_device_count() > 0; }

TEST(Device, ChoicesResolve) {
  const World w = world_of_one();
  EXPECT_TRUE(resolve_device("cpu", w).value().is_cpu());
  EXPECT_EQ(resolve_device("auto", w).value().is_cuda(), have_cuda());
  const Result<at::Device> cuda = resolve_device("cuda", w);
  EXPECT_EQ(cuda.is_ok(), have_cuda());
  if (!cuda.is_ok()) {
    EXPECT_NE(cuda.status().message().find("run.device = \"cuda\""), std::string::npos) << cuda.status().message();
  }
  EXPECT_FALSE(resolve_device("tpu", w).is_ok());
  EXPECT_FALSE(parse_config("[run]\ndevice = \"tpu\"\n", "x.toml").is_ok());
  EXPECT_EQ(parse_config("[run]\ndevice = \"cpu\"\n", "x.toml").value().run.device, "cpu");
}

TEST(Device, CudaTrainingMatchesCpu) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device in this build or on this machine";
  LocalCommunicator world;
  Mesh cpu = Mesh::create(world, MeshConfig{}).value();
  Mesh gpu = Mesh::create(world, MeshConfig{}, at::Device(at::kCUDA, 0)).value();
  ModelConfig m;
  m.vocab_size = 64, m.hidden_size = 32, m.intermediate_size = 64, m.num_hidden_layers = 2;
  m.num_attention_heads = 4, m.num_key_value_heads = 2, m.max_position_embeddings = 32;
  TokenDataset ds;
  ds.name = "random", ds.seq_len = 16;
  ds.tokens = at::randint(0, 64, {8, 17}, at::kLong);
  ds.segments = at::cat({at::zeros({8, 9}, at::kLong), at::ones({8, 8}, at::kLong)}, 1);  // two samples per row
  ds.positions = at::cat({at::arange(9, at::kLong), at::arange(8, at::kLong)}).unsqueeze(0).repeat({8, 1});
  ds.sample_ids.assign(8, "s");
  TrainConfig tc;
  tc.batch_size = 4, tc.warmup_steps = 0, tc.lr = 1e-2, tc.activation_checkpointing = true;
  Llama on_cpu(m, cpu, 3), on_gpu(m, gpu, 3);
  on_cpu.set_activation_checkpointing(true);
  on_gpu.set_activation_checkpointing(true);
  ASSERT_TRUE(on_gpu.params()[0].value.is_cuda());
  Trainer a(on_cpu, cpu, tc, ds, 5), b(on_gpu, gpu, tc, ds, 5);
  for (int step = 0; step < 3; ++step) {
    const StepStats sa = a.step(), sb = b.step();
    EXPECT_NEAR(sa.loss(), sb.loss(), 1e-4 * std::abs(sa.loss())) << "step " << step;
    EXPECT_NEAR(sa.grad_norm(), sb.grad_norm(), 1e-3 * sa.grad_norm()) << "step " << step;
  }
  for (size_t i = 0; i < on_cpu.params().size(); ++i) {
    EXPECT_TRUE(at::allclose(on_cpu.params()[i].value, on_gpu.params()[i].value.cpu(), 1e-4, 1e-5))
        << on_cpu.params()[i].name;
  }
}

}  // namespace
}  // namespace lethe

#include "collectives/nccl_communicator.h"

#include <ATen/ATen.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <cstdlib>
#include <chrono>
#include <deque>
#include <mutex>
#include <thread>

#include "base/check.h"
#include "base/deadline.h"
#include "collectives/mpi_communicator.h"

namespace lethe {

namespace {

using Clock = std::chrono::steady_clock;

// Note [NCCL stream]: blocking operations are enqueued on the legacy default stream (stream 0), which
// is the stream LibTorch runs its kernels on unless a caller switches streams (Lethe never does). So
// a collective starts after the kernels that produced its input and the kernels that read its
// result start after it, with no host synchronisation; a host read of the result (`.item()`,
// `.cpu()`) waits for it as for any kernel.
// all_reduce_async (the gradient buckets that overlap backward) runs on the communicator's own
// stream instead, created non-blocking so that it has no implicit order with stream 0: an event
// recorded on stream 0 makes it start after the bucket was filled, and wait() makes stream 0 wait
// for its completion event, so the host never blocks and backward kernels run alongside it.
// Between a bucket's start and its wait nothing else is issued on that (dp) communicator, so its
// operations are never outstanding on both streams at once; tp collectives during backward use
// another communicator.
cudaStream_t stream() { return nullptr; }

void check_cuda(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) fatal(__FILE__, __LINE__, what + ": " + cudaGetErrorString(e));
}

ncclDataType_t nccl_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kBFloat16: return ncclBfloat16;
    case at::kHalf: return ncclFloat16;
    case at::kLong: return ncclInt64;
    case at::kInt: return ncclInt32;
    case at::kByte: case at::kBool: return ncclUint8;
    case at::kChar: return ncclInt8;
    default: LETHE_CHECK_MSG(false, std::string("no NCCL type for ") + c10::toString(t));
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::kMax ? ncclMax : op == ReduceOp::kAvg ? ncclAvg : ncclSum; }

const char* op_name(ReduceOp op) { return op == ReduceOp::kSum ? "sum" : op == ReduceOp::kAvg ? "avg" : "max"; }

bool is_16bit_float(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf; }

// Note [NCCL deadline]: NCCL calls return once enqueued, so a dead peer shows up as a kernel that
// never finishes. After each operation an event is recorded; a watchdog thread polls the pending
// events and the communicator's asynchronous error, and when an event is still pending past
// run.collective_timeout_s, or NCCL reports an error, it aborts the NCCL communicator
// (ncclCommAbort, which NCCL allows from another thread and which frees the kernels stuck on it)
// and ends the process with the rank and the operation (exit_from_thread: no MPI call off the main
// thread, Note [Watchdog]) — the same contract as the MPI backend.
class Watch {
 public:
  Watch(ncclComm_t comm, int device, std::string who)
      : comm_(comm), device_(device), who_(std::move(who)), thread_([this] { loop(); }) {}
  ~Watch() {
    stop_ = true;
    thread_.join();
    for (const Pending& p : pending_) cudaEventDestroy(p.event);
  }
  void add(std::string what, double timeout_s, cudaStream_t on) {
    cudaEvent_t ev;
    check_cuda(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreate");
    check_cuda(cudaEventRecord(ev, on), "cudaEventRecord");
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back({ev, std::move(what), Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                                 std::chrono::duration<double>(timeout_s))});
  }

 private:
  struct Pending {
    cudaEvent_t event;
    std::string what;
    Clock::time_point deadline;
  };
  void loop() {
    cudaSetDevice(device_);
    while (!stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      ncclResult_t async = ncclSuccess;
      if (ncclResult_t r = ncclCommGetAsyncError(comm_, &async); r != ncclSuccess) async = r;
      std::lock_guard<std::mutex> lock(mu_);
      if (async != ncclSuccess && async != ncclInProgress) {
        fail((pending_.empty() ? who_ + "NCCL" : pending_.front().what) + " failed: " + ncclGetErrorString(async) +
             " (" + ncclGetLastError(comm_) + ")");
      }
      while (!pending_.empty()) {
        const Pending& p = pending_.front();
        const cudaError_t e = cudaEventQuery(p.event);
        if (e == cudaErrorNotReady) {
          if (Clock::now() > p.deadline) fail(p.what + " did not complete within the timeout (run.collective_timeout_s): "
                                                       "a peer rank died, hung or issued a different collective");
          break;
        }
        if (e != cudaSuccess) fail(p.what + ": " + cudaGetErrorString(e));
        cudaEventDestroy(p.event);
        pending_.pop_front();
      }
    }
  }
  [[noreturn]] void fail(const std::string& message) {
    ncclCommAbort(comm_);
    exit_from_thread(rank_of(who_), "fatal: " + message);
  }
  static int rank_of(const std::string& who) { return std::atoi(who.c_str() + who.find(' ') + 1); }
  ncclComm_t comm_;
  int device_;
  std::string who_;
  std::mutex mu_;
  std::deque<Pending> pending_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Completion of an all_reduce_async: stream 0 waits for the event recorded after it on the
// communication stream (Note [NCCL stream]).
class StreamPending final : public PendingCollective {
 public:
  explicit StreamPending(cudaEvent_t done) : done_(done) {}
  ~StreamPending() override { wait(); }
  void wait() override {
    if (!done_) return;
    check_cuda(cudaStreamWaitEvent(stream(), done_, 0), "cudaStreamWaitEvent");
    cudaEventDestroy(done_);
    done_ = nullptr;
  }

 private:
  cudaEvent_t done_;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Communicator> host, ncclComm_t comm, int device, double timeout_s)
      : host_(std::move(host)), comm_(comm), device_(device), timeout_s_(timeout_s),
        watch_(std::make_unique<Watch>(comm, device, prefix())) {
    check_cuda(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking), prefix() + "cudaStreamCreate");
  }
  // Never hangs: work still pending after the timeout (a failed peer) is aborted, not awaited.
  ~NcclCommunicator() override {
    const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
    bool drained = false;
    while (!(drained = cudaStreamQuery(side_) == cudaSuccess && cudaStreamQuery(stream()) == cudaSuccess) &&
           Clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    watch_.reset();
    if (drained) {
      cudaStreamDestroy(side_);
      ncclCommDestroy(comm_);
    } else {
      ncclCommAbort(comm_);
    }
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string backend() const override { return "nccl"; }
  Communicator& host() override { return *host_; }
  IoChannel io() override { return host_->io(); }

  void all_reduce(at::Tensor& t, ReduceOp op) override {
    if (t.is_cpu()) return host_->all_reduce(t, op);
    LETHE_CHECK(t.is_contiguous());
    LETHE_CHECK_MSG(op != ReduceOp::kAvg || at::isFloatingType(t.scalar_type()), "all_reduce(avg) needs a float tensor");
    if (is_16bit_float(t)) {  // reduced in fp32, as the contract says
      at::Tensor f = t.to(at::kFloat);
      all_reduce(f, op);
      t.copy_(f);
      return;
    }
    const std::string what = std::string("all_reduce(") + op_name(op) + ")";
    check(ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), nccl_op(op), comm_, stream()),
          what, t.nbytes());
  }

  std::unique_ptr<PendingCollective> all_reduce_async(at::Tensor& t, ReduceOp op) override {
    if (t.is_cpu() || is_16bit_float(t)) return Communicator::all_reduce_async(t, op);  // completes now
    LETHE_CHECK(t.is_contiguous());
    LETHE_CHECK_MSG(op != ReduceOp::kAvg || at::isFloatingType(t.scalar_type()), "all_reduce(avg) needs a float tensor");
    cudaEvent_t ready, done;
    check_cuda(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), prefix() + "cudaEventCreate");
    check_cuda(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), prefix() + "cudaEventCreate");
    check_cuda(cudaEventRecord(ready, stream()), prefix() + "cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(side_, ready, 0), prefix() + "cudaStreamWaitEvent");
    cudaEventDestroy(ready);
    const std::string what = std::string("all_reduce_async(") + op_name(op) + ")";
    check(ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), nccl_op(op), comm_, side_),
          what, t.nbytes(), side_);
    check_cuda(cudaEventRecord(done, side_), prefix() + "cudaEventRecord");
    return std::make_unique<StreamPending>(done);
  }

  void all_gather(at::Tensor& out, const at::Tensor& in) override {
    if (in.is_cpu() && out.is_cpu()) return host_->all_gather(out, in);
    LETHE_CHECK(out.is_contiguous() && in.is_contiguous() && out.scalar_type() == in.scalar_type() &&
                out.device() == in.device());
    LETHE_CHECK_MSG(out.numel() == in.numel() * size(), "all_gather: out must hold size() × in");
    check(ncclAllGather(in.data_ptr(), out.data_ptr(), in.numel(), nccl_type(in.scalar_type()), comm_, stream()),
          "all_gather", out.nbytes());
  }

  void reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) override {
    if (in.is_cpu() && out.is_cpu()) return host_->reduce_scatter(out, in, op);
    LETHE_CHECK(out.is_contiguous() && in.is_contiguous() && out.scalar_type() == in.scalar_type() &&
                out.device() == in.device());
    LETHE_CHECK_MSG(in.numel() == out.numel() * size(), "reduce_scatter: in must hold size() × out");
    if (is_16bit_float(in)) {
      at::Tensor f = at::empty(out.sizes(), out.options().dtype(at::kFloat));
      reduce_scatter(f, in.to(at::kFloat), op);
      out.copy_(f);
      return;
    }
    const std::string what = std::string("reduce_scatter(") + op_name(op) + ")";
    check(ncclReduceScatter(in.data_ptr(), out.data_ptr(), out.numel(), nccl_type(in.scalar_type()), nccl_op(op), comm_,
                            stream()),
          what, in.nbytes());
  }

  void broadcast(at::Tensor& t, int root) override {
    if (t.is_cpu()) return host_->broadcast(t, root);
    LETHE_CHECK(t.is_contiguous() && root >= 0 && root < size());
    check(ncclBroadcast(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), root, comm_, stream()),
          "broadcast", t.nbytes());
  }

  // Device work enqueued before the barrier completes first (the watchdog bounds the wait), then
  // the ranks meet on the host.
  void barrier() override {
    check_cuda(cudaStreamSynchronize(side_), prefix() + "barrier");
    check_cuda(cudaStreamSynchronize(stream()), prefix() + "barrier");
    host_->barrier();
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    std::unique_ptr<Communicator> host = host_->split(color, key);
    ncclComm_t sub = nullptr;
    check(ncclCommSplit(comm_, color, key, &sub, nullptr), "ncclCommSplit", 0);
    return std::make_unique<NcclCommunicator>(std::move(host), sub, device_, timeout_s_);
  }

 private:
  std::string prefix() const {
    return "rank " + std::to_string(rank()) + " of " + std::to_string(size()) + " (nccl, cuda:" +
           std::to_string(device_) + "): ";
  }
  // An enqueue error is fatal at once; a completed enqueue is handed to the watchdog.
  void check(ncclResult_t r, const std::string& op, size_t bytes, cudaStream_t on = stream()) {
    const std::string what = prefix() + op + " of " + std::to_string(bytes) + " bytes";
    if (r != ncclSuccess) {
      const std::string why = ncclGetErrorString(r) + std::string(" (") + ncclGetLastError(comm_) + ")";
      ncclCommAbort(comm_);  // peers blocked on this communicator are released
      fatal(__FILE__, __LINE__, what + " failed: " + why);
    }
    watch_->add(what, timeout_s_, on);
  }

  std::unique_ptr<Communicator> host_;
  ncclComm_t comm_;
  int device_;
  double timeout_s_;
  std::unique_ptr<Watch> watch_;
  cudaStream_t side_ = nullptr;  // all_reduce_async's stream (Note [NCCL stream])
};

}  // namespace

int cuda_device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

Result<std::unique_ptr<Communicator>> make_nccl_communicator(MPI_Comm comm, int local_rank, double timeout_s) {
  const int devices = cuda_device_count();
  if (devices == 0) return Status::error("the NCCL backend needs a CUDA device, and this process sees none");
  MPI_Comm dup;
  if (MPI_Comm_dup(comm, &dup) != MPI_SUCCESS) return Status::error("MPI_Comm_dup failed (NCCL backend's host communicator)");
  auto host = std::make_unique<MpiCommunicator>(dup, timeout_s);
  const int device = local_rank % devices;
  if (cudaSetDevice(device) != cudaSuccess) return Status::error("cudaSetDevice(" + std::to_string(device) + ") failed");
  ncclUniqueId id;
  if (host->rank() == 0 && ncclGetUniqueId(&id) != ncclSuccess) return Status::error("ncclGetUniqueId failed");
  at::Tensor bytes = at::from_blob(id.internal, {static_cast<int64_t>(sizeof(id.internal))}, at::kByte);
  host->broadcast(bytes, 0);
  ncclComm_t nccl = nullptr;
  if (ncclResult_t r = ncclCommInitRank(&nccl, host->size(), id, host->rank()); r != ncclSuccess) {
    return Status::error("ncclCommInitRank on rank " + std::to_string(host->rank()) + " (cuda:" + std::to_string(device) +
                         "): " + ncclGetErrorString(r));
  }
  return std::unique_ptr<Communicator>(std::make_unique<NcclCommunicator>(std::move(host), nccl, device, timeout_s));
}

}  // namespace lethe

#include "collectives/mpi_communicator.h"

#include <ATen/ATen.h>

#include "base/check.h"
#include "base/deadline.h"

namespace lethe {

namespace {

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM; }

bool is_16bit_float(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
}

const char* op_name(ReduceOp op) { return op == ReduceOp::kSum ? "sum" : op == ReduceOp::kAvg ? "avg" : "max"; }

int checked_count(int64_t n, const char* op) {
  LETHE_CHECK_MSG(n <= INT32_MAX, std::string(op) + ": more than 2^31 elements per rank");
  return static_cast<int>(n);
}

}  // namespace

MPI_Datatype mpi_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kLong: return MPI_INT64_T;
    case at::kInt: return MPI_INT32_T;
    case at::kByte: case at::kBool: return MPI_UINT8_T;
    case at::kChar: return MPI_INT8_T;
    case at::kBFloat16: case at::kHalf: return MPI_UINT16_T;
    default: LETHE_CHECK_MSG(false, std::string("no MPI type for ") + c10::toString(t));
  }
  return MPI_DATATYPE_NULL;
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, double timeout_s) : comm_(comm), timeout_s_(timeout_s) {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
}

void MpiCommunicator::check(int rc, const char* op) const {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  fatal(__FILE__, __LINE__, "rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ": " + op +
                                " failed: " + std::string(text, len));
}

// Note [Collective deadline]: every operation is MPI's blocking call under a Deadline (Note
// [Watchdog] in base/deadline.cc): past run.collective_timeout_s the watchdog names this rank and
// the operation and ends the process, and the launcher ends the job.
void MpiCommunicator::run(const std::string& op, int64_t bytes, const std::function<int()>& call) const {
  int rc = MPI_SUCCESS;
  {
    Deadline d("rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ": " + op + " of " +
                   std::to_string(bytes) + " bytes did not complete within " + std::to_string(timeout_s_) +
                   " s (run.collective_timeout_s): a peer rank died, hung or issued a different collective",
               timeout_s_);
    rc = call();
  }
  check(rc, op.c_str());
}

void MpiCommunicator::all_reduce(at::Tensor& t, ReduceOp op) {
  LETHE_CHECK(t.is_contiguous() && t.device().is_cpu());
  if (is_16bit_float(t)) {
    at::Tensor f = t.to(at::kFloat);
    all_reduce(f, op);
    t.copy_(f);
    return;
  }
  LETHE_CHECK_MSG(op != ReduceOp::kAvg || at::isFloatingType(t.scalar_type()), "all_reduce(avg) needs a float tensor");
  const MPI_Datatype type = mpi_type(t.scalar_type());
  const int64_t n = t.numel();
  char* base = static_cast<char*>(t.data_ptr());
  for (int64_t off = 0; off < n; off += chunk_) {
    const int count = static_cast<int>(std::min(chunk_, n - off));
    run(std::string("all_reduce(") + op_name(op) + ")", count * static_cast<int64_t>(t.element_size()), [&] {
      return MPI_Allreduce(MPI_IN_PLACE, base + off * t.element_size(), count, type, mpi_op(op), comm_);
    });
  }
  if (op == ReduceOp::kAvg) t.div_(size_);
}

// An MPI_Iallreduce in flight: polled with MPI_Test, completed with MPI_Wait under the watchdog.
class MpiPending final : public PendingCollective {
 public:
  MpiPending(const MpiCommunicator& c, at::Tensor t, ReduceOp op) : c_(c), t_(std::move(t)), op_(op) {
    c_.check(MPI_Iallreduce(MPI_IN_PLACE, t_.data_ptr(), static_cast<int>(t_.numel()), mpi_type(t_.scalar_type()),
                            mpi_op(op_), c_.comm_, &req_),
             "MPI_Iallreduce");
  }
  ~MpiPending() override { wait(); }
  void poll() override {
    int done = 0;
    if (req_ != MPI_REQUEST_NULL) c_.check(MPI_Test(&req_, &done, MPI_STATUS_IGNORE), "MPI_Test");
  }
  void wait() override {
    if (finished_) return;
    c_.run(std::string("all_reduce(") + op_name(op_) + ", started early)", t_.numel() * t_.element_size(),
           [&] { return MPI_Wait(&req_, MPI_STATUS_IGNORE); });
    if (op_ == ReduceOp::kAvg) t_.div_(c_.size_);
    finished_ = true;
  }

 private:
  const MpiCommunicator& c_;
  at::Tensor t_;
  ReduceOp op_;
  MPI_Request req_ = MPI_REQUEST_NULL;
  bool finished_ = false;
};

std::unique_ptr<PendingCollective> MpiCommunicator::all_reduce_async(at::Tensor& t, ReduceOp op) {
  LETHE_CHECK(t.is_contiguous() && t.device().is_cpu());
  const bool direct = (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble) && t.numel() <= chunk_;
  if (!direct) return Communicator::all_reduce_async(t, op);
  return std::make_unique<MpiPending>(*this, t, op);
}

void MpiCommunicator::all_gather(at::Tensor& out, const at::Tensor& in) {
  LETHE_CHECK(out.is_contiguous() && in.is_contiguous() && out.scalar_type() == in.scalar_type());
  LETHE_CHECK_MSG(out.numel() == in.numel() * size_, "all_gather: out must hold size() × in");
  const MPI_Datatype type = mpi_type(in.scalar_type());
  const int count = checked_count(in.numel(), "all_gather");
  run("all_gather", static_cast<int64_t>(out.nbytes()),
      [&] { return MPI_Allgather(in.data_ptr(), count, type, out.data_ptr(), count, type, comm_); });
}

void MpiCommunicator::reduce_scatter(at::Tensor& out, const at::Tensor& in, ReduceOp op) {
  LETHE_CHECK(out.is_contiguous() && in.is_contiguous() && out.scalar_type() == in.scalar_type());
  LETHE_CHECK_MSG(in.numel() == out.numel() * size_, "reduce_scatter: in must hold size() × out");
  if (is_16bit_float(in)) {
    at::Tensor f = at::empty(out.sizes(), out.options().dtype(at::kFloat));
    reduce_scatter(f, in.to(at::kFloat), op);
    out.copy_(f);
    return;
  }
  const int count = checked_count(out.numel(), "reduce_scatter");
  run(std::string("reduce_scatter(") + op_name(op) + ")", static_cast<int64_t>(in.nbytes()), [&] {
    return MPI_Reduce_scatter_block(in.data_ptr(), out.data_ptr(), count, mpi_type(in.scalar_type()), mpi_op(op), comm_);
  });
  if (op == ReduceOp::kAvg) out.div_(size_);
}

void MpiCommunicator::broadcast(at::Tensor& t, int root) {
  LETHE_CHECK(t.is_contiguous() && root >= 0 && root < size_);
  const MPI_Datatype type = mpi_type(t.scalar_type());
  const int64_t n = t.numel();
  char* base = static_cast<char*>(t.data_ptr());
  for (int64_t off = 0; off < n; off += chunk_) {
    const int count = static_cast<int>(std::min(chunk_, n - off));
    run("broadcast", count * static_cast<int64_t>(t.element_size()),
        [&] { return MPI_Bcast(base + off * t.element_size(), count, type, root, comm_); });
  }
}

void MpiCommunicator::barrier() {
  run("barrier", 0, [&] { return MPI_Barrier(comm_); });
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key) {
  MPI_Comm sub;
  check(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
  return std::make_unique<MpiCommunicator>(sub, timeout_s_);
}

}  // namespace lethe

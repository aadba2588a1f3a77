#include "collectives/mpi_communicator.h"

#include <ATen/ATen.h>

#include <chrono>
#include <thread>

#include "base/check.h"

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

MPI_Comm mpi_comm_of(const Communicator& c) {
  auto* m = dynamic_cast<const MpiCommunicator*>(&c);
  return m ? m->comm() : MPI_COMM_NULL;
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

// Note [Collective deadline]: blocking MPI calls cannot time out, so every operation is started
// non-blocking and polled. The first millisecond spins (small messages complete at full speed);
// after that the loop sleeps briefly between polls so oversubscribed ranks leave the cores to
// their peers. Past the deadline the job is aborted: one dead rank cannot leave the others waiting.
void MpiCommunicator::wait(MPI_Request& req, const std::string& op, int64_t bytes) const {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const auto spin_until = start + std::chrono::milliseconds(1);
  const auto deadline = start + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(timeout_s_));
  int done = 0;
  for (;;) {
    check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), op.c_str());
    if (done) return;
    const auto now = clock::now();
    if (now > deadline) {
      fatal(__FILE__, __LINE__,
            "rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ": " + op + " of " +
                std::to_string(bytes) + " bytes did not complete within " + std::to_string(timeout_s_) +
                " s (run.collective_timeout_s): a peer rank died, hung or issued a different collective");
    }
    if (now > spin_until) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
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
    MPI_Request req;
    check(MPI_Iallreduce(MPI_IN_PLACE, base + off * t.element_size(), count, type, mpi_op(op), comm_, &req),
          "MPI_Iallreduce");
    wait(req, std::string("all_reduce(") + op_name(op) + ")", count * static_cast<int64_t>(t.element_size()));
  }
  if (op == ReduceOp::kAvg) t.div_(size_);
}

void MpiCommunicator::all_gather(at::Tensor& out, const at::Tensor& in) {
  LETHE_CHECK(out.is_contiguous() && in.is_contiguous() && out.scalar_type() == in.scalar_type());
  LETHE_CHECK_MSG(out.numel() == in.numel() * size_, "all_gather: out must hold size() × in");
  const MPI_Datatype type = mpi_type(in.scalar_type());
  const int count = checked_count(in.numel(), "all_gather");
  MPI_Request req;
  check(MPI_Iallgather(in.data_ptr(), count, type, out.data_ptr(), count, type, comm_, &req), "MPI_Iallgather");
  wait(req, "all_gather", static_cast<int64_t>(out.nbytes()));
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
  MPI_Request req;
  check(MPI_Ireduce_scatter_block(in.data_ptr(), out.data_ptr(), count, mpi_type(in.scalar_type()), mpi_op(op), comm_,
                                  &req),
        "MPI_Ireduce_scatter_block");
  wait(req, std::string("reduce_scatter(") + op_name(op) + ")", static_cast<int64_t>(in.nbytes()));
  if (op == ReduceOp::kAvg) out.div_(size_);
}

void MpiCommunicator::broadcast(at::Tensor& t, int root) {
  LETHE_CHECK(t.is_contiguous() && root >= 0 && root < size_);
  const MPI_Datatype type = mpi_type(t.scalar_type());
  const int64_t n = t.numel();
  char* base = static_cast<char*>(t.data_ptr());
  for (int64_t off = 0; off < n; off += chunk_) {
    const int count = static_cast<int>(std::min(chunk_, n - off));
    MPI_Request req;
    check(MPI_Ibcast(base + off * t.element_size(), count, type, root, comm_, &req), "MPI_Ibcast");
    wait(req, "broadcast", count * static_cast<int64_t>(t.element_size()));
  }
}

void MpiCommunicator::barrier() {
  MPI_Request req;
  check(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier");
  wait(req, "barrier", 0);
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key) {
  MPI_Comm sub;
  check(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
  return std::make_unique<MpiCommunicator>(sub, timeout_s_);
}

}  // namespace lethe

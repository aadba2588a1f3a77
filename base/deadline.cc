#include "base/deadline.h"

#include <unistd.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "base/check.h"

namespace lethe {

namespace {

using Clock = std::chrono::steady_clock;

std::thread::id g_main_thread;

// Note [Watchdog]: blocking MPI calls cannot time out, and non-blocking ones progress only while
// polled (measured: 1.3–1.8× slower than the blocking call). So operations are the blocking calls,
// and a watchdog thread watches the one in flight. MPI runs at MPI_THREAD_FUNNELED (only the main
// thread calls it), so past the deadline the watchdog makes no MPI call: it writes its message and
// _exits with kDeadlineExit. The launcher sees a rank end without MPI_Finalize and ends the others
// (mpirun does by default; under srun, --kill-on-bad-exit), so one dead peer cannot leave the job
// waiting. THREAD_MULTIPLE would let it call MPI_Abort, at the price of a lock in every MPI call.
class Watchdog {
 public:
  static Watchdog& get() {
    static Watchdog* w = new Watchdog();  // lives until exit; its thread is detached
    return *w;
  }
  void arm(std::string what, double timeout_s) {
    std::lock_guard<std::mutex> lock(mu_);
    LETHE_CHECK_MSG(!armed_, "a deadline is already armed: " + what_);
    what_ = std::move(what);
    deadline_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
    armed_ = true;
  }
  void disarm() {
    std::lock_guard<std::mutex> lock(mu_);
    armed_ = false;
  }

 private:
  Watchdog() {
    std::thread([this] {
      for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        std::lock_guard<std::mutex> lock(mu_);
        if (armed_ && Clock::now() > deadline_) {
          const std::string m = "fatal: " + what_ + "\n";
          (void)!::write(2, m.data(), m.size());
          ::_exit(kDeadlineExit);
        }
      }
    }).detach();
  }
  std::mutex mu_;
  bool armed_ = false;
  std::string what_;
  Clock::time_point deadline_;
};

}  // namespace

Deadline::Deadline(std::string what, double timeout_s) { Watchdog::get().arm(std::move(what), timeout_s); }
Deadline::~Deadline() { Watchdog::get().disarm(); }

void set_main_thread() { g_main_thread = std::this_thread::get_id(); }
bool on_main_thread() { return g_main_thread == std::thread::id() || g_main_thread == std::this_thread::get_id(); }

void exit_from_thread(int rank, const std::string& message) {
  const std::string m = "[rank " + std::to_string(rank) + "] " + message + "\n";
  (void)!::write(2, m.data(), m.size());
  ::_exit(kDeadlineExit);
}

}  // namespace lethe

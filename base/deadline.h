// Deadline: bounds a blocking call that can wait forever on a peer (an MPI collective, a collective
// HDF5 write). One watchdog thread per process watches the call in flight; past its deadline it
// writes the call's description to stderr and ends the process with kDeadlineExit (Note [Watchdog]).
#pragma once

#include <string>

namespace lethe {

// The exit status of a process the watchdog ended.
inline constexpr int kDeadlineExit = 70;

// RAII: armed for `timeout_s` from construction, disarmed by the destructor. One at a time per
// process (a second while one is armed is a bug). `what` is printed as is when the deadline passes.
class Deadline {
 public:
  Deadline(std::string what, double timeout_s);
  ~Deadline();
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;
};

// Marks the calling thread as the one that may call MPI (MPI runs at MPI_THREAD_FUNNELED).
void set_main_thread();
bool on_main_thread();

// Writes "[rank r] message" to stderr and ends this process at once (_exit), calling nothing
// else: the fatal path for threads other than the main one.
[[noreturn]] void exit_from_thread(int rank, const std::string& message);

}  // namespace lethe

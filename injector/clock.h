#pragma once

#include <time.h>

#include <cstdint>

namespace stackaudit {

// Monotonic nanoseconds: cheap (vDSO), allocation-free, fine inside a stop window.
inline uint64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Wall-clock nanoseconds since the epoch, for timestamps people read.
inline int64_t wall_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000ll + ts.tv_nsec;
}

}  // namespace stackaudit

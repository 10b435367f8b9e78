// Percentiles as every figure stackaudit reports them (stop times in the
// snapshot, latencies and waits in the agent's window): the value at the
// rounded position p * (n - 1) of the sorted values.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

namespace stackaudit {

// The p-th percentile (p from 0 to 1) of values sorted ascending; T{} when
// there are none. For two values, p50 is the larger.
template <class T>
T percentile_of_sorted(const std::vector<T>& sorted, double p) {
  if (sorted.empty()) return T{};
  auto idx = static_cast<size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(idx, sorted.size() - 1)];
}

}  // namespace stackaudit

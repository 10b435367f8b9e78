// The human report: per thread, what it waits on and where, then its stack;
// a summary by category at the end.
#pragma once

#include <string>

#include "collector/snapshot.h"

namespace stackaudit {

std::string text_report(const Snapshot& snapshot);

}  // namespace stackaudit

// The asyncio part of the text report (issue 12): await cycles first, as a
// deadlock, then per event loop a tree of its tasks as `python -m asyncio
// pstree` users read it: a task, its coroutines outermost first, and under it
// the tasks it awaits. Tasks that share a coroutine stack and what they await
// are one line when there are many; the tree is cut at a number of lines.
#pragma once

#include <string>

#include "collector/snapshot.h"

namespace stackaudit {

struct TaskTreeLimits {
  size_t max_lines = 400;  // per loop; then "... N more tasks not shown"
  size_t group_min = 3;    // siblings alike, at least this many: one line
  size_t group_names = 3;  // names a group line shows
  size_t max_depth = 32;   // tasks awaiting tasks, nested deeper, are not drawn
};

// "!!! ..." lines for the top of the report (await cycles); "" when none.
std::string asyncio_alerts(const Snapshot& snapshot);

// The cycles and the task trees of every loop; "" when the snapshot has no
// event loop.
std::string asyncio_report(const Snapshot& snapshot, const TaskTreeLimits& limits = {});

// One line for the report's summary ("  asyncio: 15 tasks in 1 event loop: sleep 6, ...");
// "" when tasks were not read.
std::string asyncio_summary_line(const Snapshot& snapshot);

}  // namespace stackaudit

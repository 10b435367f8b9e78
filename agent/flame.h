// Where threads wait, as stacks for flame graphs: each thread's frames root
// first under a root frame that names its category ("lock", "socket", ...;
// "idle: queue" for a thread waiting for work; "running" for one that is not
// blocked), counted per distinct stack. One dump adds each thread once; the
// agent adds every thread of every round (counts are thread-samples). With
// several processes (dump --children, agent --children or --match), a frame
// naming the process sits right under the root: the picture still splits by
// category first, and within a category by process.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "collector/snapshot.h"

namespace stackaudit {

// The root frame of a thread's stack: its category, "idle: CATEGORY", or
// "running".
std::string flame_root(const Thread& t);

// One frame's name in a stack: "function (file.py:LINE)", "function",
// "module+0xOFFSET"; never holds ';' or a line break (the folded format's
// separators).
std::string flame_frame(const Frame& f);

// The frame that names a process: "comm (PID N)", with the same care as
// flame_frame.
std::string flame_process(const Target& target);

class FlameStacks {
 public:
  // Bounds the number of distinct stacks kept (runs of days, 10k threads):
  // past it, new stacks count under "ROOT;[other stacks]".
  explicit FlameStacks(size_t max_stacks = 20000) : max_stacks_(max_stacks) {}

  void add(const Thread& t, uint64_t count = 1);
  // The same, with `process` (flame_process) between the root and the frames.
  void add(const Thread& t, const std::string& process, uint64_t count = 1);
  // Every thread of s; with_process: each under flame_process(s.target).
  void add(const Snapshot& s, bool with_process = false);

  // Root first: [root, (process,) outermost frame, ..., innermost frame] -> count.
  const std::map<std::vector<std::string>, uint64_t>& stacks() const { return stacks_; }
  uint64_t total() const { return total_; }
  bool empty() const { return stacks_.empty(); }
  // Each root frame's count.
  std::map<std::string, uint64_t> root_totals() const;

  // Brendan Gregg's collapsed stacks: "root;outer;...;inner COUNT\n" per
  // distinct stack, sorted by stack.
  std::string folded() const;

 private:
  void add_stack(std::vector<std::string> stack, uint64_t count);
  size_t max_stacks_;
  uint64_t total_ = 0;
  std::map<std::vector<std::string>, uint64_t> stacks_;
};

}  // namespace stackaudit

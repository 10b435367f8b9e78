// Classification rules: data, not code. A built-in table plus an optional user
// rules file (format in docs/rules.md). A thread waiting for the GIL is a lock
// wait on the GIL, whatever else. Otherwise user rules are tried before
// built-in ones; within each, Python rules first (they name the library call
// the user's code made: the outermost match among the library frames above
// the innermost user frame), then native function rules (the innermost
// matching frame wins), then the syscall the thread is blocked in.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "collector/snapshot.h"

namespace stackaudit {

// The closed set of categories (ARCHITECTURE §4).
const std::vector<std::string>& categories();
bool is_category(std::string_view name);

struct Rule {
  enum class Match { kFunction, kSyscall, kPython };
  std::string category;
  Match match = Match::kFunction;
  std::string pattern;    // glob over a native frame's function, a syscall name, or a
                          // Python frame's "module.qualname" (queue.Queue.get)
  std::string fd_kind;    // syscall rules: "socket", "!socket", or "" for any fd
  std::string primitive;  // what to call it; "" means the matched name
  bool idle = false;
  std::string origin;  // "builtin" or "FILE:LINE"
  bool is_user() const { return origin != "builtin"; }
};

// A malformed rules file. The message names the file and the line.
class RulesError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class RuleSet {
 public:
  static RuleSet builtin();
  // Parses a rules file; throws RulesError naming FILE:LINE on a bad line.
  static std::vector<Rule> parse(const std::string& text, const std::string& file_name);
  void add_user_rules(std::vector<Rule> rules);  // tried before built-in rules

  // A blocking record for a thread that waits (state sleeping/disk_sleep, in a
  // syscall), or nullopt for a thread that runs.
  std::optional<Blocking> classify(const Thread& thread) const;

  const std::vector<Rule>& rules() const { return rules_; }

 private:
  std::vector<Rule> rules_;  // user rules first
};

// Whether a frame is the user's own code rather than libc, the C++ runtime, an
// interpreter, a system header inlined into user code, or (for a Python frame)
// the standard library or an installed package.
bool is_user_frame(const Frame& frame);

// "queue.Queue.get": what Python rules match.
std::string python_name(const Frame& frame);
// What to call a frame in one word: its function, or module+0xOFFSET when it
// has no symbol, or "??".
std::string frame_name(const Frame& frame);
// A call site in a few words: "backoff (worker.py:24)", "Cache::get
// (cache.cpp:88)", "mariadbd+0xefef8d". Metrics labels and the report's
// summary name sites this way.
std::string site_label(const Frame& site);

// Whether the thread runs an asyncio event loop (BaseEventLoop.run_forever or
// _run_once on its Python stack).
bool runs_event_loop(const Thread& thread);

}  // namespace stackaudit

// The rules file (docs/rules.md): the user's text, parsed, then used to
// classify a few canned threads so that the patterns reach fnmatch.
#include <set>

#include "collector/rules.h"
#include "fuzz/fuzz_check.h"

using namespace stackaudit;

namespace {

Frame frame(const char* function, const char* module, const char* file = "",
            Frame::Kind kind = Frame::Kind::kNative) {
  Frame f;
  f.kind = kind;
  f.function = function;
  f.module = module;
  f.file = file;
  return f;
}

std::vector<Thread> canned_threads() {
  auto thread = [](const char* syscall, const char* fd_kind, std::vector<Frame> frames) {
    Thread t;
    t.state = "sleeping";
    t.syscall = SyscallInfo{};
    t.syscall->name = syscall;
    if (*fd_kind) t.syscall->fd = FdInfo{3, fd_kind, "", "", std::nullopt, ""};
    t.frames = std::move(frames);
    return t;
  };
  const auto py = Frame::Kind::kPython;
  return {
      thread("futex", "",
             {frame("__lll_lock_wait", "libc.so.6"), frame("__pthread_mutex_lock", "libc.so.6"),
              frame("Cache::get", "app", "/src/cache.cpp"), frame("main", "app", "/src/main.cpp")}),
      thread("read", "socket", {frame("read", "libc.so.6"), frame("", "app")}),
      thread("epoll_wait", "", {}),
      thread("futex", "",
             {frame("take_gil", "libpython3.11.so.1.0"),
              frame("Queue.get", "queue", "/usr/lib/python3.11/queue.py", py),
              frame("worker", "__main__", "/srv/app.py", py)}),
  };
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<Thread> threads = canned_threads();
  std::string text = fuzz::as_text(data, size);
  std::vector<Rule> rules;
  try {
    rules = RuleSet::parse(text, "fuzz.rules");
  } catch (const RulesError& e) {
    // Names the file and a line that exists.
    std::string what = e.what();
    FUZZ_CHECK(what.starts_with("fuzz.rules:"));
    long line = std::strtol(what.c_str() + 11, nullptr, 10);
    FUZZ_CHECK(line >= 1 && static_cast<size_t>(line) <= fuzz::count_lines(text));
    return 0;
  }
  FUZZ_CHECK(rules.size() <= fuzz::count_lines(text));
  for (const Rule& r : rules) {
    FUZZ_CHECK(is_category(r.category));
    FUZZ_CHECK(!r.pattern.empty());
    FUZZ_CHECK(r.pattern.find_first_of(" \t\n\r\v\f#") == std::string::npos);
    FUZZ_CHECK(r.origin.starts_with("fuzz.rules:") && r.is_user());
    FUZZ_CHECK(r.fd_kind.empty() || r.match == Rule::Match::kSyscall);
  }
  RuleSet set = RuleSet::builtin();
  size_t builtin = set.rules().size();
  set.add_user_rules(rules);
  FUZZ_CHECK(set.rules().size() == builtin + rules.size());
  for (const Thread& t : threads) {
    auto b = set.classify(t);
    FUZZ_CHECK(b && is_category(b->category) && !b->rule.empty());
  }
  return 0;
}

#include "agent/task_report.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "agent/text_report.h"
#include "collector/rules.h"

namespace stackaudit {
namespace {

std::string quoted(const std::string& name) {
  return "\"" + shown_text(name) + "\"";
}

std::string plural(size_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

// Where a task waits, in a few words: its innermost coroutine of the user's
// own code (not asyncio's Queue.get under it), else its innermost one.
std::string await_site(const AsyncTask& t) {
  if (t.coroutine.empty()) return "";
  for (const Frame& f : t.coroutine)
    if (is_user_frame(f)) return shown_text(site_label(f));
  return shown_text(site_label(t.coroutine.front()));
}

// What a task waits on, after its state: "sleep: 3599.2 s left",
// "stream: tcp ... (fd 7)"; "" when there is nothing to say (a done task).
std::string awaiting_text(const AsyncTask& t) {
  const TaskAwait& a = t.awaiting;
  if (a.kind == "running") return "running its step now";
  if (a.kind.empty() || a.kind == "none") return t.state == "pending" ? "ready to run" : "";
  std::string out = a.kind;
  if (!a.detail.empty()) out += ": " + shown_text(a.detail);
  if (a.fd) out += " (fd " + std::to_string(a.fd->fd) + ")";
  if (a.executor_tid != 0) out += " (run by thread " + std::to_string(a.executor_tid) + ")";
  return out;
}

// Every task of the snapshot by id.
std::unordered_map<std::string_view, const AsyncTask*> tasks_by_id(const Snapshot& s) {
  std::unordered_map<std::string_view, const AsyncTask*> out;
  for (const EventLoop& l : s.event_loops)
    for (const AsyncTask& t : l.tasks) out.emplace(t.id, &t);
  return out;
}

// Draws one loop's tasks as a tree, without recursion (an await chain may be
// thousands of tasks long).
class LoopTree {
 public:
  LoopTree(const EventLoop& loop, const std::set<std::string_view>& in_cycles,
           const std::vector<std::string_view>& cycle_starts, const TaskTreeLimits& limits)
      : loop_(loop), in_cycles_(in_cycles), limits_(limits) {
    for (size_t i = 0; i < loop.tasks.size(); ++i) index_.emplace(loop.tasks[i].id, i);
    drawn_.assign(loop.tasks.size(), false);
    reached_.assign(loop.tasks.size(), false);
    // Roots: awaited by no task read. Then what no root leads to (a cycle
    // has no root): from a cycle's first task, then any task left.
    for (size_t i = 0; i < loop.tasks.size(); ++i)
      if (!awaited_by_any(i)) starts_.push_back(i);
    for (size_t i : starts_) reach(i);
    for (std::string_view id : cycle_starts) {
      auto it = index_.find(id);
      if (it == index_.end() || reached_[it->second]) continue;
      starts_.push_back(it->second);
      reach(it->second);
    }
    for (size_t i = 0; i < loop.tasks.size(); ++i) {
      if (reached_[i]) continue;
      starts_.push_back(i);
      reach(i);
    }
  }

  void draw(std::ostream& out) {
    struct Pending {
      std::vector<size_t> tasks;  // one task, or a group
      std::string prefix;         // the tree's lines to its left
      bool root = false, last = false;
      size_t depth = 0;
    };
    std::vector<Pending> work;
    std::vector<Item> roots = items(starts_);
    for (size_t i = roots.size(); i-- > 0;)
      work.push_back({std::move(roots[i].tasks), "  ", true, i + 1 == roots.size(), 0});
    while (!work.empty()) {
      if (lines_ >= limits_.max_lines) break;
      Pending p = std::move(work.back());
      work.pop_back();
      // A task awaited by two tasks is drawn under the first; under the
      // second it is named only.
      if (p.tasks.size() > 1) {
        std::erase_if(p.tasks, [&](size_t i) { return drawn_[i]; });
        if (p.tasks.empty()) continue;
      }
      std::string branch = p.root ? "" : p.last ? "└── " : "├── ";
      std::string below = p.prefix + (p.root ? "" : p.last ? "    " : "│   ");
      const AsyncTask& first = loop_.tasks[p.tasks.front()];
      if (p.tasks.size() == 1 && drawn_[p.tasks.front()]) {
        line(out, p.prefix + branch + "task " + quoted(first.name) + " (drawn above" +
                      (in_cycles_.count(first.id) ? ": await cycle)" : ")"));
        continue;
      }
      for (size_t i : p.tasks) {
        drawn_[i] = true;
        ++shown_;
      }
      line(out, p.prefix + branch + (p.tasks.size() == 1 ? task_line(first) : group_line(p.tasks)));
      std::vector<size_t> children =
          p.tasks.size() == 1 ? awaited(p.tasks.front()) : std::vector<size_t>{};
      if (!children.empty() && p.depth + 1 >= limits_.max_depth) {
        coroutine_lines(out, first, below + "│ ");
        line(out, below + "└── ... " + plural(children.size(), "awaited task", "awaited tasks") +
                      " nested too deep to draw");
        continue;
      }
      coroutine_lines(out, first, below + (children.empty() ? "  " : "│ "));
      std::vector<Item> next = items(children);
      for (size_t i = next.size(); i-- > 0;)
        work.push_back({std::move(next[i].tasks), below, false, i + 1 == next.size(), p.depth + 1});
    }
    size_t hidden = loop_.tasks.size() - shown_;
    if (hidden > 0)
      out << "  ... " << plural(hidden, "more task", "more tasks")
          << " not shown (dump --format json lists every task)\n";
  }

 private:
  struct Item {
    std::vector<size_t> tasks;  // one task, or tasks alike
  };

  bool awaited_by_any(size_t i) const {
    for (const std::string& id : loop_.tasks[i].awaited_by)
      if (index_.count(id)) return true;
    return false;
  }

  // The tasks of this loop that task i awaits, in order.
  std::vector<size_t> awaited(size_t i) const {
    std::vector<size_t> out;
    for (const std::string& id : loop_.tasks[i].awaits) {
      auto it = index_.find(id);
      if (it != index_.end()) out.push_back(it->second);
    }
    return out;
  }

  void reach(size_t from) {
    std::vector<size_t> todo{from};
    reached_[from] = true;
    while (!todo.empty()) {
      size_t i = todo.back();
      todo.pop_back();
      for (size_t c : awaited(i))
        if (!reached_[c]) {
          reached_[c] = true;
          todo.push_back(c);
        }
    }
  }

  // Siblings as items: a task that awaits no task joins the others alike
  // (state, what they await, coroutine stack) when they are group_min or
  // more, at the place of the first of them.
  std::vector<Item> items(const std::vector<size_t>& siblings) const {
    std::map<std::string, std::vector<size_t>> alike;
    std::vector<std::string> keys(siblings.size());
    for (size_t k = 0; k < siblings.size(); ++k) {
      const AsyncTask& t = loop_.tasks[siblings[k]];
      if (!awaited(siblings[k]).empty() || drawn_[siblings[k]]) continue;
      std::string key = t.state + '\n' + t.awaiting.kind;
      for (const Frame& f : t.coroutine)
        key += '\n' + f.function + '\n' + f.file + ':' + std::to_string(f.line);
      alike[key].push_back(siblings[k]);
      keys[k] = std::move(key);
    }
    std::vector<Item> out;
    for (size_t k = 0; k < siblings.size(); ++k) {
      if (keys[k].empty()) {
        out.push_back({{siblings[k]}});
        continue;
      }
      auto it = alike.find(keys[k]);
      if (it->second.size() < limits_.group_min) {
        out.push_back({{siblings[k]}});
      } else if (it->second.front() == siblings[k]) {
        out.push_back({it->second});
      }
    }
    return out;
  }

  std::string task_line(const AsyncTask& t) const {
    std::string out = "task " + quoted(t.name) + " " + t.state;
    std::string waits = awaiting_text(t);
    if (!waits.empty()) out += " | " + waits;
    if (t.id == loop_.current_task) out += " [the loop's current task]";
    if (in_cycles_.count(t.id)) out += " [DEADLOCK: await cycle]";
    return out;
  }

  // "412 tasks awaiting queue in worker (svc.py:40), all pending: "w-0", ... and 409 more"
  std::string group_line(const std::vector<size_t>& group) const {
    const AsyncTask& first = loop_.tasks[group.front()];
    const TaskAwait& a = first.awaiting;
    std::string out = std::to_string(group.size()) + " tasks ";
    if (a.kind == "running" || a.kind.empty() || a.kind == "none")
      out += first.state == "pending" ? "ready to run" : "not waiting";
    else
      out += "awaiting " + a.kind;
    bool same_detail = !a.detail.empty();
    for (size_t i : group) same_detail = same_detail && loop_.tasks[i].awaiting.detail == a.detail;
    if (same_detail) out += " (" + shown_text(a.detail) + ")";
    std::string site = await_site(first);
    if (!site.empty()) out += " in " + site;
    out += ", all " + first.state + ": ";
    size_t named = std::min(group.size(), limits_.group_names);
    for (size_t k = 0; k < named; ++k) out += (k ? ", " : "") + quoted(loop_.tasks[group[k]].name);
    if (group.size() > named) out += " and " + std::to_string(group.size() - named) + " more";
    return out;
  }

  // The coroutine stack, outermost first: the tree reads down from the task
  // to where it waits, then to the tasks it awaits.
  void coroutine_lines(std::ostream& out, const AsyncTask& t, const std::string& prefix) {
    if (t.coroutine_truncated) line(out, prefix + "... (outer coroutines not read)");
    for (size_t i = t.coroutine.size(); i-- > 0;) line(out, prefix + shown_frame(t.coroutine[i]));
  }

  void line(std::ostream& out, const std::string& text) {
    out << text << "\n";
    ++lines_;
  }

  const EventLoop& loop_;
  const std::set<std::string_view>& in_cycles_;
  const TaskTreeLimits& limits_;
  std::unordered_map<std::string_view, size_t> index_;
  std::vector<bool> drawn_, reached_;
  std::vector<size_t> starts_;
  size_t lines_ = 0, shown_ = 0;
};

void loop_header(std::ostream& out, const EventLoop& l) {
  out << "\nasyncio event loop " << l.id << " (" << shown_text(l.type) << ")";
  if (l.tid != 0)
    out << ", thread " << l.tid << " \"" << shown_text(l.thread_name) << "\"";
  else
    out << ", run by no thread now";
  out << ": " << plural(l.tasks.size(), "task", "tasks") << ", ";
  if (l.ready_callbacks >= 0)
    out << plural(static_cast<size_t>(l.ready_callbacks), "ready callback", "ready callbacks");
  else
    out << "ready callbacks unknown";
  out << "\n";
  std::string current;
  for (const AsyncTask& t : l.tasks)
    if (!l.current_task.empty() && t.id == l.current_task) current = quoted(t.name);
  if (current.empty() && !l.current_task.empty()) current = l.current_task;
  if (l.blocked) {
    out << "  !!! BLOCKED: its thread is blocked outside the selector";
    if (l.blocked_in) out << " in " << shown_frame(*l.blocked_in);
    if (!current.empty()) out << ", running task " << current;
    out << ": no other task of this loop runs until it returns\n";
  } else if (!current.empty()) {
    out << "  running task " << current << " now\n";
  }
  if (l.tasks_seen > l.tasks.size())
    out << "  read " << l.tasks.size() << " of " << l.tasks_seen
        << " tasks; --max-tasks raises the cap\n";
  else if (l.truncated)
    out << "  some tasks may be missing: the task registry changed while it was read\n";
}

}  // namespace

std::string asyncio_alerts(const Snapshot& s) {
  size_t cycles = s.summary.asyncio.cycles.size();
  if (cycles == 0) return "";
  return "\n!!! " + plural(cycles, "await cycle", "await cycles") +
         " among asyncio tasks: their tasks can never finish (see DEADLOCK below)\n";
}

std::string asyncio_report(const Snapshot& s, const TaskTreeLimits& limits) {
  if (s.event_loops.empty()) return "";
  std::ostringstream out;
  out << "\nasyncio tasks (under each task: its coroutines, outermost first, then the tasks it "
         "awaits)\n";
  auto by_id = tasks_by_id(s);
  std::set<std::string_view> in_cycles;
  std::vector<std::string_view> cycle_starts;
  for (const AwaitCycle& c : s.summary.asyncio.cycles) {
    if (c.task_ids.empty()) continue;
    cycle_starts.push_back(c.task_ids.front());
    in_cycles.insert(c.task_ids.begin(), c.task_ids.end());
    auto name = [&](size_t i) {
      if (i < c.names.size()) return shown_text(c.names[i]);
      auto it = by_id.find(c.task_ids[i]);
      return it != by_id.end() ? shown_text(it->second->name) : c.task_ids[i];
    };
    out << "\nDEADLOCK: await cycle: ";
    for (size_t i = 0; i < c.task_ids.size(); ++i) out << name(i) << " -> ";
    out << name(0) << "\n";
    for (size_t i = 0; i < c.task_ids.size(); ++i) {
      out << "    " << name(i) << " (" << c.task_ids[i] << ") awaits "
          << name((i + 1) % c.task_ids.size());
      auto it = by_id.find(c.task_ids[i]);
      std::string site = it != by_id.end() ? await_site(*it->second) : "";
      if (!site.empty()) out << " at " << site;
      out << "\n";
    }
  }
  for (const EventLoop& l : s.event_loops) {
    loop_header(out, l);
    LoopTree(l, in_cycles, cycle_starts, limits).draw(out);
  }
  return out.str();
}

std::string asyncio_summary_line(const Snapshot& s) {
  const AsyncioSummary& a = s.summary.asyncio;
  if (!a.read) return "";
  std::string out = "  asyncio: " + plural(a.tasks, "task", "tasks") + " in " +
                    plural(s.event_loops.size(), "event loop", "event loops");
  std::vector<std::pair<std::string, size_t>> kinds(a.by_awaiting.begin(), a.by_awaiting.end());
  std::stable_sort(kinds.begin(), kinds.end(),
                   [](const auto& x, const auto& y) { return x.second > y.second; });
  std::string by;
  for (const auto& [kind, n] : kinds)
    if (n > 0) by += (by.empty() ? ": " : ", ") + kind + " " + std::to_string(n);
  out += by;
  if (!a.cycles.empty())
    out += "; " + plural(a.cycles.size(), "await cycle", "await cycles") + " (DEADLOCK)";
  return out + "\n";
}

}  // namespace stackaudit

#include "agent/pipeline.h"

#include <unistd.h>

#include <algorithm>
#include <map>

#include "agent/exit_codes.h"
#include "injector/proc.h"
#include "injector/target.h"

namespace stackaudit {
namespace {

CaptureOptions capture_options(std::chrono::milliseconds max_stop, SnapshotBuilder& builder,
                               std::shared_ptr<StopperProcess> stopper, bool consistent) {
  CaptureOptions options;
  options.max_stop = max_stop;
  options.consistent = consistent;
  options.stopper = std::move(stopper);
  // A thread whose wait is fully known from /proc (the builder says so) is
  // not stopped at all.
  options.nonstop_sufficient = [&builder](const RawThread& t) {
    return builder.complete_without_stop(t);
  };
  return options;
}

}  // namespace

RuleSet load_rules(const std::string& rules_file) {
  RuleSet rules = RuleSet::builtin();
  if (rules_file.empty()) return rules;
  auto text = proc::read_file(rules_file);
  if (!text) throw UserError{kExitUsage, "cannot read the rules file " + rules_file};
  try {
    rules.add_user_rules(RuleSet::parse(*text, rules_file));
  } catch (const RulesError& e) {
    throw UserError{kExitUsage, std::string("malformed rules file: ") + e.what()};
  }
  return rules;
}

void check_max_stop(std::chrono::milliseconds max_stop) {
  if (max_stop < std::chrono::milliseconds(10) || max_stop > std::chrono::seconds(10))
    throw UserError{kExitUsage, "--max-stop must be between 10ms and 10s (default 50ms)"};
}

void check_auditable(pid_t pid) {
  try {
    check_target(pid);
  } catch (const TargetError& e) {
    throw UserError{kExitTarget, e.what()};
  }
}

void check_max_processes(size_t max_processes) {
  if (max_processes < 1 || max_processes > 4096)
    throw UserError{kExitUsage, "--max-processes must be between 1 and 4096 (default 64)"};
}

void check_max_tasks(long long max_per_loop) {
  if (max_per_loop < 1)
    throw UserError{kExitUsage, "--max-tasks must be at least 1 (default " +
                                    std::to_string(SnapshotBuilder::kDefaultMaxTasksPerLoop) +
                                    "; --no-tasks reads none)"};
}

ProcessTable ProcessTable::scan() {
  ProcessTable table;
  for (pid_t pid : proc::list_processes()) {
    auto stat = proc::read_stat(pid, pid);
    if (!stat) continue;  // exited since the listing
    table.processes.push_back({pid, stat->ppid, 0, stat->comm, {}});
  }
  std::sort(table.processes.begin(), table.processes.end(),
            [](const TreeProcess& a, const TreeProcess& b) { return a.pid < b.pid; });
  return table;
}

std::vector<TreeProcess> process_tree(const ProcessTable& table, const std::vector<pid_t>& roots,
                                      const std::set<pid_t>& excluded) {
  std::multimap<pid_t, const TreeProcess*> children;
  std::map<pid_t, const TreeProcess*> by_pid;
  for (const TreeProcess& p : table.processes) {
    children.emplace(p.ppid, &p);
    by_pid.emplace(p.pid, &p);
  }
  std::vector<TreeProcess> out;
  std::set<pid_t> seen(excluded);
  for (pid_t root : roots) {
    auto it = by_pid.find(root);
    if (it == by_pid.end() || !seen.insert(root).second) continue;
    out.push_back(*it->second);
    out.back().depth = 0;
  }
  // Breadth first: the roots' children come before their grandchildren, so
  // that a cap keeps a service's workers before what the workers started.
  for (size_t i = 0; i < out.size(); ++i) {
    auto [first, last] = children.equal_range(out[i].pid);
    for (auto c = first; c != last; ++c) {
      if (!seen.insert(c->second->pid).second) continue;
      TreeProcess child = *c->second;
      child.depth = out[i].depth + 1;
      out.push_back(std::move(child));
    }
  }
  for (TreeProcess& p : out) p.cmdline = proc::read_cmdline(p.pid);
  return out;
}

std::set<pid_t> own_processes(const ProcessTable& table) {
  std::set<pid_t> own;
  for (const TreeProcess& p : process_tree(table, {::getpid()}, {})) own.insert(p.pid);
  own.insert(::getpid());
  return own;
}

std::shared_ptr<StopperProcess> shared_stopper(std::chrono::milliseconds max_stop) {
  StopperOptions options;
  options.max_stop = std::chrono::duration_cast<std::chrono::microseconds>(max_stop);
  return std::make_shared<StopperProcess>(options);
}

AuditPipeline::AuditPipeline(pid_t pid, const RuleSet& rules, std::chrono::milliseconds max_stop,
                             SourceLines lines, TaskOptions tasks,
                             std::shared_ptr<StopperProcess> stopper, bool consistent)
    : builder_(pid, rules, lines),
      capturer_(pid, capture_options(max_stop, builder_, std::move(stopper), consistent)) {
  builder_.set_tasks(tasks.enabled, tasks.max_per_loop);
  builder_.prepare(proc::read_maps(pid));
}

bool AuditPipeline::captured_any() const {
  return last_ && std::any_of(last_->threads.begin(), last_->threads.end(), [](const RawThread& t) {
           return !t.vanished && t.mode != CaptureMode::kFailed;
         });
}

bool AuditPipeline::target_gone() const {
  return !last_ || last_->target_exited || last_->threads.empty();
}

const RawCapture& AuditPipeline::capture() {
  RawCapture raw = capturer_.capture(last_ ? &*last_ : nullptr);
  last_ = std::move(raw);
  return *last_;
}

}  // namespace stackaudit

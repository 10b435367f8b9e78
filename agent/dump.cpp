#include "agent/dump.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <thread>

#include "agent/atomic_file.h"
#include "agent/audit_json.h"
#include "agent/exit_codes.h"
#include "agent/flame.h"
#include "agent/pipeline.h"
#include "agent/speedscope.h"
#include "agent/text_report.h"
#include "agent/tree_report.h"
#include "collector/utf8.h"
#include "injector/proc.h"
#include "injector/target.h"
#include "injector/test_hooks.h"

namespace stackaudit {

Snapshot audit_process(pid_t pid, const RuleSet& rules, std::chrono::milliseconds max_stop,
                       SourceLines lines, TaskOptions tasks, bool consistent) {
  check_auditable(pid);
  AuditPipeline pipeline(pid, rules, max_stop, lines, tasks, nullptr, consistent);
  const RawCapture& raw = pipeline.capture();
  bool any_captured = false;
  bool denied = false;
  for (const RawThread& t : raw.threads) {
    any_captured |= !t.vanished && t.mode != CaptureMode::kFailed;
    denied |= t.permission_denied;
  }
  if (!any_captured && denied)
    throw UserError{kExitTarget, "permission denied to trace PID " + std::to_string(pid) + ": " +
                                     permission_hint()};
  if (!any_captured && raw.target_exited)
    throw UserError{kExitTarget,
                    "PID " + std::to_string(pid) + " exited before any thread could be captured"};
  return pipeline.build_once();
}

namespace {

// The test hook pause-after-listing:PATH (injector/test_hooks.h).
void pause_after_listing() {
  const std::string& path = test_hooks().pause_after_listing;
  if (path.empty()) return;
  std::ofstream(path) << "listed\n";
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (proc::read_file(path) && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

// One process of the tree, captured with the tree's stopper; a process that
// cannot be audited is "gone", with why.
ProcessAudit audit_one(const TreeProcess& p, const RuleSet& rules,
                       std::chrono::milliseconds max_stop, SourceLines lines, TaskOptions tasks,
                       const std::shared_ptr<StopperProcess>& stopper, bool consistent) {
  ProcessAudit audit{p, std::nullopt, ""};
  if (!proc::process_exists(p.pid)) {
    audit.gone = "exited before its capture";
    return audit;
  }
  try {
    check_target(p.pid);
    AuditPipeline pipeline(p.pid, rules, max_stop, lines, tasks, stopper, consistent);
    const RawCapture& raw = pipeline.capture();
    if (pipeline.captured_any()) {
      audit.snapshot = pipeline.build_once();
      return audit;
    }
    bool denied = std::any_of(raw.threads.begin(), raw.threads.end(),
                              [](const RawThread& t) { return t.permission_denied; });
    audit.gone = denied ? "permission denied: " + permission_hint()
                 : pipeline.target_gone() || !proc::process_exists(p.pid)
                     ? "exited during its capture, before any thread was captured"
                     : "no thread could be captured";
  } catch (const TargetError& e) {
    audit.gone = proc::process_exists(p.pid) ? e.what() : "exited before its capture";
  } catch (const std::exception& e) {  // one process, not the whole run
    audit.gone = std::string("could not be audited: ") + e.what();
  }
  return audit;
}

}  // namespace

TreeAudit audit_tree(pid_t root, const RuleSet& rules, std::chrono::milliseconds max_stop,
                     SourceLines lines, size_t max_processes, TaskOptions tasks, bool consistent) {
  check_auditable(root);
  ProcessTable table = ProcessTable::scan();
  std::vector<TreeProcess> tree = process_tree(table, {root}, own_processes(table));
  if (tree.empty()) throw UserError{kExitTarget, "PID " + std::to_string(root) + " exited"};
  TreeAudit audit;
  if (tree.size() > max_processes) {
    audit.not_audited = tree.size() - max_processes;
    audit.warnings.push_back(
        "PID " + std::to_string(root) + " has " + std::to_string(tree.size() - 1) +
        " descendants; audited " + std::to_string(max_processes) + " processes (--max-processes " +
        std::to_string(max_processes) + "), " + std::to_string(audit.not_audited) + " not audited");
    tree.resize(max_processes);
  }
  pause_after_listing();
  // One stopper for the whole tree, processes captured one after the other.
  auto stopper = shared_stopper(max_stop);
  for (const TreeProcess& p : tree) {
    audit.processes.push_back(audit_one(p, rules, max_stop, lines, tasks, stopper, consistent));
    ProcessAudit& a = audit.processes.back();
    // Text from the target (comm, a reason naming it) goes into JSON: valid
    // UTF-8 (collector/utf8.h).
    std::string who = "PID " + std::to_string(p.pid) + " (" + valid_utf8(p.comm) + ")";
    a.gone = valid_utf8(a.gone);
    if (!a.snapshot)
      audit.warnings.push_back(who + " is gone: " + a.gone);
    else if (a.snapshot->target.exited)
      audit.warnings.push_back(who + " exited during its capture");
  }
  return audit;
}

int audit_exit_code(const Snapshot& s) {
  bool inconsistent = s.capture.consistent && !s.capture.consistent->achieved;
  return (s.capture.threads_failed > 0 || s.target.exited || inconsistent) ? kExitPartial : kExitOk;
}

void apply_stack_view(Snapshot& s, StackView view) {
  if (view == StackView::kMerged || view == StackView::kAuto) return;
  for (Thread& t : s.threads) {
    bool has_python = std::any_of(t.frames.begin(), t.frames.end(),
                                  [](const Frame& f) { return f.kind == Frame::Kind::kPython; });
    if (view == StackView::kPython && !has_python) continue;
    Frame::Kind drop = view == StackView::kPython ? Frame::Kind::kNative : Frame::Kind::kPython;
    std::erase_if(t.frames, [&](const Frame& f) { return f.kind == drop; });
  }
}

namespace {

void apply_view(Snapshot& snapshot, StackView view, const std::string& format) {
  if (view == StackView::kAuto)
    view = format == "text" && snapshot.target.runtime_kind == "cpython" ? StackView::kPython
                                                                         : StackView::kMerged;
  apply_stack_view(snapshot, view);
}

// The flame formats have no room for the audit's warnings: they go to stderr.
void warn(const std::vector<std::string>& warnings, const std::string& about = "") {
  for (const std::string& w : warnings)
    std::fprintf(stderr, "stackaudit: warning: %s%s\n", about.c_str(), w.c_str());
}

// dump --format folded|speedscope: every thread once. With --children, each
// thread sits under a frame naming its process (agent/flame.h).
std::string flame_output(const std::string& format, const Snapshot* snapshot,
                         const TreeAudit* tree) {
  FlameStacks stacks;
  std::string name;
  if (tree) {
    size_t audited = 0;
    for (const ProcessAudit& p : tree->processes) {
      std::string process = "PID " + std::to_string(p.process.pid) + " (" + p.process.comm + ")";
      if (!p.snapshot) {
        warn({"not audited: " + p.gone}, process + ": ");
        continue;
      }
      stacks.add(*p.snapshot, true);
      warn(p.snapshot->warnings, process + ": ");
      ++audited;
      if (name.empty()) name = "stackaudit dump: " + process;
    }
    warn(tree->warnings);
    if (tree->not_audited > 0)
      warn({std::to_string(tree->not_audited) + " process(es) over --max-processes not audited"});
    name += " and its descendants, " + std::to_string(audited) + " process" +
            (audited == 1 ? "" : "es");
  } else {
    stacks.add(*snapshot);
    warn(snapshot->warnings);
    name = "stackaudit dump: PID " + std::to_string(snapshot->target.pid) + " (" +
           snapshot->target.comm + ")";
  }
  if (format == "folded") return stacks.folded();
  return speedscope_json(stacks, name, "threads").dump() + "\n";
}

constexpr const char* kFormats[] = {"text", "json", "folded", "speedscope"};

}  // namespace

int run_dump(const DumpOptions& o) {
  if (std::find(std::begin(kFormats), std::end(kFormats), o.format) == std::end(kFormats))
    throw UserError{kExitUsage,
                    "unknown --format '" + o.format + "' (text, json, folded or speedscope)"};
  check_max_stop(o.max_stop);
  check_max_processes(o.max_processes);
  check_max_tasks(static_cast<long long>(o.tasks.max_per_loop));
  RuleSet rules = load_rules(o.rules_file);
  std::optional<Snapshot> snapshot;
  std::optional<TreeAudit> tree;
  if (o.children) {
    tree = audit_tree(o.pid, rules, o.max_stop, o.source_lines, o.max_processes, o.tasks,
                      o.consistent);
    for (ProcessAudit& p : tree->processes)
      if (p.snapshot) apply_view(*p.snapshot, o.stack, o.format);
  } else {
    snapshot = audit_process(o.pid, rules, o.max_stop, o.source_lines, o.tasks, o.consistent);
    apply_view(*snapshot, o.stack, o.format);
  }
  // The JSON goes out thread by thread: for thousands of threads the whole
  // document would cost more memory than the rest of the dump.
  auto emit = [&](const std::function<void(std::string_view)>& out) {
    if (o.format == "folded" || o.format == "speedscope")
      out(flame_output(o.format, snapshot ? &*snapshot : nullptr, tree ? &*tree : nullptr));
    else if (tree && o.format == "json")
      write_tree_audit_json(*tree, out);
    else if (tree)
      out(tree_text_report(*tree));
    else if (o.format == "json")
      write_audit_json(*snapshot, out);
    else
      out(text_report(*snapshot));
  };
  if (o.output.empty() || o.output == "-") {
    emit([](std::string_view text) { std::fwrite(text.data(), 1, text.size(), stdout); });
    std::fflush(stdout);
  } else {
    try {
      AtomicFile file(o.output);
      emit([&](std::string_view text) { file.write(text); });
      file.commit();
    } catch (const std::runtime_error& e) {
      throw UserError{kExitUsage, e.what()};
    }
  }
  if (!tree) return audit_exit_code(*snapshot);
  int code = tree->not_audited > 0 ? kExitPartial : kExitOk;
  for (const ProcessAudit& p : tree->processes)
    if (!p.snapshot || audit_exit_code(*p.snapshot) != kExitOk) code = kExitPartial;
  return code;
}

}  // namespace stackaudit

#include "agent/dump.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>

#include "agent/atomic_file.h"
#include "agent/audit_json.h"
#include "agent/exit_codes.h"
#include "agent/pipeline.h"
#include "agent/text_report.h"
#include "injector/target.h"

namespace stackaudit {

Snapshot audit_process(pid_t pid, const RuleSet& rules, std::chrono::milliseconds max_stop,
                       SourceLines lines) {
  check_auditable(pid);
  AuditPipeline pipeline(pid, rules, max_stop, lines);
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
  return pipeline.build();
}

int audit_exit_code(const Snapshot& s) {
  return (s.capture.threads_failed > 0 || s.target.exited) ? kExitPartial : kExitOk;
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

int run_dump(const DumpOptions& o) {
  if (o.format != "text" && o.format != "json")
    throw UserError{kExitUsage, "unknown --format '" + o.format + "' (text or json)"};
  check_max_stop(o.max_stop);
  RuleSet rules = load_rules(o.rules_file);
  Snapshot snapshot = audit_process(o.pid, rules, o.max_stop, o.source_lines);
  StackView view = o.stack;
  if (view == StackView::kAuto)
    view = o.format == "text" && snapshot.target.runtime_kind == "cpython" ? StackView::kPython
                                                                           : StackView::kMerged;
  apply_stack_view(snapshot, view);
  // The JSON goes out thread by thread: for thousands of threads the whole
  // document would cost more memory than the rest of the dump.
  auto emit = [&](const std::function<void(std::string_view)>& out) {
    if (o.format == "json")
      write_audit_json(snapshot, out);
    else
      out(text_report(snapshot));
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
  return audit_exit_code(snapshot);
}

}  // namespace stackaudit

#include "agent/pipeline.h"

#include "agent/exit_codes.h"
#include "injector/proc.h"
#include "injector/target.h"

namespace stackaudit {
namespace {

CaptureOptions capture_options(std::chrono::milliseconds max_stop, SnapshotBuilder& builder) {
  CaptureOptions options;
  options.max_stop = max_stop;
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

AuditPipeline::AuditPipeline(pid_t pid, const RuleSet& rules, std::chrono::milliseconds max_stop,
                             SourceLines lines)
    : builder_(pid, rules, lines), capturer_(pid, capture_options(max_stop, builder_)) {
  builder_.prepare(proc::read_maps(pid));
}

const RawCapture& AuditPipeline::capture() {
  RawCapture raw = capturer_.capture(last_ ? &*last_ : nullptr);
  last_ = std::move(raw);
  return *last_;
}

}  // namespace stackaudit

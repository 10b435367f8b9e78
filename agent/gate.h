// `stackaudit gate`: two audits (a baseline and the current run) held to
// regression gates. load (gate_audit.h, gate_thresholds.h) -> evaluate (a
// pure function of the figures and thresholds) -> render (text or JSON).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agent/gate_audit.h"
#include "agent/gate_thresholds.h"

namespace stackaudit {

enum class GateVerdict { kPass, kFail, kSkipped };

// The unit of a gate's baseline, current and limit (base units).
enum class GateUnit { kSeconds, kRatio, kBytes, kThreads, kRequestsPerSecond, kSites, kUp };

// Which side of the limit holds.
enum class GateBound { kAtMost, kAtLeast };

struct GateResult {
  std::string gate;                    // an id of kGateIds
  std::optional<std::string> subject;  // the probe or pool; none for whole-run gates
  GateVerdict verdict = GateVerdict::kSkipped;
  std::optional<double> baseline, current, limit;  // kUp: 1 up, 0 not
  GateUnit unit = GateUnit::kRatio;
  GateBound bound = GateBound::kAtMost;
  // pass: what held; fail: what to look at; skipped: why it could not be evaluated.
  std::string message;
  // The event-loop gates' failures: one sentence per site (message joins them).
  std::vector<std::string> sentences;
  // The event-loop gates: the sites blocking a loop (event_loop_blocked) or
  // new since the baseline (event_loop_new_sites).
  std::optional<std::vector<LoopSite>> sites;
};

struct GateSide {
  std::string file;
  AuditKind kind = AuditKind::kDump;
  std::optional<std::string> captured_at;
};

struct GateReport {
  GateSide baseline, current;
  std::vector<GateResult> gates;  // in the order of kGateIds
  bool failed() const;
  size_t count(GateVerdict verdict) const;
};

// Evaluates every enabled gate. Throws UserError (exit 2) when the audits are
// of different kinds.
GateReport evaluate_gates(const AuditFigures& baseline, const AuditFigures& current,
                          const GateThresholds& thresholds);

// The report for people: a table with the failing gates first, what to look at
// for each, the skipped gates with why, and a last line with the verdict.
std::string render_gate_text(const GateReport& report);

// The report for CI (schema stackaudit.gate/v1, docs/gate.md).
nlohmann::ordered_json render_gate_json(const GateReport& report);

struct GateOptions {
  std::string baseline, current;
  std::string thresholds;          // "" for the defaults
  std::string format = "text";     // text | json
  std::vector<std::string> pools;  // --pool, added to the thresholds file's [pool] names
  std::string output;              // "" or "-" for stdout
};

// Exit codes: kExitOk when every evaluated gate holds, kExitGateFailed when
// one fails; UserError (kExitUsage) for a usage error.
int run_gate(const GateOptions& options);

}  // namespace stackaudit

// What `stackaudit gate` reads from an audit: the figures its gates compare,
// taken from an agent's window audit or a one-shot dump audit (single
// process or a tree), each with why it is missing when it is.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace stackaudit {

enum class AuditKind { kWindow, kDump };

const char* audit_kind_name(AuditKind kind);  // "window" | "dump"

// A figure read from an audit, or why it could not be.
template <class T>
struct Known {
  std::optional<T> value;
  std::string missing;  // when !value: why, as a phrase ("the audit has no window.probes")

  explicit operator bool() const { return value.has_value(); }
  const T& operator*() const { return *value; }
  const T* operator->() const { return &*value; }
  static Known absent(std::string why) { return Known{std::nullopt, std::move(why)}; }
};

struct ProbeFigures {
  std::string name;
  long requests = 0;
  std::optional<double> p95, p99;  // seconds; none when no request completed
  std::optional<double> error_rate;
  std::vector<std::pair<std::string, long>> errors_by_kind;  // kinds with errors, as listed
};

struct CodePlace {
  std::string function, file;
  long line = 0;
};

// A place an event loop was blocked outside its selector.
struct LoopSite {
  std::string site;  // "basename:line", or the function when there is no file
  std::string function, file, category, primitive;
  long line = 0;
  std::optional<CodePlace> coroutine;  // the coroutine step the loop was running
  long samples = 0;                    // window: samples; dump: threads
  double share = 0;                    // of the event-loop samples (threads)
};

struct EventLoopFigures {
  // Window: samples of event-loop threads over the run; dump: event-loop
  // threads at the capture.
  long samples = 0;
  long blocked = 0;  // of those, blocked outside the selector
  double blocked_share = 0;
  std::vector<LoopSite> sites;  // most first
};

struct PoolFigures {
  std::string name;
  double max_threads = 0;            // window: threads.max over the rounds; dump: threads
  long samples = 0;                  // window: thread samples; dump: threads
  std::optional<double> idle_share;  // none without samples
};

struct TargetUpFigures {
  bool up = false;
  long rounds_down = 0;
  long restarts = 0;
  std::string ended;  // why the window ended ("duration", "signal", "target_exited", ...)
};

struct AuditFigures {
  std::string file;
  AuditKind kind = AuditKind::kDump;
  std::optional<std::string> captured_at;
  Known<std::vector<ProbeFigures>> probes;
  Known<double> rss_bytes;  // window: average over the rounds; dump: at the capture
  Known<double> threads;    // likewise
  Known<EventLoopFigures> event_loops;
  Known<std::vector<PoolFigures>> pools;
  Known<TargetUpFigures> target_up;
  Known<double> service_requests_per_second;
};

// The figures of a parsed audit. Throws UserError (exit 2) when doc is not a
// stackaudit.audit/v1 document; a field that is missing or of the wrong type
// only makes its figure missing, with why.
AuditFigures read_audit_figures(const nlohmann::json& doc, const std::string& file);

// Reads and parses an audit file: UserError (exit 2) with one sentence when it
// cannot be read, is not JSON, or not an audit. role: "baseline" or "current".
AuditFigures load_audit(const std::string& path, const std::string& role);

// "basename:line", the basename alone without a line, or the function when
// there is no file: how sites are named and compared.
std::string site_key(const std::string& file, long line, const std::string& function);

}  // namespace stackaudit

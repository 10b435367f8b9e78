// The outputs of a multi-process audit (dump --children; the agent over a
// service's master and its workers): a section per process, then a summary
// per process and in total. In JSON, the single-process audit of each process
// in an array under "processes" (docs/audit-json.md, "Multi-process audit").
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "agent/pipeline.h"

namespace stackaudit {

// Totals over the processes of a tree.
struct TreeTotals {
  size_t audited = 0, gone = 0, threads = 0, blocked = 0, idle = 0;
  std::map<std::string, size_t> by_category;
};
TreeTotals tree_totals(const TreeAudit& audit);

std::string tree_text_report(const TreeAudit& audit);

// The document as JSON (the agent's --audit-json), and written piece by
// piece, one thread's JSON at a time (dump).
nlohmann::json tree_audit_json(const TreeAudit& audit);
void write_tree_audit_json(const TreeAudit& audit,
                           const std::function<void(std::string_view)>& out);

// "PID 12 (gunicorn), parent PID 1: gunicorn -w 2 app:app", as shown.
std::string describe_process(const TreeProcess& p);

}  // namespace stackaudit

#include "agent/tree_report.h"

#include <sstream>

#include "agent/audit_json.h"
#include "agent/text_report.h"
#include "agent/version.h"
#include "collector/utf8.h"

namespace stackaudit {
namespace {

std::string joined(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& a : args) out += (out.empty() ? "" : " ") + a;
  return out;
}

// Where a process sits in the tree: what a reader needs to tell the master
// from its workers.
nlohmann::json tree_json(const ProcessAudit& p) {
  return {{"parent_pid", p.process.ppid}, {"depth", p.process.depth}};
}

nlohmann::json gone_json(const ProcessAudit& p) {
  std::vector<std::string> cmdline;
  for (const auto& a : p.process.cmdline) cmdline.push_back(valid_utf8(a));
  return {{"pid", p.process.pid},
          {"comm", valid_utf8(p.process.comm)},
          {"cmdline", cmdline},
          {"process_tree", tree_json(p)},
          {"reason", p.gone}};
}

// Everything but the processes' audits.
nlohmann::json tree_document_without_processes(const TreeAudit& audit) {
  using nlohmann::json;
  TreeTotals t = tree_totals(audit);
  int64_t at = 0;
  for (const ProcessAudit& p : audit.processes)
    if (p.snapshot && (at == 0 || p.snapshot->captured_at_unix_ns < at))
      at = p.snapshot->captured_at_unix_ns;
  json by_category = json::object();
  for (const auto& [c, n] : t.by_category) by_category[c] = n;
  json gone = json::array();
  for (const ProcessAudit& p : audit.processes)
    if (!p.snapshot) gone.push_back(gone_json(p));
  return {
      {"schema", kAuditSchema},
      {"tool", {{"name", "stackaudit"}, {"version", kVersion}}},
      {"captured_at", at ? json(rfc3339_utc(at)) : json(nullptr)},
      {"processes", json::array()},
      {"gone", gone},
      {"summary",
       {{"processes", t.audited},
        {"processes_gone", t.gone},
        {"processes_not_audited", audit.not_audited},
        {"threads", t.threads},
        {"blocked", t.blocked},
        {"idle", t.idle},
        {"by_category", by_category}}},
      {"warnings", audit.warnings},
  };
}

}  // namespace

std::string describe_process(const TreeProcess& p) {
  return "PID " + std::to_string(p.pid) + " (" + shown_text(valid_utf8(p.comm)) + "), parent PID " +
         std::to_string(p.ppid) + ": " + shown_text(valid_utf8(joined(p.cmdline)));
}

TreeTotals tree_totals(const TreeAudit& audit) {
  TreeTotals t;
  for (const ProcessAudit& p : audit.processes) {
    if (!p.snapshot) {
      ++t.gone;
      continue;
    }
    ++t.audited;
    const Summary& s = p.snapshot->summary;
    t.threads += s.threads;
    t.blocked += s.blocked;
    t.idle += s.idle;
    for (const auto& [c, n] : s.by_category) t.by_category[c] += n;
  }
  return t;
}

std::string tree_text_report(const TreeAudit& audit) {
  std::ostringstream out;
  TreeTotals totals = tree_totals(audit);
  out << "stackaudit " << kVersion << " | " << audit.processes.size() << " processes";
  if (!audit.processes.empty())
    out << ": PID " << audit.processes.front().process.pid << " and its descendants";
  out << "\n";
  for (const auto& w : audit.warnings) out << "warning: " << shown_text(w) << "\n";
  for (size_t i = 0; i < audit.processes.size(); ++i) {
    const ProcessAudit& p = audit.processes[i];
    out << "\n=== process " << i + 1 << " of " << audit.processes.size() << ": "
        << describe_process(p.process) << " ===\n";
    if (!p.snapshot) {
      out << "gone: " << shown_text(p.gone) << "\n";
      continue;
    }
    out << text_report(*p.snapshot);
  }
  out << "\nSummary per process:\n";
  for (const ProcessAudit& p : audit.processes) {
    out << "  PID " << p.process.pid << " (" << shown_text(valid_utf8(p.process.comm))
        << "), parent PID " << p.process.ppid << ": ";
    if (!p.snapshot) {
      out << "gone (" << shown_text(p.gone) << ")\n";
      continue;
    }
    const Summary& s = p.snapshot->summary;
    out << s.threads << " threads, " << s.blocked << " blocked (" << s.idle << " idle)";
    std::string cats;
    for (const auto& [c, n] : s.by_category)
      if (n > 0) cats += (cats.empty() ? ": " : ", ") + c + " " + std::to_string(n);
    out << cats;
    if (s.asyncio.read) {
      out << "; " << s.asyncio.tasks << " asyncio tasks";
      if (!s.asyncio.cycles.empty())
        out << " (" << s.asyncio.cycles.size() << " await cycle(s): DEADLOCK)";
    }
    out << "\n";
  }
  out << "Total: " << totals.audited << " processes audited";
  if (totals.gone > 0) out << ", " << totals.gone << " gone";
  if (audit.not_audited > 0) out << ", " << audit.not_audited << " not audited (--max-processes)";
  out << "; " << totals.threads << " threads, " << totals.blocked << " blocked (" << totals.idle
      << " idle)";
  std::string cats;
  for (const auto& [c, n] : totals.by_category)
    if (n > 0) cats += (cats.empty() ? ": " : ", ") + c + " " + std::to_string(n);
  out << cats << "\n";
  return out.str();
}

nlohmann::json tree_audit_json(const TreeAudit& audit) {
  nlohmann::json doc = tree_document_without_processes(audit);
  for (const ProcessAudit& p : audit.processes) {
    if (!p.snapshot) continue;
    nlohmann::json one = audit_json(*p.snapshot);
    one["process_tree"] = tree_json(p);
    doc["processes"].push_back(std::move(one));
  }
  return doc;
}

void write_tree_audit_json(const TreeAudit& audit,
                           const std::function<void(std::string_view)>& out) {
  // As dump(2) prints the whole document, cut where the processes go (the
  // only top-level key with an empty array, as "threads" is for one process);
  // each process's audit is written by write_audit_json, one thread at a
  // time, every line four spaces further in.
  std::string text = tree_document_without_processes(audit).dump(2);
  const std::string key = "\n  \"processes\": ";
  size_t at = text.find(key + "[]");
  if (at == std::string::npos) throw std::logic_error("tree audit JSON without a processes key");
  std::string_view whole = text;
  out(whole.substr(0, at + key.size()));
  bool first = true;
  std::string lines;
  for (const ProcessAudit& p : audit.processes) {
    if (!p.snapshot) continue;
    out(first ? "[\n    " : ",\n    ");
    first = false;
    // The process's own audit, with "process_tree" as its first key.
    std::string tree = "{\n      \"process_tree\": " + tree_json(p).dump() + ",";
    bool opened = false;
    write_audit_json(*p.snapshot, [&](std::string_view piece) {
      if (piece == "\n") return;  // its last piece: the document's final newline
      if (!opened) {              // "{" opens the object: the tree goes right after it
        out(tree);
        piece.remove_prefix(1);
        opened = true;
      }
      lines.clear();
      for (char c : piece) {
        lines += c;
        if (c == '\n') lines += "    ";
      }
      out(lines);
    });
  }
  out(first ? "[]" : "\n  ]");
  out(whole.substr(at + key.size() + 2));
  out("\n");
}

}  // namespace stackaudit

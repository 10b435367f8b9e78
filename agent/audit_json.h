// The audit JSON (schema stackaudit.audit/v1, docs/audit-json.md).
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "collector/snapshot.h"

namespace stackaudit {

inline constexpr const char* kAuditSchema = "stackaudit.audit/v1";

nlohmann::json audit_json(const Snapshot& snapshot);
nlohmann::json thread_json(const Thread& thread);
nlohmann::json event_loop_json(const EventLoop& loop);
nlohmann::json task_json(const AsyncTask& task);
// Writes audit_json(snapshot).dump(2) and a newline to out, piece by piece,
// never holding more than one thread's (or asyncio task's) JSON: what `dump`
// prints, at a fraction of the memory for thousands of threads or tasks.
void write_audit_json(const Snapshot& snapshot, const std::function<void(std::string_view)>& out);
nlohmann::json frame_json(const Frame& frame);
nlohmann::json fd_json(const FdInfo& fd);
std::string rfc3339_utc(int64_t unix_ns);
// An address as the JSON and the report show it: "0x7f3a2c1e4b80".
std::string hex(uint64_t v);

}  // namespace stackaudit

// The audit JSON (schema stackaudit.audit/v1, docs/audit-json.md).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "collector/snapshot.h"

namespace stackaudit {

inline constexpr const char* kAuditSchema = "stackaudit.audit/v1";

nlohmann::json audit_json(const Snapshot& snapshot);
nlohmann::json frame_json(const Frame& frame);
std::string rfc3339_utc(int64_t unix_ns);

}  // namespace stackaudit

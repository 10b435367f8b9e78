// The human report: per thread, what it waits on and where, then its stack;
// a summary by category at the end.
#pragma once

#include <string>
#include <string_view>

#include "collector/snapshot.h"

namespace stackaudit {

std::string text_report(const Snapshot& snapshot);

// Text from the target as the report shows it: valid UTF-8 already, control
// bytes as \xNN.
std::string shown_text(std::string_view text);

// A frame as the report shows it: "function (file:line)", "function
// (module+0xOFFSET)", or "module+0xOFFSET".
std::string shown_frame(const Frame& frame);

}  // namespace stackaudit

// Flame stacks (agent/flame.h) as a speedscope file
// (https://www.speedscope.app/file-format-schema.json; docs/flamegraphs.md).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "agent/flame.h"

namespace stackaudit {

// A file of "sampled" profiles over shared frames, weights in `count_noun`
// (plural: "threads" for a dump, "thread-samples" for the agent's window), unit
// "none": first "all threads", every stack under its category's root frame;
// then one profile per root frame (category, "idle: ...", "running"), most
// counted first, its stacks without that root. speedscope shows one profile
// at a time: the first gives the split by category, the others each
// category's stacks alone, wide enough to read. `name` is the file's name
// as speedscope shows it.
nlohmann::json speedscope_json(const FlameStacks& stacks, const std::string& name,
                               const std::string& count_noun);

}  // namespace stackaudit

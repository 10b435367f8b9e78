#include "agent/speedscope.h"

#include <algorithm>
#include <unordered_map>
#include <utility>
#include <vector>

#include "agent/version.h"
#include "collector/utf8.h"

namespace stackaudit {
namespace {

using nlohmann::json;

constexpr const char* kSchema = "https://www.speedscope.app/file-format-schema.json";

// The shared frames, each name once, indexed in order of first use.
class FrameTable {
 public:
  size_t index(const std::string& name) {
    auto [it, added] = index_.try_emplace(name, names_.size());
    if (added) names_.push_back(name);
    return it->second;
  }
  // Names are valid UTF-8 already, as snapshot text is (collector/utf8.h).
  json frames() const {
    json out = json::array();
    for (const std::string& n : names_) out.push_back({{"name", n}});
    return out;
  }

 private:
  std::unordered_map<std::string, size_t> index_;
  std::vector<std::string> names_;
};

json sampled_profile(const std::string& name, json samples, json weights, uint64_t total) {
  return {{"type", "sampled"},
          {"name", name},
          {"unit", "none"},
          {"startValue", 0},
          {"endValue", total},
          {"samples", std::move(samples)},
          {"weights", std::move(weights)}};
}

// "1 thread", "2 threads" (noun in the plural).
std::string counted(uint64_t n, const std::string& noun) {
  return std::to_string(n) + " " +
         (n == 1 && noun.ends_with('s') ? noun.substr(0, noun.size() - 1) : noun);
}

}  // namespace

json speedscope_json(const FlameStacks& stacks, const std::string& name,
                     const std::string& count_noun) {
  FrameTable frames;
  // A stack's frame indices, from `first` on.
  auto indices = [&](const std::vector<std::string>& stack, size_t first) {
    json out = json::array();
    for (size_t i = first; i < stack.size(); ++i) out.push_back(frames.index(stack[i]));
    return out;
  };

  json profiles = json::array();
  json all_samples = json::array(), all_weights = json::array();
  for (const auto& [stack, count] : stacks.stacks()) {
    all_samples.push_back(indices(stack, 0));
    all_weights.push_back(count);
  }
  profiles.push_back(sampled_profile("all threads: " + counted(stacks.total(), count_noun),
                                     std::move(all_samples), std::move(all_weights),
                                     stacks.total()));

  std::vector<std::pair<std::string, uint64_t>> roots;
  for (const auto& root : stacks.root_totals()) roots.push_back(root);
  std::stable_sort(roots.begin(), roots.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  for (const auto& [root, total] : roots) {
    json samples = json::array(), weights = json::array();
    // stacks() is sorted, so a root's stacks are one run.
    auto it = stacks.stacks().lower_bound({root});
    for (; it != stacks.stacks().end() && it->first.front() == root; ++it) {
      samples.push_back(indices(it->first, 1));
      weights.push_back(it->second);
    }
    profiles.push_back(sampled_profile(root + ": " + counted(total, count_noun), std::move(samples),
                                       std::move(weights), total));
  }

  return {{"$schema", kSchema},
          {"shared", {{"frames", frames.frames()}}},
          {"profiles", std::move(profiles)},
          {"name", valid_utf8(name)},
          {"activeProfileIndex", 0},
          {"exporter", std::string("stackaudit@") + kVersion}};
}

}  // namespace stackaudit

#include "agent/flame.h"

#include "collector/rules.h"

namespace stackaudit {
namespace {

// ';' separates frames and a line break ends a line in the folded format.
// (Snapshot text is valid UTF-8 already: collector/utf8.h.)
std::string folded_safe(std::string name) {
  for (char& c : name)
    if (c == ';')
      c = ':';
    else if (c == '\n' || c == '\r')
      c = ' ';
  return name;
}

}  // namespace

std::string flame_root(const Thread& t) {
  if (!t.blocking) return "running";
  if (t.blocking->idle) return "idle: " + t.blocking->category;
  return t.blocking->category;
}

std::string flame_frame(const Frame& f) {
  return folded_safe(site_label(f));
}

std::string flame_process(const Target& target) {
  return folded_safe(target.comm + " (PID " + std::to_string(target.pid) + ")");
}

void FlameStacks::add(const Thread& t, uint64_t count) {
  add(t, std::string(), count);
}

void FlameStacks::add(const Thread& t, const std::string& process, uint64_t count) {
  std::vector<std::string> stack{flame_root(t)};
  stack.reserve(t.frames.size() + 3);
  if (!process.empty()) stack.push_back(process);
  if (t.truncated) stack.push_back("[truncated]");  // the outermost frames are missing
  for (auto f = t.frames.rbegin(); f != t.frames.rend(); ++f) stack.push_back(flame_frame(*f));
  if (t.frames.empty()) stack.push_back("[no frames]");
  add_stack(std::move(stack), count);
}

void FlameStacks::add(const Snapshot& s, bool with_process) {
  std::string process = with_process ? flame_process(s.target) : std::string();
  for (const Thread& t : s.threads) add(t, process);
}

void FlameStacks::add_stack(std::vector<std::string> stack, uint64_t count) {
  auto it = stacks_.find(stack);
  if (it == stacks_.end() && stacks_.size() >= max_stacks_)
    it = stacks_.try_emplace({stack.front(), "[other stacks]"}, 0).first;
  else if (it == stacks_.end())
    it = stacks_.emplace(std::move(stack), 0).first;
  it->second += count;
  total_ += count;
}

std::map<std::string, uint64_t> FlameStacks::root_totals() const {
  std::map<std::string, uint64_t> out;
  for (const auto& [stack, count] : stacks_) out[stack.front()] += count;
  return out;
}

std::string FlameStacks::folded() const {
  std::string out;
  for (const auto& [stack, count] : stacks_) {
    for (size_t i = 0; i < stack.size(); ++i) {
      if (i) out += ';';
      out += stack[i];
    }
    out += ' ';
    out += std::to_string(count);
    out += '\n';
  }
  return out;
}

}  // namespace stackaudit

#include "agent/flame.h"

#include "collector/rules.h"

namespace stackaudit {

std::string flame_root(const Thread& t) {
  if (!t.blocking) return "running";
  if (t.blocking->idle) return "idle: " + t.blocking->category;
  return t.blocking->category;
}

std::string flame_frame(const Frame& f) {
  std::string name = site_label(f);
  for (char& c : name)
    if (c == ';')
      c = ':';
    else if (c == '\n' || c == '\r')
      c = ' ';
  return name;
}

void FlameStacks::add(const Thread& t, uint64_t count) {
  std::vector<std::string> stack{flame_root(t)};
  if (t.truncated) stack.push_back("[truncated]");  // the outermost frames are missing
  for (auto f = t.frames.rbegin(); f != t.frames.rend(); ++f) stack.push_back(flame_frame(*f));
  if (t.frames.empty()) stack.push_back("[no frames]");
  auto it = stacks_.find(stack);
  if (it == stacks_.end() && stacks_.size() >= max_stacks_)
    it = stacks_.try_emplace({stack.front(), "[other stacks]"}, 0).first;
  else if (it == stacks_.end())
    it = stacks_.emplace(std::move(stack), 0).first;
  it->second += count;
  total_ += count;
}

void FlameStacks::add(const Snapshot& s) {
  for (const Thread& t : s.threads) add(t);
}

std::string FlameStacks::folded() const {
  std::string out;
  for (const auto& [stack, count] : stacks_) {
    for (size_t i = 0; i < stack.size(); ++i) out += (i ? ";" : "") + stack[i];
    out += " " + std::to_string(count) + "\n";
  }
  return out;
}

}  // namespace stackaudit

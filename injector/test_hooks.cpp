#include "injector/test_hooks.h"

#include <cstdlib>
#include <string>
#include <string_view>

namespace stackaudit {
namespace {

TestHooks parse_hooks() {
  TestHooks hooks;
#ifdef STACKAUDIT_TEST_HOOKS
  const char* env = std::getenv("STACKAUDIT_TEST_HOOK");
  std::string_view list = env ? env : "";
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view hook = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    if (hook == "stop-d-state") hooks.stop_d_state = true;
    if (hook.starts_with("hang-in-stop:"))
      hooks.hang_in_stop_ms = std::atol(std::string(hook.substr(13)).c_str());
    if (hook.starts_with("hang-while-holding:"))
      hooks.hang_while_holding_ms = std::atol(std::string(hook.substr(19)).c_str());
    if (hook.starts_with("pause-after-listing:"))
      hooks.pause_after_listing = std::string(hook.substr(20));
  }
#endif
  return hooks;
}

}  // namespace

const TestHooks& test_hooks() {
  static const TestHooks hooks = parse_hooks();
  return hooks;
}

}  // namespace stackaudit

// Fault hooks for the safety tests, read from STACKAUDIT_TEST_HOOK (a comma-
// separated list). They exist only in a build configured with
// -DSTACKAUDIT_TEST_HOOKS=ON (./setup.sh test does); in any other build every
// hook is off and the variable is ignored.
//
//   hang-in-stop:MS   the stopper sleeps MS inside every stop window, as if it
//                     were stopped, starved or hung while holding a thread
//   hang-while-holding:MS
//                     dump --consistent sleeps MS after it has held its threads,
//                     before it lets them go, as if it were stopped or starved
//   stop-d-state      threads in uninterruptible sleep (D) are stopped rather
//                     than read where they are, so their stop arrives late
//   pause-after-listing:PATH
//                     dump --children creates PATH once it has listed the
//                     processes, and waits (30 s at most) until PATH is
//                     removed before capturing them: a test ends one meanwhile
#pragma once

#include <string>

namespace stackaudit {

struct TestHooks {
  long hang_in_stop_ms = 0;
  long hang_while_holding_ms = 0;
  bool stop_d_state = false;
  std::string pause_after_listing;
};

const TestHooks& test_hooks();

}  // namespace stackaudit

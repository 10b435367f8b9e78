#pragma once

namespace stackaudit {

// `stackaudit demo`: starts the bundled demo target, audits it, prints the
// report, writes audit.json in the current directory, stops the target.
int run_demo();

}  // namespace stackaudit

#include "agent/cli.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "agent/demo.h"
#include "agent/dump.h"
#include "agent/exit_codes.h"
#include "agent/version.h"
#include "injector/ptrace_stopper.h"

namespace stackaudit {
namespace {

constexpr const char* kDescription =
    "stackaudit: which threads of a live process are blocked, in which primitive\n"
    "(lock, condition, queue, sleep, socket, file, poll, process, futex), and where.\n"
    "Blocked threads are read without being stopped; running threads are stopped\n"
    "one at a time for microseconds (PTRACE_SEIZE, never PTRACE_ATTACH); waits that\n"
    "a stop would break with EINTR are never stopped. Needs root or CAP_SYS_PTRACE.";

constexpr const char* kFooter =
    "Exit codes: 0 done; 1 done but some threads could not be captured; 2 usage error\n"
    "(bad option, malformed rules file, unwritable output); 3 target not found or not\n"
    "traceable (no such PID, permission, another tracer, kernel thread, zombie).\n"
    "Docs: README.md, docs/cli.md, docs/audit-json.md, docs/rules.md.";

void setup_logging() {
  auto logger = spdlog::stderr_color_mt("stackaudit");
  logger->set_pattern("stackaudit: %l: %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::warn);
}

}  // namespace

int run_cli(int argc, char** argv) {
  block_sigchld();  // before any thread: stop notifications must reach the capture thread
  setup_logging();
  CLI::App app(kDescription, "stackaudit");
  app.footer(kFooter);
  app.set_version_flag("--version", std::string("stackaudit ") + kVersion);
  app.require_subcommand(1);

  DumpOptions dump;
  CLI::App* dump_cmd = app.add_subcommand(
      "dump", "Audit every thread of a running process once and print the report.");
  dump_cmd->add_option("-p,--pid", dump.pid, "Process to audit")->required();
  dump_cmd
      ->add_option("-f,--format", dump.format,
                   "text: a report for people (default); json: the audit JSON "
                   "(schema stackaudit.audit/v1, see docs/audit-json.md)")
      ->check(CLI::IsMember({"text", "json"}));
  dump_cmd->add_option("-o,--output", dump.output,
                       "Write to FILE (atomically: temp file + rename) instead of stdout");
  dump_cmd
      ->add_option("--stack", dump.stack,
                   "Frames to show: python (Python frames only; the default for the text report "
                   "of a Python process), merged (Python frames inside the native stack; the "
                   "default otherwise), native")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, StackView>{{"python", StackView::kPython},
                                           {"merged", StackView::kMerged},
                                           {"native", StackView::kNative}}));
  dump_cmd->add_option("--rules", dump.rules_file,
                       "Extra classification rules, tried before the built-in ones "
                       "(format: docs/rules.md)");
  dump_cmd->footer(kFooter);

  CLI::App* demo_cmd = app.add_subcommand(
      "demo",
      "Start the bundled demo service, audit it, print the report, write audit.json in the "
      "current directory, and stop the demo service.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "stackaudit: %s (see 'stackaudit --help')\n", e.what());
    return kExitUsage;
  }

  try {
    if (*dump_cmd) return run_dump(dump);
    if (*demo_cmd) return run_demo();
  } catch (const UserError& e) {
    std::fprintf(stderr, "stackaudit: %s\n", e.message.c_str());
    return e.code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stackaudit: internal error: %s\n", e.what());
    return kExitUsage;
  }
  return kExitUsage;
}

}  // namespace stackaudit

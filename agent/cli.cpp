#include "agent/cli.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "agent/agent.h"
#include "agent/demo.h"
#include "agent/dump.h"
#include "agent/exit_codes.h"
#include "agent/gate.h"
#include "agent/version.h"
#include "injector/ptrace_stopper.h"
#include "injector/stopper_process.h"

namespace stackaudit {
namespace {

constexpr const char* kDescription =
    "stackaudit: which threads of a live process are blocked, in which primitive\n"
    "(lock, condition, queue, sleep, socket, file, io, poll, process, futex), and\n"
    "where, on what (the lock's owner, the fds and peers, the timeout).\n"
    "Blocked threads are read without being stopped; running threads are stopped\n"
    "one at a time for microseconds (PTRACE_SEIZE, never PTRACE_ATTACH) by a\n"
    "real-time stopper process whose watchdog bounds every stop (--max-stop); waits\n"
    "that a stop would break with EINTR are never stopped, and under a seccomp\n"
    "filter no blocked thread is. Needs root or CAP_SYS_PTRACE (CAP_SYS_NICE for\n"
    "real-time stops).";

constexpr const char* kMaxStopHelp =
    "The longest any thread of the target may stay stopped (default 50ms, 10ms to 10s). Stops "
    "are made by a separate stopper process whose kernel timer kills it past this bound, "
    "whatever happens to stackaudit (stopped, starved, hung); the kernel then lets the thread "
    "go. A stop normally lasts microseconds";

constexpr const char* kSourceLinesHelp =
    "Which frames get a source file and line from debug info: program (the default: the "
    "executable and libraries outside /lib and /usr/lib) or all (system libraries too, where "
    "their debug info is installed, e.g. libc6-dbg; inflating it makes a dump of a small "
    "process several times slower)";

constexpr const char* kMaxProcessesHelp =
    "With --children or --match: the most processes audited (default 64, 1 to 4096), breadth "
    "first from the top; past it the rest are left out and the output says how many";

// --source-lines, the same for dump and agent.
void add_source_lines(CLI::App* command, SourceLines& lines) {
  command->add_option("--source-lines", lines, kSourceLinesHelp)
      ->transform(CLI::CheckedTransformer(std::map<std::string, SourceLines>{
          {"program", SourceLines::kProgram}, {"all", SourceLines::kAll}}))
      ->option_text("program|all");
}

constexpr const char* kTasksHelp =
    "Read the asyncio tasks of a CPython target (the default): every task of every event loop, "
    "its coroutine stack, what it awaits and which tasks await it, and await cycles (a "
    "deadlock). Tasks are read from memory without stopping the loop";

constexpr const char* kNoTasksHelp =
    "Leave the asyncio tasks out, where reading thousands of them would be slow";

std::string max_tasks_help() {
  return "The most asyncio tasks read per event loop (default " +
         std::to_string(SnapshotBuilder::kDefaultMaxTasksPerLoop) +
         ", at least 1); past it the output says how many the loop had";
}

// --tasks/--no-tasks and --max-tasks, the same for dump and agent. The cap
// is read signed and checked after parsing (set_max_tasks).
void add_task_options(CLI::App* command, TaskOptions& tasks, long long& max_tasks) {
  CLI::Option* on = command->add_flag_callback(
      "--tasks", [&tasks] { tasks.enabled = true; }, kTasksHelp);
  command
      ->add_flag_callback(
          "--no-tasks", [&tasks] { tasks.enabled = false; }, kNoTasksHelp)
      ->excludes(on);
  command->add_option("--max-tasks", max_tasks, max_tasks_help())->option_text("N");
}

void set_max_tasks(TaskOptions& tasks, long long max_tasks) {
  check_max_tasks(max_tasks);
  tasks.max_per_loop = static_cast<size_t>(max_tasks);
}

constexpr const char* kFooter =
    "Exit codes: 0 done; 1 done but some threads could not be captured (with --children:\n"
    "or a process was gone, or more than --max-processes; with --consistent: or the threads\n"
    "could not be pinned to one instant); 2 usage error (bad option,\n"
    "malformed rules file, unwritable output); 3 target not found or not traceable (no\n"
    "such PID, permission, another tracer, kernel thread, zombie).\n"
    "Docs: README.md, docs/cli.md, docs/audit-json.md, docs/rules.md, docs/flamegraphs.md.";

constexpr const char* kGateDescription =
    "Compare the current run's audit with a baseline's and hold it to regression gates: the\n"
    "probe's latency and errors, RSS, threads, event loops, bridge pools, uptime, throughput.\n"
    "Both audits are agent --audit-json windows, or both dump --format json audits (then\n"
    "only rss, threads, the event-loop and pool gates apply).";

constexpr const char* kGateFooter =
    "Gates (id: default; change them in --thresholds FILE, see docs/gate.md):\n"
    "  probe_p95, probe_p99   per probe in both runs: current <= baseline x1.10 (max_ratio)\n"
    "  probe_error_rate       current <= baseline + 0.001, i.e. 0.1 point (max_increase)\n"
    "  rss                    average RSS <= baseline x1.05 (max_ratio)\n"
    "  threads                average thread count <= baseline x1.00 (max_ratio)\n"
    "  event_loop_blocked     no event loop blocked outside its selector (max_share 0):\n"
    "                         names each site file:line and its coroutine\n"
    "  event_loop_new_sites   no site blocking an event loop that the baseline did not have\n"
    "  pool_threads           each --pool at most 10 threads (max_threads); absent = 0\n"
    "  pool_idle              each --pool idle in >= 50 % of its samples (min_idle_share)\n"
    "  target_up              the target was up for the whole current window\n"
    "  throughput             service req/s >= baseline x0.90 (min_ratio; --service-metrics)\n"
    "They prove the current run did no worse than the baseline on these figures, under the\n"
    "load each run had; not that the load was the same, nor anything the run did not\n"
    "exercise. A gate that cannot be evaluated (no probe in the baseline, a figure a dump\n"
    "does not have) is skipped with why: never passed, and it does not fail the run.\n"
    "Exit codes: 0 every evaluated gate holds; 1 a gate fails; 2 usage error (a missing or\n"
    "unreadable file, not JSON, not a stackaudit.audit/v1 audit, audits of different kinds,\n"
    "an unknown gate or key, a wrong type or a TOML error in the thresholds file: FILE:LINE).\n"
    "Docs: docs/gate.md.";

void setup_logging() {
  auto logger = spdlog::stderr_color_mt("stackaudit");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e stackaudit %l: %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::warn);
}

}  // namespace

int run_cli(int argc, char** argv) {
  // The stopper process is this binary, started again by the capture.
  if (is_stopper_invocation(argc, argv)) return stopper_main(argc, argv);
  // No network lookups, ever: libdw consults debuginfod when this is set. Done
  // here, before any thread exists, since the environment is not thread-safe.
  ::unsetenv("DEBUGINFOD_URLS");
  block_sigchld();  // before any thread: stop notifications must reach the capture thread
  setup_logging();
  CLI::App app(kDescription, "stackaudit");
  app.footer(std::string(kFooter) +
             "\ngate: 0 every evaluated gate holds, 1 a gate fails, 2 usage error (see 'stackaudit "
             "gate --help', docs/gate.md).");
  app.set_version_flag("--version", std::string("stackaudit ") + kVersion);
  app.require_subcommand(1);

  DumpOptions dump;
  CLI::App* dump_cmd = app.add_subcommand(
      "dump", "Audit every thread of a running process once and print the report.");
  dump_cmd->add_option("-p,--pid", dump.pid, "Process to audit")->required();
  dump_cmd->add_flag("-c,--children", dump.children,
                     "Audit PID and every descendant found at start (a service's master and its "
                     "forked workers), one process at a time: a section per process, then a "
                     "summary per process and in total. A descendant that exits meanwhile is "
                     "reported as gone");
  dump_cmd->add_option("--max-processes", dump.max_processes, kMaxProcessesHelp);
  dump_cmd
      ->add_option("-f,--format", dump.format,
                   "text: a report for people (default); json: the audit JSON "
                   "(schema stackaudit.audit/v1, see docs/audit-json.md); folded: collapsed "
                   "stacks for flamegraph.pl, inferno or speedscope, one line per distinct "
                   "stack with its thread count, under a root frame naming its category "
                   "(with --children, then its process); speedscope: a speedscope.app file, "
                   "one profile of all threads, then one per category (docs/flamegraphs.md)")
      ->check(CLI::IsMember({"text", "json", "folded", "speedscope"}))
      ->option_text("text|json|folded|speedscope");
  dump_cmd->add_option("-o,--output", dump.output,
                       "Write to FILE (atomically: temp file + rename) instead of stdout");
  dump_cmd
      ->add_option("--stack", dump.stack,
                   "Frames to show: python (Python frames only; the default for the text report "
                   "of a Python process), merged (Python frames inside the native stack; the "
                   "default otherwise), native")
      ->transform(
          CLI::CheckedTransformer(std::map<std::string, StackView>{{"python", StackView::kPython},
                                                                   {"merged", StackView::kMerged},
                                                                   {"native", StackView::kNative}}))
      ->option_text("python|merged|native");
  dump_cmd->add_option("--rules", dump.rules_file,
                       "Extra classification rules, tried before the built-in ones "
                       "(format: docs/rules.md)");
  std::string dump_max_stop = "50ms";
  dump_cmd->add_option("--max-stop", dump_max_stop, kMaxStopHelp);
  dump_cmd->add_flag(
      "--consistent", dump.consistent,
      "Capture every thread's stack and call as they were at one instant: threads that must be "
      "stopped (running ones, and blocked ones whose stack needs registers) are held until all "
      "are captured (the window is reported, and bounded by --max-stop, past which they are let "
      "go and the snapshot says it is not consistent); the others are copied without a stop "
      "and checked not to have run meanwhile. Lock owners are read right after. Waits that a "
      "stop would break are never stopped. Default: one thread at a time");
  add_source_lines(dump_cmd, dump.source_lines);
  long long dump_max_tasks = SnapshotBuilder::kDefaultMaxTasksPerLoop;
  add_task_options(dump_cmd, dump.tasks, dump_max_tasks);
  dump_cmd->footer(kFooter);

  AgentOptions agent;
  std::string interval = "1s", duration, log_level = "info";
  CLI::App* agent_cmd = app.add_subcommand(
      "agent",
      "Sample a process every --interval and serve Prometheus metrics (/metrics), a status "
      "page (/) and flame-graph stacks (/folded) on --listen; write an aggregate audit and "
      "flame graphs on exit and on SIGUSR1. Stop with SIGINT or SIGTERM.");
  agent_cmd->add_option("-p,--pid", agent.pid, "Process to audit; the agent ends when it exits");
  agent_cmd->add_flag("-c,--children", agent.children,
                      "With --pid: audit its descendants too (its forked workers), found again "
                      "every round");
  agent_cmd->add_option("--match", agent.match,
                        "Audit every process whose command line matches this regular expression "
                        "(POSIX extended) and their descendants (a service's master and its "
                        "forked workers), found again every round: recycled workers and a "
                        "restarted service are followed; wait while none matches. stackaudit "
                        "itself and its stopper are never audited");
  agent_cmd->add_option("--max-processes", agent.max_processes, kMaxProcessesHelp);
  agent_cmd->add_option("--interval", interval,
                        "Time between rounds on average (default 1s; 100ms, 2m, ...); each is "
                        "0.8 to 1.2 of it at random, so that rounds do not alias with what the "
                        "target does periodically");
  agent_cmd->add_option("--listen", agent.listen,
                        "ADDR:PORT to serve /metrics, / and /folded on (default 127.0.0.1:9464)");
  agent_cmd->add_option("--audit-json", agent.audit_json,
                        "Write the run's aggregate audit (stackaudit.audit/v1 with a window "
                        "section) to FILE, atomically, on exit and on SIGUSR1");
  agent_cmd
      ->add_option("--folded", agent.folded,
                   "Write where the run's threads waited as collapsed stacks (for "
                   "flamegraph.pl, inferno, speedscope) to FILE, atomically, on exit and on "
                   "SIGUSR1: each stack under its category's root frame (with --children or "
                   "--match, then its process), counted in thread-samples (every thread of "
                   "every round). The same text is served at /folded")
      ->option_text("FILE");
  agent_cmd
      ->add_option("--speedscope", agent.speedscope,
                   "The same stacks as a speedscope.app file, on exit and on SIGUSR1 "
                   "(docs/flamegraphs.md)")
      ->option_text("FILE");
  agent_cmd->add_option("--duration", duration,
                        "Stop after this long (default: run until stopped)");
  agent_cmd->add_option("--rules", agent.rules_file,
                        "Extra classification rules (format: docs/rules.md)");
  agent_cmd
      ->add_option("--max-sites", agent.max_sites,
                   "Distinct call-site labels in metrics (default 50; the rest are "
                   "site=\"other\")")
      ->check(CLI::PositiveNumber);
  std::string agent_max_stop = "50ms";
  agent_cmd->add_option("--max-stop", agent_max_stop, kMaxStopHelp);
  add_source_lines(agent_cmd, agent.source_lines);
  long long agent_max_tasks = SnapshotBuilder::kDefaultMaxTasksPerLoop;
  add_task_options(agent_cmd, agent.tasks, agent_max_tasks);
  agent_cmd
      ->add_option(
          "--probe", agent.probes,
          "Measure the service's latency from outside: send requests to URL at a constant rate "
          "(--probe-rate) from a thread of their own, for the agent's whole run, target or not. "
          "http://HOST[:PORT]/PATH and https://... send a GET (keep-alive; a 2xx or 3xx is ok, "
          "redirects are not followed, no proxy is used); tcp://HOST:PORT only opens a TCP "
          "connection and closes it. Each request is timed from when it was due, so a slow answer "
          "never delays the schedule and a request that could not start on time counts its wait. "
          "NAME (A-Z a-z 0-9 _ . : / -, 64 at most) is the metrics' probe label; without it, "
          "HOST:PORT/PATH. Results: ok, http_4xx, http_5xx, timeout, connect_error (refused, "
          "not resolved, TLS handshake or certificate failure, closed before an answer). Repeat "
          "for several probes; figures go to "
          "stackaudit_probe_duration_seconds, stackaudit_probe_requests_total and the audit's "
          "window.probes")
      ->option_text("[NAME=]URL");
  agent_cmd
      ->add_option("--probe-rate", agent.probe_rate,
                   "Requests per second per probe (default 5/s; 5/s, 20 or 0.5/s; at most "
                   "1000/s)")
      ->option_text("N/s");
  std::string probe_timeout = "2s";
  agent_cmd
      ->add_option("--probe-timeout", probe_timeout,
                   "How long a probe request may take, from when it was due, before it "
                   "counts as a timeout (default 2s, 10ms to 60s); also bounds each "
                   "--service-metrics fetch")
      ->option_text("D");
  agent_cmd
      ->add_option("--probe-cacert", agent.probe_cacert,
                   "CA certificates (PEM) that https:// probes and --service-metrics trust "
                   "instead of the system's, e.g. the CA of a service's internal "
                   "certificate. A certificate that does not verify counts as a "
                   "connect_error")
      ->option_text("FILE");
  agent_cmd
      ->add_option("--service-metrics", agent.service_metrics,
                   "The service's own Prometheus endpoint (http:// or https://), fetched "
                   "once per --interval from a thread of its own; with "
                   "--throughput-metric, the audit's window.service gives the rate of that "
                   "counter: the service's own count of requests, not a measurement")
      ->option_text("URL");
  agent_cmd
      ->add_option("--throughput-metric", agent.throughput_metric,
                   "The request counter to read at --service-metrics: every sample named "
                   "NAME or NAME_total, summed over its label sets; resets (a restart) "
                   "are handled")
      ->option_text("NAME");
  agent_cmd->add_option("--log-level", log_level, "debug, info (default), warn, error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
  agent_cmd->footer(kFooter);

  CLI::App* demo_cmd = app.add_subcommand(
      "demo",
      "Start the bundled demo service, audit it, print the report, write audit.json in the "
      "current directory, and stop the demo service.");

  GateOptions gate;
  CLI::App* gate_cmd = app.add_subcommand("gate", kGateDescription);
  gate_cmd->add_option("--baseline", gate.baseline, "The audit before the change (JSON)")
      ->required()
      ->option_text("FILE REQUIRED");
  gate_cmd->add_option("--current", gate.current, "The audit of the run to judge (JSON)")
      ->required()
      ->option_text("FILE REQUIRED");
  gate_cmd
      ->add_option("--thresholds", gate.thresholds,
                   "A TOML file that changes the defaults: one table per gate id with its "
                   "keys and enabled = true|false; [pool] names = [...] (docs/gate.md)")
      ->option_text("FILE");
  gate_cmd
      ->add_option("-f,--format", gate.format,
                   "text: a table for people (default); json: for CI (schema stackaudit.gate/v1)")
      ->check(CLI::IsMember({"text", "json"}))
      ->option_text("text|json");
  gate_cmd
      ->add_option("--pool", gate.pools,
                   "A thread pool to gate (threads named NAME_N or NAME-N), e.g. legacy_bridge; "
                   "repeatable, added to the thresholds file's [pool] names")
      ->option_text("NAME ...");
  gate_cmd
      ->add_option("-o,--output", gate.output,
                   "Write the report to FILE (atomically) instead of stdout")
      ->option_text("FILE");
  gate_cmd->footer(kGateFooter);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Point at the help of the command that was being parsed.
    std::string help = "stackaudit --help";
    for (const CLI::App* sub : {dump_cmd, agent_cmd, gate_cmd})
      if (sub->parsed()) help = "stackaudit " + sub->get_name() + " --help";
    std::fprintf(stderr, "stackaudit: %s (see '%s')\n", e.what(), help.c_str());
    return kExitUsage;
  }

  try {
    if (*dump_cmd) {
      dump.max_stop = parse_duration(dump_max_stop, "--max-stop");
      set_max_tasks(dump.tasks, dump_max_tasks);
      return run_dump(dump);
    }
    if (*agent_cmd) {
      spdlog::set_level(spdlog::level::from_str(log_level));
      agent.interval = parse_duration(interval, "--interval");
      if (!duration.empty()) {
        agent.duration = parse_duration(duration, "--duration");
        if (agent.duration.count() <= 0)
          throw UserError{kExitUsage,
                          "--duration must be longer than 0 (leave it out to run until stopped)"};
      }
      agent.max_stop = parse_duration(agent_max_stop, "--max-stop");
      set_max_tasks(agent.tasks, agent_max_tasks);
      agent.probe_timeout = parse_duration(probe_timeout, "--probe-timeout");
      return run_agent(agent);
    }
    if (*demo_cmd) return run_demo();
    if (*gate_cmd) return run_gate(gate);
  } catch (const UserError& e) {
    std::fprintf(stderr, "stackaudit: %s\n", e.message.c_str());
    return e.code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stackaudit: internal error: %s\n", e.what());
    return kExitUsage;
  } catch (...) {
    std::fprintf(stderr, "stackaudit: internal error (an exception of an unknown type)\n");
    return kExitUsage;
  }
  return kExitUsage;
}

}  // namespace stackaudit

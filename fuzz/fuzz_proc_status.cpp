// /proc/PID/status (and a thread's, for its Seccomp: line). Name: is the
// target's thread name, escaped by the kernel; the rest are numbers.
#include <cinttypes>

#include "fuzz/fuzz_check.h"
#include "injector/proc.h"

using namespace stackaudit;

namespace {

// As status prints Name: (seq_escape_str with ESCAPE_SPACE | ESCAPE_SPECIAL):
// no raw newline can start a line of its own.
std::string kernel_escape(const std::string& name) {
  static const char kRaw[] = "\n\t\r\f\v\\\"\a\x1b";
  static const char kEscaped[] = "ntrfv\\\"ae";
  std::string out;
  for (char c : name) {
    const char* at = c ? std::strchr(kRaw, c) : nullptr;
    if (at) {
      out += '\\';
      out += kEscaped[at - kRaw];
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text = fuzz::as_text(data, size);
  ProcessInfo info;
  proc::parse_status(text, info);
  // Fields that come from elsewhere are left alone.
  FUZZ_CHECK(info.pid == 0 && info.ppid == 0 && info.comm.empty() && info.exe.empty());
  FUZZ_CHECK(info.cmdline.empty() && info.state == '?' && info.utime_ticks == 0);
  int seccomp = proc::parse_seccomp(text);
  if (text.find("\nSeccomp:") == std::string::npos) FUZZ_CHECK(seccomp == -1);

  // A status file as the kernel writes it, with a name and numbers from the input.
  fuzz::Bytes in(data, size);
  std::string name = in.text(16);
  uint64_t size_kb = in.take<uint32_t>(), rss_kb = in.take<uint32_t>();
  uint64_t threads = in.take<uint16_t>();
  uint32_t tracer = in.take<uint32_t>() & 0x3fffffff;
  uint64_t voluntary = in.take<uint64_t>(), nonvoluntary = in.take<uint64_t>();
  int mode = in.take<uint8_t>() % 3;
  char body[2048];
  std::snprintf(body, sizeof body,
                "Umask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4242\n"
                "PPid:\t1\nTracerPid:\t%" PRIu32
                "\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
                "FDSize:\t64\nGroups:\t0 \nVmPeak:\t%8" PRIu64 " kB\nVmSize:\t%8" PRIu64
                " kB\nVmLck:\t       0 kB\nVmHWM:\t%8" PRIu64 " kB\nVmRSS:\t%8" PRIu64
                " kB\nThreads:\t%" PRIu64
                "\nSigQ:\t0/31402\nNoNewPrivs:\t0\nSeccomp:\t%d\nSeccomp_filters:\t0\n"
                "Cpus_allowed_list:\t0-1\nvoluntary_ctxt_switches:\t%" PRIu64
                "\nnonvoluntary_ctxt_switches:\t%" PRIu64 "\n",
                tracer, size_kb, size_kb, rss_kb, rss_kb, threads, mode, voluntary, nonvoluntary);
  std::string status = "Name:\t" + kernel_escape(name) + "\n" + body;
  ProcessInfo got;
  proc::parse_status(status, got);
  FUZZ_CHECK(got.virtual_memory_bytes == size_kb * 1024);
  FUZZ_CHECK(got.rss_bytes == rss_kb * 1024);
  FUZZ_CHECK(got.threads == threads);
  FUZZ_CHECK(got.tracer_pid == static_cast<pid_t>(tracer));
  FUZZ_CHECK(got.voluntary_ctxt_switches == voluntary);
  FUZZ_CHECK(got.nonvoluntary_ctxt_switches == nonvoluntary);
  FUZZ_CHECK(got.seccomp == mode);
  FUZZ_CHECK(proc::parse_seccomp(status) == mode);
  return 0;
}

// /proc parsers, the syscall table and small collector helpers, on canned text.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "collector/snapshot_builder.h"
#include "collector/symbolizer.h"
#include "injector/capture.h"
#include "injector/proc.h"
#include "injector/syscalls.h"

namespace stackaudit {
namespace {

TEST(ProcStat, CommWithSpacesAndParenthesesIsSafe) {
  auto st = proc::parse_stat(
      "4242 (evil) name (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 123456 "
      "1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->comm, "evil) name (x");
  EXPECT_EQ(st->state, 'S');
  EXPECT_EQ(st->flags, 4194560u);
  EXPECT_EQ(st->utime_ticks, 7u);
  EXPECT_EQ(st->stime_ticks, 3u);
  EXPECT_EQ(st->start_time_ticks, 123456u);
  EXPECT_FALSE(proc::parse_stat("garbage"));
}

TEST(ProcSyscall, ThreeShapes) {
  auto running = proc::parse_syscall("running\n");
  ASSERT_TRUE(running);
  EXPECT_EQ(running->kind, SyscallState::Kind::kRunning);

  auto outside = proc::parse_syscall("-1 0x7ffd1000 0x401000\n");
  ASSERT_TRUE(outside);
  EXPECT_EQ(outside->kind, SyscallState::Kind::kOutsideSyscall);
  EXPECT_EQ(outside->sp, 0x7ffd1000u);
  EXPECT_EQ(outside->pc, 0x401000u);

  auto in = proc::parse_syscall(
      "232 0x3 0x7ffd2000 0x8 0xffffffffffffffff 0x0 0x0 0x7ffd1f00 0x7f0000001234\n");
  ASSERT_TRUE(in);
  EXPECT_EQ(in->kind, SyscallState::Kind::kInSyscall);
  EXPECT_EQ(in->nr, 232);
  EXPECT_EQ(in->args[0], 3u);
  EXPECT_EQ(in->args[3], 0xffffffffffffffffu);
  EXPECT_EQ(in->sp, 0x7ffd1f00u);
  EXPECT_EQ(in->pc, 0x7f0000001234u);
  EXPECT_EQ(in->line,
            "232 0x3 0x7ffd2000 0x8 0xffffffffffffffff 0x0 0x0 0x7ffd1f00 0x7f0000001234");
}

TEST(ProcMaps, ParsesPermissionsOffsetsAndPathsWithSpaces) {
  auto maps = proc::parse_maps(
      "55d0c0000000-55d0c0001000 r--p 00000000 08:01 1234 /opt/my app/bin\n"
      "55d0c0001000-55d0c0005000 r-xp 00001000 08:01 1234 /opt/my app/bin\n"
      "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]\n"
      "7f0000000000-7f0000001000 rw-p 00000000 00:00 0\n");
  ASSERT_EQ(maps.size(), 4u);
  EXPECT_EQ(maps[1].start, 0x55d0c0001000u);
  EXPECT_EQ(maps[1].offset, 0x1000u);
  EXPECT_TRUE(maps[1].executable);
  EXPECT_FALSE(maps[1].writable);
  EXPECT_EQ(maps[1].inode, 1234u);
  EXPECT_EQ(maps[1].dev_major, 8u);
  EXPECT_EQ(maps[1].dev_minor, 1u);
  EXPECT_EQ(maps[1].path, "/opt/my app/bin");
  EXPECT_EQ(maps[2].path, "[stack]");
  EXPECT_EQ(maps[3].path, "");
}

TEST(ProcSockets, TcpAndUnixTables) {
  std::vector<SocketEntry> out;
  proc::parse_inet_sockets(
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
      "timeout inode\n"
      "   0: 0100007F:1F90 0100007F:9D1C 01 00000000:00000000 00:00000000 00000000     0        "
      "0 55501 1 0000000000000000 20 4 30 10 -1\n"
      "   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        "
      "0 55502 1 0000000000000000 100 0 0 10 0\n",
      "tcp", out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].inode, 55501u);
  EXPECT_EQ(out[0].local, "127.0.0.1:8080");
  EXPECT_EQ(out[0].remote, "127.0.0.1:40220");
  EXPECT_EQ(out[0].state, "ESTABLISHED");
  EXPECT_EQ(out[1].state, "LISTEN");
  proc::parse_unix_sockets(
      "Num       RefCount Protocol Flags    Type St Inode Path\n"
      "0000000000000000: 00000002 00000000 00010000 0001 01 777 /run/app.sock\n",
      out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[2].protocol, "unix");
  EXPECT_EQ(out[2].local, "/run/app.sock");
  EXPECT_EQ(out[2].inode, 777u);
}

TEST(ProcSockets, UnixPathsAreKeptWholeWithTheirSpaces) {
  // The kernel prints the bound name raw after the inode; found by fuzz/
  // (the path was cut at its first space).
  std::vector<SocketEntry> out;
  proc::parse_unix_sockets(
      "Num       RefCount Protocol Flags    Type St Inode Path\n"
      "0000000000000000: 00000002 00000000 00010000 0001 01   777 /run/my app.sock\n"
      "0000000000000000: 00000002 00000000 00000000 0001 01 778 @abstract name \n"
      "0000000000000000: 00000003 00000000 00000000 0001 03 779\n",
      out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].local, "/run/my app.sock");
  EXPECT_EQ(out[0].inode, 777u);
  EXPECT_EQ(out[1].local, "@abstract name ");
  EXPECT_EQ(out[2].local, "");
  EXPECT_EQ(out[2].state, "CONNECTED");
}

TEST(ProcStatus, FieldsSeccompAndCmdline) {
  ProcessInfo info;
  info.comm = "kept";
  const std::string status =
      "Name:\tweird\\nname\nUmask:\t0022\nState:\tS (sleeping)\nTracerPid:\t77\n"
      "VmSize:\t    3060 kB\nVmRSS:\t    1764 kB\nThreads:\t5\nSeccomp:\t2\n"
      "voluntary_ctxt_switches:\t10\nnonvoluntary_ctxt_switches:\t3\n";
  proc::parse_status(status, info);
  EXPECT_EQ(info.comm, "kept");  // not a status field: left alone
  EXPECT_EQ(info.tracer_pid, 77);
  EXPECT_EQ(info.virtual_memory_bytes, 3060u * 1024);
  EXPECT_EQ(info.rss_bytes, 1764u * 1024);
  EXPECT_EQ(info.threads, 5u);
  EXPECT_EQ(info.seccomp, 2);
  EXPECT_EQ(info.voluntary_ctxt_switches, 10u);
  EXPECT_EQ(info.nonvoluntary_ctxt_switches, 3u);
  EXPECT_EQ(proc::parse_seccomp(status), 2);
  EXPECT_EQ(proc::parse_seccomp("Name:\tx\n"), -1);
  EXPECT_EQ(info.ns_pid, 0);  // no NSpid: line (a kernel before 4.1)

  // A process in a PID namespace two levels down: its PID there is the last.
  proc::parse_status("Name:\tapp\nNSpid:\t48211\t310\t1\nNStgid:\t48211\t310\t1\n", info);
  EXPECT_EQ(info.ns_pid, 1);
  EXPECT_EQ(proc::parse_ns_pid("NSpid:\t4242\t7\n"), 7);
  EXPECT_EQ(proc::parse_ns_pid("Name:\tx\nNSpid:\t4242\n"), 4242);
  EXPECT_EQ(proc::parse_ns_pid("Name:\tx\n"), 0);
  EXPECT_EQ(proc::parse_ns_pid("Name:\tx\nNSpid:"), 0);

  using Args = std::vector<std::string>;
  EXPECT_EQ(proc::parse_cmdline(std::string("python3\0app.py\0", 15)), (Args{"python3", "app.py"}));
  EXPECT_EQ(proc::parse_cmdline("worker: idle"), (Args{"worker: idle"}));  // setproctitle
  EXPECT_EQ(proc::parse_cmdline(std::string("a\0\0b", 4)), (Args{"a", "", "b"}));
  EXPECT_EQ(proc::parse_cmdline(""), Args{});
}

TEST(Syscalls, NamesAndStopEffects) {
  EXPECT_EQ(syscall_name(232), "epoll_wait");
  EXPECT_EQ(syscall_name(202), "futex");
  EXPECT_EQ(syscall_number("clock_nanosleep"), 230);
  EXPECT_EQ(syscall_name(99999), "");
  EXPECT_EQ(stop_effect(202), StopEffect::kRestarts);      // futex
  EXPECT_EQ(stop_effect(232), StopEffect::kEintr);         // epoll_wait
  EXPECT_EQ(stop_effect(45), StopEffect::kEintrOnSocket);  // recvfrom
  EXPECT_EQ(stop_effect(99999), StopEffect::kEintr);       // unknown: never stop
  EXPECT_EQ(fd_argument(0), 0);                            // read
  EXPECT_EQ(fd_argument(202), -1);
}

TEST(CapturePolicy, WhichBlockedThreadsMustNotBeStopped) {
  SyscallState sc;
  sc.kind = SyscallState::Kind::kInSyscall;
  sc.nr = 0;  // read
  std::vector<FdLink> pipe = {{3, "pipe:[12]", 0}};
  std::vector<FdLink> sock = {{3, "socket:[12]", 0}};
  EXPECT_FALSE(stop_would_interrupt(sc, pipe));
  EXPECT_TRUE(stop_would_interrupt(sc, sock));  // it may have SO_RCVTIMEO
  sc.nr = 232;                                  // epoll_wait
  EXPECT_TRUE(stop_would_interrupt(sc, {}));
  sc.nr = 128;  // rt_sigtimedwait
  EXPECT_TRUE(stop_would_interrupt(sc, {}));
  sc.nr = 202;  // futex
  EXPECT_FALSE(stop_would_interrupt(sc, {}));
  sc.kind = SyscallState::Kind::kRunning;
  EXPECT_FALSE(stop_would_interrupt(sc, {}));
}

TEST(Collector, DescribeFd) {
  std::vector<SocketEntry> sockets = {
      {99, "tcp", "127.0.0.1:5000", "127.0.0.1:5432", "ESTABLISHED"}};
  auto s = describe_fd({7, "socket:[99]", 0}, sockets);
  EXPECT_EQ(s.kind, "socket");
  EXPECT_EQ(s.detail, "tcp 127.0.0.1:5000 -> 127.0.0.1:5432 ESTABLISHED");
  EXPECT_EQ(describe_fd({3, "anon_inode:[eventpoll]", 0}, {}).kind, "epoll");
  EXPECT_EQ(describe_fd({3, "pipe:[5]", 0}, {}).kind, "pipe");
  EXPECT_EQ(describe_fd({3, "/tmp/f", S_IFIFO | 0600}, {}).kind, "fifo");
  EXPECT_EQ(describe_fd({3, "/var/log/x", S_IFREG | 0600}, {}).kind, "file");
  EXPECT_EQ(describe_fd({3, "/dev/pts/1", S_IFCHR | 0600}, {}).kind, "chr");
}

TEST(Collector, StopStats) {
  auto s = stop_stats({10'000, 20'000, 30'000, 40'000, 1'000'000});
  EXPECT_EQ(s.p50_us, 30u);
  EXPECT_EQ(s.max_us, 1000u);
  EXPECT_EQ(s.p99_us, 1000u);
  EXPECT_EQ(s.total_us, 1100u);
  EXPECT_EQ(stop_stats({}).max_us, 0u);
}

TEST(Collector, StateNames) {
  EXPECT_EQ(state_name('R'), "running");
  EXPECT_EQ(state_name('S'), "sleeping");
  EXPECT_EQ(state_name('D'), "disk_sleep");
  EXPECT_EQ(state_name('T'), "stopped");
  EXPECT_EQ(state_name('t'), "stopped");
  EXPECT_EQ(state_name('Z'), "zombie");
}

TEST(Symbolizer, NamesAsPeopleReadThem) {
  EXPECT_EQ(demangle("_ZNSt5mutex4lockEv"), "std::mutex::lock()");
  EXPECT_EQ(demangle("pthread_mutex_lock"), "pthread_mutex_lock");
  EXPECT_EQ(strip_parameters("std::mutex::lock()"), "std::mutex::lock");
  EXPECT_EQ(strip_parameters("ns::f(int, std::function<void (int)>) const"), "ns::f");
  EXPECT_EQ(strip_parameters("Foo::operator()(int)"), "Foo::operator()");
  EXPECT_EQ(strip_parameters("work(int) [clone .cold]"), "work");
  EXPECT_EQ(strip_parameters("plain_c"), "plain_c");
  EXPECT_EQ(strip_parameters("void std::this_thread::sleep_for<long, std::ratio<3600l, 1l> >("
                             "std::chrono::duration<long, std::ratio<3600l, 1l> > const&)"),
            "std::this_thread::sleep_for<long, std::ratio<3600l, 1l> >");
  EXPECT_EQ(strip_parameters("(anonymous namespace)::worker(int)"),
            "(anonymous namespace)::worker");
  EXPECT_EQ(strip_parameters("operator new(unsigned long)"), "operator new");
  EXPECT_EQ(strip_parameters("std::vector<int, std::allocator<int> >::push_back(int const&)"),
            "std::vector<int, std::allocator<int> >::push_back");
}

}  // namespace
}  // namespace stackaudit

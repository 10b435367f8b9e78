// Targets whose files are not where the maps say from our side: a process in
// a container (its own root and PID namespace, the Debian unstable rootfs with
// its own glibc), an executable replaced on disk after it started, and a
// container root that vanished. Frames must come from the files the target
// has mapped, the report must give the PID the container knows, and nothing
// may be left stopped.
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

#include "tests/support.h"

namespace stackaudit::test {
namespace {

const char* const kParkThreadsStatic = PARK_THREADS_STATIC_BIN;

std::string folder_of(const std::string& path) {
  return path.substr(0, path.rfind('/'));
}

// Whether any of the audit's warnings contains every one of `parts`.
bool warned(const nlohmann::json& audit, std::initializer_list<const char*> parts) {
  for (const auto& w : audit["warnings"]) {
    std::string text = w;
    bool all = true;
    for (const char* p : parts) all &= text.find(p) != std::string::npos;
    if (all) return true;
  }
  return false;
}

// Why this process may not open /proc/PID/map_files entries (the kernel asks
// for CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE, whoever the process is), or ""
// when it may. A stackaudit it starts can then not either.
std::string without_map_files() {
  UniqueDir dir("/proc/self/map_files");
  while (dirent* e = dir ? dir.next() : nullptr) {
    if (e->d_name[0] == '.') continue;
    std::string path = std::string("/proc/self/map_files/") + e->d_name;
    if (UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC))) return "";
    break;
  }
  return "this test process cannot open /proc/PID/map_files (it needs CAP_SYS_ADMIN or "
         "CAP_CHECKPOINT_RESTORE)";
}

// Why CAP_SYS_ADMIN cannot be dropped for a run, or "".
std::string without_setpriv() {
  return ::access("/usr/bin/setpriv", X_OK) == 0
             ? ""
             : "no /usr/bin/setpriv (util-linux) to drop CAP_SYS_ADMIN with";
}

// `stackaudit dump` without CAP_SYS_ADMIN and CAP_CHECKPOINT_RESTORE, the
// capabilities /proc/PID/map_files asks for (CAP_SYS_PTRACE stays): a
// container granted only --cap-add SYS_PTRACE.
RunResult dump_without_map_files(pid_t pid, const char* format) {
  return run({"/usr/bin/setpriv", "--bounding-set=-sys_admin,-checkpoint_restore",
              "--inh-caps=-sys_admin,-checkpoint_restore", kStackaudit, "dump", "--pid",
              std::to_string(pid), "--format", format});
}

// --- (a) park_threads, built here, run inside the Debian unstable rootfs --

struct Expect {
  const char* thread;
  const char* category;
  const char* primitive;
  const char* function;  // the fixture's own function on the stack
  const char* libc;      // a function of the container's libc.so.6 on the stack
};

const Expect kInContainer[] = {
    {"mutex_wait", "lock", "pthread_mutex_lock", "park_mutex_wait", "pthread_mutex_lock"},
    {"cond_wait", "condition", "pthread_cond_wait", "park_cond_wait", "pthread_cond_wait"},
    {"sleeper", "sleep", "clock_nanosleep", "park_sleep", "clock_nanosleep"},
    {"epoll_wait", "poll", "epoll_wait", "park_epoll", "epoll_wait"},
    {"tcp_recv", "socket", "recv", "park_tcp_recv", "recv"},
    {"pipe_read", "file", "read", "park_pipe_read", "read"},
    {"child_wait", "process", "wait4", "park_child_wait", "wait4"},
};

class InContainer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string why;
    auto root = sid_rootfs(&why);
    if (!root) {
      skip_ = new std::string(why);
      return;
    }
    // The fixture's folder is bind-mounted at /mnt in the container's mount
    // namespace only: the maps name /var/cache/.../mnt/park_threads, which
    // exists nowhere on our side.
    target_ = new RootfsChild(*root, {"/mnt/park_threads"}, {{folder_of(kParkThreads), "/mnt"}});
    if (!target_->io().wait_for("ready", std::chrono::seconds(20)) || target_->pid() <= 0) {
      skip_ = new std::string();
      return;
    }
    RunResult r;
    audit_ = new nlohmann::json(dump_json(target_->pid(), &r));
    exit_code_ = r.exit_code;
    text_ = new RunResult(run({kStackaudit, "dump", "--pid", std::to_string(target_->pid())}));
  }
  static void TearDownTestSuite() {
    delete target_;
    delete audit_;
    delete text_;
    delete skip_;
  }
  void SetUp() override {
    if (skip_ && !skip_->empty()) GTEST_SKIP() << *skip_;
    ASSERT_EQ(skip_, nullptr) << "park_threads did not say ready inside the rootfs";
  }
  static RootfsChild* target_;
  static nlohmann::json* audit_;
  static RunResult* text_;
  static int exit_code_;
  static std::string* skip_;
};

RootfsChild* InContainer::target_ = nullptr;
nlohmann::json* InContainer::audit_ = nullptr;
RunResult* InContainer::text_ = nullptr;
int InContainer::exit_code_ = -1;
std::string* InContainer::skip_ = nullptr;

TEST_F(InContainer, FramesComeFromTheContainersOwnLibcAndProgram) {
  EXPECT_EQ(exit_code_, 0);
  // The rootfs's glibc is not ours: names found at these addresses come from
  // its libc.so.6, opened through /proc/PID/root.
  for (const Expect& e : kInContainer) {
    SCOPED_TRACE(e.thread);
    const nlohmann::json* t = thread_named(*audit_, e.thread);
    ASSERT_NE(t, nullptr);
    ASSERT_FALSE((*t)["blocking"].is_null()) << t->dump(1);
    EXPECT_EQ((*t)["blocking"]["category"], e.category);
    EXPECT_EQ((*t)["blocking"]["primitive"], e.primitive);
    const nlohmann::json* libc = frame_named(*t, e.libc);
    ASSERT_NE(libc, nullptr) << t->dump(1);
    EXPECT_EQ((*libc)["module"], "libc.so.6");
    const nlohmann::json* own = frame_named(*t, e.function);
    ASSERT_NE(own, nullptr) << t->dump(1);
    EXPECT_EQ((*own)["module"], "park_threads");
    // The fixture's debug info, found beside it under the container's root.
    EXPECT_TRUE(std::string((*own)["file"]).ends_with("tests/targets/park_threads.cpp"));
    EXPECT_GT((*own)["line"], 0);
  }
  EXPECT_FALSE(warned(*audit_, {"without symbols"})) << (*audit_)["warnings"];
}

TEST_F(InContainer, EveryThreadIsClassifiedAsOnTheHost) {
  const auto& by = (*audit_)["summary"]["by_category"];
  EXPECT_EQ((*audit_)["threads"].size(), 15u);
  EXPECT_EQ(by["lock"], 1);
  EXPECT_EQ(by["condition"], 2);
  EXPECT_EQ(by["sleep"], 2);
  EXPECT_EQ(by["socket"], 3);
  EXPECT_EQ(by["poll"], 2);
  EXPECT_EQ(by["process"], 1);
  EXPECT_EQ((*audit_)["summary"]["blocked"], 14);
}

TEST_F(InContainer, NamespacePidIsShownBesideTheHostPid) {
  pid_t pid = target_->pid();
  EXPECT_EQ((*audit_)["target"]["pid"], pid);
  // The first process of its PID namespace.
  EXPECT_EQ((*audit_)["target"]["ns_pid"], 1);
  const nlohmann::json* main_thread = thread_with_tid(*audit_, pid);
  ASSERT_NE(main_thread, nullptr);
  EXPECT_EQ((*main_thread)["ns_tid"], 1);
  for (const auto& t : (*audit_)["threads"]) {
    ASSERT_TRUE(t["ns_tid"].is_number()) << t["name"];
    if (t["tid"] != pid) {
      EXPECT_GT(t["ns_tid"], 1) << t["name"];
      EXPECT_NE(t["ns_tid"], t["tid"]) << t["name"];
    }
  }
  ASSERT_EQ(text_->exit_code, 0) << text_->err;
  EXPECT_NE(text_->out.find("| PID " + std::to_string(pid) + " [ns PID 1] (park_threads)"),
            std::string::npos)
      << text_->out;
  const nlohmann::json* sleeper = thread_named(*audit_, "sleeper");
  ASSERT_NE(sleeper, nullptr);
  EXPECT_NE(text_->out.find("Thread " + (*sleeper)["tid"].dump() + " [ns " +
                            (*sleeper)["ns_tid"].dump() + "] \"sleeper\""),
            std::string::npos)
      << text_->out;
}

TEST_F(InContainer, NothingIsLeftStopped) {
  EXPECT_TRUE(eventually([&] { return nothing_stopped(target_->pid()); }));
  EXPECT_EQ(process_state(target_->pid()), 'S');
}

// --- (a) Debian unstable's own CPython in the rootfs -----------------------

TEST(InContainerPython, Sid313IsCPythonWithFramesFromItsOwnFiles) {
  std::string why;
  auto root = sid_rootfs(&why);
  if (!root) GTEST_SKIP() << why;
  if (::access((*root + "/usr/bin/python3.13").c_str(), X_OK) != 0)
    GTEST_SKIP() << "no /usr/bin/python3.13 in " << *root << " (./setup.sh installs it)";
  RootfsChild target(*root, {"/usr/bin/python3.13", "-c",
                             "import threading, time\n"
                             "threading.Thread(target=time.sleep, args=(1000,), daemon=True)"
                             ".start()\n"
                             "time.sleep(0.2)\n"
                             "print('ready', flush=True)\n"
                             "threading.Event().wait()\n"});
  ASSERT_TRUE(target.io().wait_for("ready", std::chrono::seconds(20)));
  ASSERT_GT(target.pid(), 0);
  RunResult r;
  auto audit = dump_json(target.pid(), &r);
  EXPECT_EQ(audit["target"]["runtime"]["kind"], "cpython") << r.err;
  EXPECT_TRUE(std::string(audit["target"]["runtime"]["version"]).starts_with("3.13"));
  EXPECT_EQ(audit["target"]["ns_pid"], 1);
  ASSERT_EQ(audit["threads"].size(), 2u);
  bool sleeper = false, interpreter = false;
  for (const auto& t : audit["threads"]) {
    SCOPED_TRACE(t.dump(1));
    EXPECT_FALSE(t["blocking"].is_null());
    // Not one "??" frame per thread: the stack runs from the container's
    // libc through the interpreter, with the functions their symbol tables
    // name (Debian's libc exports its wait functions; its internal ones and
    // the interpreter's static ones have no symbol there).
    ASSERT_GE(t["frames"].size(), 5u);
    EXPECT_EQ(t["frames"][0]["module"], "libc.so.6");
    bool libc = false;
    for (const auto& f : t["frames"]) {
      EXPECT_NE(f["module"], "") << f.dump();
      bool named = !std::string(f["function"]).empty();
      libc |= f["module"] == "libc.so.6" && named;
      interpreter |= f["module"] == "python3.13" && named;
    }
    EXPECT_TRUE(libc);
    if (frame_named(t, "clock_nanosleep")) {
      sleeper = true;
      EXPECT_EQ(t["blocking"]["category"], "sleep");
    }
  }
  EXPECT_TRUE(sleeper);
  EXPECT_TRUE(interpreter);  // Py_RunMain, Py_BytesMain: exported by python3.13
  EXPECT_TRUE(eventually([&] { return nothing_stopped(target.pid()); }));
}

// --- (b) an executable replaced on disk after it started -------------------

class ReplacedExecutable : public ::testing::Test {
 protected:
  void SetUp() override {
    // An in-place upgrade: the new file is written beside the old one and
    // renamed over it, so the running process keeps the old inode.
    service_ = dir_.path() + "/service";
    copy_file(kParkThreads, service_);
    target_ = std::make_unique<Child>(std::vector<std::string>{service_});
    ASSERT_TRUE(target_->wait_for("ready", std::chrono::seconds(10)));
    copy_file(kSeccompSleepers, service_ + ".new");
    ASSERT_EQ(::rename((service_ + ".new").c_str(), service_.c_str()), 0);
  }
  TempDir dir_{"stackaudit-replaced"};
  std::string service_;
  std::unique_ptr<Child> target_;
};

TEST_F(ReplacedExecutable, FramesNameTheRunningBuildsFunctions) {
  if (auto why = without_map_files(); !why.empty()) GTEST_SKIP() << why;
  RunResult r;
  auto audit = dump_json(target_->pid(), &r);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json* t = thread_named(audit, "sleeper");
  ASSERT_NE(t, nullptr);
  const nlohmann::json* own = frame_named(*t, "park_sleep");
  ASSERT_NE(own, nullptr) << t->dump(1);
  EXPECT_EQ((*own)["module"], "service");
  EXPECT_EQ((*own)["line"], tagged_line(kParkThreadsSource, "sleep_call"));
  EXPECT_EQ((*t)["blocking"]["category"], "sleep");
  EXPECT_FALSE(warned(audit, {"without symbols"})) << audit["warnings"];
  EXPECT_TRUE(nothing_stopped(target_->pid()));
}

TEST_F(ReplacedExecutable, WithoutMapFilesItSaysSoRatherThanUseTheNewFile) {
  if (auto why = without_setpriv(); !why.empty()) GTEST_SKIP() << why;
  RunResult r = dump_without_map_files(target_->pid(), "json");
  // Without the program's unwind tables more threads need a stop to be
  // unwound; on a busy machine one may not reach it in time (exit code 1,
  // said in its note).
  ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.exit_code << " " << r.err;
  auto audit = nlohmann::json::parse(r.out);
  EXPECT_TRUE(warned(audit, {"service", "not the one mapped", "CAP_SYS_ADMIN"}))
      << audit["warnings"];
  const nlohmann::json* t = thread_named(audit, "sleeper");
  ASSERT_NE(t, nullptr);
  // The new file's symbols at the old one's addresses would be lies: the
  // program's frames go without names; libc's are still named.
  EXPECT_EQ(frame_named(*t, "park_sleep"), nullptr) << t->dump(1);
  for (const auto& f : (*t)["frames"])
    if (f["module"] == "service") {
      EXPECT_EQ(f["function"], "") << f.dump();
    }
  EXPECT_NE(frame_named(*t, "clock_nanosleep"), nullptr) << t->dump(1);
  EXPECT_TRUE(nothing_stopped(target_->pid()));
}

// --- (c) the container's root vanishes -------------------------------------

class VanishedRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = namespaces_unavailable(); !why.empty()) GTEST_SKIP() << why;
    // A root of one static program, removed once the program runs: its
    // /proc/PID/root and its executable are deleted folders and files.
    root_ = std::make_unique<TempDir>("stackaudit-rootfs");
    copy_file(kParkThreadsStatic, root_->path() + "/service");
    target_ = std::make_unique<RootfsChild>(root_->path(), std::vector<std::string>{"/service"});
    ASSERT_TRUE(target_->io().wait_for("ready", std::chrono::seconds(10)));
    ASSERT_GT(target_->pid(), 0);
    root_.reset();
  }
  std::unique_ptr<TempDir> root_;
  std::unique_ptr<RootfsChild> target_;
};

TEST_F(VanishedRoot, TheMappedFileIsStillRead) {
  if (auto why = without_map_files(); !why.empty()) GTEST_SKIP() << why;
  RunResult r;
  auto audit = dump_json(target_->pid(), &r);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json* t = thread_named(audit, "sleeper");
  ASSERT_NE(t, nullptr);
  // The static libc's function, from the deleted executable's symbol table.
  // (A static executable's stack is not unwound past its libc: host or not.)
  ASSERT_FALSE((*t)["frames"].empty());
  EXPECT_EQ((*t)["frames"][0]["module"], "service");
  EXPECT_TRUE(function_is((*t)["frames"][0], "__clock_nanosleep")) << t->dump(1);
  EXPECT_FALSE(warned(audit, {"without symbols"})) << audit["warnings"];
  EXPECT_EQ(audit["target"]["ns_pid"], 1);
  EXPECT_TRUE(nothing_stopped(target_->pid()));
}

TEST_F(VanishedRoot, WithoutMapFilesAWarningAndNoThreadLeftStopped) {
  if (auto why = without_setpriv(); !why.empty()) GTEST_SKIP() << why;
  for (const char* format : {"json", "text"}) {
    SCOPED_TRACE(format);
    RunResult r = dump_without_map_files(target_->pid(), format);
    // 1 when a thread was slow to reach its stop on a busy machine: said,
    // not a failure of this test.
    ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.exit_code << " " << r.err;
    EXPECT_EQ(r.signal, 0);
    if (std::string(format) == "json") {
      auto audit = nlohmann::json::parse(r.out);
      EXPECT_TRUE(warned(audit, {"service", "CAP_SYS_ADMIN", "without symbols"}))
          << audit["warnings"];
      EXPECT_EQ(audit["summary"]["threads"], 15);
      const nlohmann::json* t = thread_named(audit, "sleeper");
      ASSERT_NE(t, nullptr);
      EXPECT_EQ((*t)["blocking"]["category"], "sleep");  // from the syscall alone
      ASSERT_FALSE((*t)["frames"].empty());
      EXPECT_EQ((*t)["frames"][0]["module"], "service");  // known by name and range
      EXPECT_EQ((*t)["frames"][0]["function"], "");
    } else {
      EXPECT_NE(r.out.find("warning: /service"), std::string::npos) << r.out;
    }
    EXPECT_TRUE(eventually([&] { return nothing_stopped(target_->pid()); }));
  }
}

}  // namespace
}  // namespace stackaudit::test

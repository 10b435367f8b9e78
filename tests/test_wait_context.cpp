// Wait context (issue 13): a real process whose threads wait on glibc mutexes
// and rwlocks held by known threads, in two deadlock rings and a thread that
// waits for a lock it holds, and on fds in poll, select and epoll sets with
// timeouts; and the readers on canned bytes for what a live process rarely
// shows (a dead owner, a lock that is not one, an unreadable array).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <map>
#include <set>

#include "collector/lock_owners.h"
#include "collector/wait_context.h"
#include "tests/support.h"

namespace stackaudit::test {
namespace {

const char* const kWaits = WAITS_BIN;
const char* const kWaitsSource = WAITS_SOURCE;

const char* const kWaiters[] = {"rec_wait",  "errchk_wait",     "timed_wait", "rw_reader",
                                "rw_writer", "rw_wait_readers", "self_lock",  "dl2_a",
                                "dl2_b",     "dl3_a",           "dl3_b",      "dl3_c"};

class WaitContext : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fixture_ = new Child({kWaits});
    tids_ = new std::map<std::string, long>;
    fds_ = new std::map<std::string, long>;
    // Its threads say their tids and fds as they start, maybe after "ready".
    bool ready = false;
    while (!ready || tids_->size() < 20 || fds_->size() + uring_unavailable_ < 7 || port_ == 0) {
      auto line = fixture_->read_line(std::chrono::seconds(10));
      ASSERT_TRUE(line) << "the fixture did not say ready";
      ready |= *line == "ready";
      char name[32];
      long n;
      if (std::sscanf(line->c_str(), "tid %31s %ld", name, &n) == 2) (*tids_)[name] = n;
      if (std::sscanf(line->c_str(), "fd %31s %ld", name, &n) == 2) (*fds_)[name] = n;
      if (std::sscanf(line->c_str(), "port %ld", &n) == 1) port_ = n;
      if (*line == "uring unavailable") uring_unavailable_ = 1;
    }
    // Every waiter asleep on its lock (the rings need all members in place).
    audit_ = new nlohmann::json;
    bool settled = eventually(
        [&] {
          *audit_ = dump_json(fixture_->pid());
          for (const char* name : kWaiters) {
            const nlohmann::json* t = thread_named(*audit_, name);
            if (!t || (*t)["blocking"].is_null() || (*t)["blocking"]["lock"].is_null())
              return false;
          }
          for (const char* name :
               {"poll_tcp", "select_pipe", "epoll_set", "cond_timed", "uring_wait", "flock_wait"}) {
            const nlohmann::json* t = thread_named(*audit_, name);
            if (!t || (*t)["blocking"].is_null()) return false;
          }
          return true;
        },
        std::chrono::seconds(15));
    ASSERT_TRUE(settled) << audit_->dump(1);
  }
  static void TearDownTestSuite() {
    delete fixture_;
    delete audit_;
    delete tids_;
    delete fds_;
  }
  static const nlohmann::json& blocking(const char* name) {
    const nlohmann::json* t = thread_named(*audit_, name);
    EXPECT_NE(t, nullptr) << name;
    static const nlohmann::json none;
    return t ? (*t)["blocking"] : none;
  }
  static long tid(const std::string& name) { return tids_->at(name); }
  static long fd(const std::string& name) { return fds_->at(name); }
  static const nlohmann::json& syscall(const char* name) {
    const nlohmann::json* t = thread_named(*audit_, name);
    EXPECT_NE(t, nullptr) << name;
    static const nlohmann::json none;
    return t ? (*t)["syscall"] : none;
  }
  static std::map<std::string, long>* fds_;
  static long port_;
  static size_t uring_unavailable_;
  static Child* fixture_;
  static nlohmann::json* audit_;
  static std::map<std::string, long>* tids_;
};

Child* WaitContext::fixture_ = nullptr;
nlohmann::json* WaitContext::audit_ = nullptr;
std::map<std::string, long>* WaitContext::tids_ = nullptr;
std::map<std::string, long>* WaitContext::fds_ = nullptr;
long WaitContext::port_ = 0;
size_t WaitContext::uring_unavailable_ = 0;

TEST_F(WaitContext, MutexWaitersNameTheHolder) {
  for (const char* name : {"rec_wait", "errchk_wait", "timed_wait"}) {
    SCOPED_TRACE(name);
    const nlohmann::json& b = blocking(name);
    EXPECT_EQ(b["category"], "lock");
    EXPECT_EQ(b["lock"]["kind"], "pthread_mutex");
    ASSERT_TRUE(b["owner"].is_object()) << b.dump(1);
    EXPECT_EQ(b["owner"]["tid"], tid("lock_holder"));
    EXPECT_EQ(b["owner"]["name"], "lock_holder");
    EXPECT_EQ(b["owner"]["alive"], true);
    EXPECT_EQ(b["site"]["line"], tagged_line(kWaitsSource, name));
  }
  // The recursive mutex was taken twice by its holder.
  EXPECT_NE(blocking("rec_wait")["lock"]["detail"].get<std::string>().find("locked 2 times"),
            std::string::npos)
      << blocking("rec_wait").dump(1);
}

TEST_F(WaitContext, RwlockWaitersNameTheWriterOrSayReadersHoldIt) {
  for (const char* name : {"rw_reader", "rw_writer"}) {
    SCOPED_TRACE(name);
    const nlohmann::json& b = blocking(name);
    EXPECT_EQ(b["category"], "lock");
    EXPECT_EQ(b["lock"]["kind"], "pthread_rwlock");
    ASSERT_TRUE(b["owner"].is_object()) << b.dump(1);
    EXPECT_EQ(b["owner"]["tid"], tid("lock_holder"));
    EXPECT_EQ(b["site"]["line"], tagged_line(kWaitsSource, name));
  }
  EXPECT_EQ(blocking("rw_reader")["lock"]["address"], blocking("rw_writer")["lock"]["address"]);
  // Held for reading: no owner is recorded, and the report says so rather
  // than guess.
  const nlohmann::json& b = blocking("rw_wait_readers");
  EXPECT_EQ(b["lock"]["kind"], "pthread_rwlock");
  EXPECT_TRUE(b["owner"].is_null()) << b.dump(1);
  EXPECT_EQ(b["lock"]["detail"],
            "held for reading by 1 thread (a rwlock does not record its readers)");
}

TEST_F(WaitContext, DeadlockRingsAreFoundWithTheirMembersInWaitOrder) {
  const nlohmann::json& deadlocks = (*audit_)["summary"]["deadlocks"];
  ASSERT_EQ(deadlocks.size(), 3u) << deadlocks.dump(1);
  std::map<size_t, const nlohmann::json*> by_size;
  for (const auto& d : deadlocks) by_size[d["threads"].size()] = &d;
  ASSERT_EQ(by_size.size(), 3u);
  std::map<size_t, std::vector<std::string>> members = {
      {1, {"self_lock"}}, {2, {"dl2_a", "dl2_b"}}, {3, {"dl3_a", "dl3_b", "dl3_c"}}};
  for (const auto& [size, names] : members) {
    SCOPED_TRACE(size);
    const nlohmann::json& ring = (*by_size[size])["threads"];
    std::vector<std::string> seen;
    for (size_t i = 0; i < ring.size(); ++i) {
      const nlohmann::json& m = ring[i];
      const nlohmann::json& next = ring[(i + 1) % ring.size()];
      seen.push_back(m["name"]);
      EXPECT_EQ(m["tid"], tid(m["name"]));
      // Each waits for a mutex the next one holds.
      EXPECT_EQ(m["waits_for"]["kind"], "pthread_mutex");
      EXPECT_EQ(m["held_by"]["tid"], next["tid"]);
      EXPECT_EQ(m["site"]["line"], tagged_line(kWaitsSource, size == 1 ? "self_lock" : "deadlock"));
    }
    std::sort(seen.begin(), seen.end());
    EXPECT_EQ(seen, names);
  }
  // Threads that wait on a held lock outside a ring are in none.
  for (const auto& d : deadlocks)
    for (const auto& m : d["threads"]) EXPECT_NE(m["name"], "rec_wait");
}

TEST_F(WaitContext, TheTextReportSaysDeadlockAndWhoHoldsEachLock) {
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(fixture_->pid())});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("!!! DEADLOCK: 2 threads wait for each other's locks"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("!!! DEADLOCK: 3 threads wait for each other's locks"), std::string::npos);
  EXPECT_NE(r.out.find("!!! DEADLOCK: a thread waits for a lock it holds itself"),
            std::string::npos);
  std::string held = "held by \"lock_holder\" (tid " + std::to_string(tid("lock_holder")) + ")";
  EXPECT_NE(r.out.find("    lock: pthread_mutex 0x"), std::string::npos);
  EXPECT_NE(r.out.find(held + ", locked 2 times"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("    \"dl2_a\" (tid " + std::to_string(tid("dl2_a")) +
                       ") waits for pthread_mutex 0x"),
            std::string::npos);
}

TEST_F(WaitContext, TheAgentCountsDeadlockedThreads) {
  Agent agent({"--pid", std::to_string(fixture_->pid()), "--interval", "200ms"});
  ASSERT_TRUE(agent.serving());
  std::optional<double> v;
  ASSERT_TRUE(eventually(
      [&] {
        v = metric_value(agent.scrape(), "stackaudit_deadlocked_threads");
        return v && *v > 0;
      },
      std::chrono::seconds(10)));
  EXPECT_EQ(*v, 6);  // 1 + 2 + 3
  EXPECT_EQ(agent.stop(), 0);
}

TEST_F(WaitContext, PollAndSelectNameTheFdsInTheirArrays) {
  std::string peer = "-> 127.0.0.1:" + std::to_string(port_) + " ESTABLISHED";
  const nlohmann::json& p = syscall("poll_tcp");
  EXPECT_EQ(p["name"], "poll");
  ASSERT_EQ(p["watched"].size(), 1u) << p.dump(1);
  EXPECT_EQ(p["watched"][0]["fd"], fd("poll_tcp"));
  EXPECT_EQ(p["watched"][0]["kind"], "socket");
  std::string detail = p["watched"][0]["detail"];
  EXPECT_TRUE(detail.starts_with("tcp 127.0.0.1:")) << detail;
  EXPECT_TRUE(detail.ends_with(peer)) << detail;
  EXPECT_EQ(p["timeout"]["none"], true);
  EXPECT_EQ(blocking("poll_tcp")["site"]["line"], tagged_line(kWaitsSource, "poll_tcp"));

  const nlohmann::json& s = syscall("select_pipe");
  EXPECT_EQ(s["name"], "pselect6");  // glibc's select
  ASSERT_EQ(s["watched"].size(), 1u) << s.dump(1);
  EXPECT_EQ(s["watched"][0]["fd"], fd("select_pipe"));
  EXPECT_EQ(s["watched"][0]["kind"], "pipe");
  EXPECT_EQ(s["timeout"]["none"], false);
  EXPECT_EQ(s["timeout"]["requested_s"], 3600.0);
  // The pipe's write end: held by the fixture itself.
  EXPECT_EQ(s["watched"][0]["other_end"],
            "written by PID " + std::to_string(fixture_->pid()) + " (waits)");
}

TEST_F(WaitContext, AFileWaitSaysItsPathAndOffset) {
  const nlohmann::json& b = blocking("flock_wait");
  EXPECT_EQ(b["category"], "lock");
  EXPECT_EQ(b["site"]["line"], tagged_line(kWaitsSource, "flock_wait"));
  const nlohmann::json& f = syscall("flock_wait")["fd"];
  EXPECT_EQ(f["fd"], fd("flock_wait"));
  EXPECT_EQ(f["kind"], "file");
  EXPECT_TRUE(std::string(f["detail"]).starts_with("/tmp/stackaudit-waits-")) << f.dump();
  EXPECT_EQ(f["offset"], 10);
}

TEST_F(WaitContext, EpollWaitNamesItsSetFromFdinfo) {
  const nlohmann::json& e = syscall("epoll_set");
  EXPECT_EQ(e["name"], "epoll_wait");
  EXPECT_EQ(e["fd"]["kind"], "epoll");
  std::map<long, std::string> kinds;
  for (const auto& w : e["watched"]) kinds[w["fd"]] = w["kind"];
  EXPECT_EQ(kinds, (std::map<long, std::string>{{fd("epoll_sock"), "socket"},
                                                {fd("epoll_event"), "eventfd"},
                                                {fd("epoll_timer"), "timerfd"}}))
      << e.dump(1);
  EXPECT_EQ(e["watched_more"], 0);
  EXPECT_EQ(e["timeout"]["none"], true);
}

TEST_F(WaitContext, AnIoUringWaitIsAnIoCompletionWait) {
  if (uring_unavailable_) GTEST_SKIP() << "this kernel refuses io_uring_setup (io_uring disabled)";
  const nlohmann::json& b = blocking("uring_wait");
  EXPECT_EQ(b["category"], "io");
  EXPECT_EQ(b["primitive"], "io_uring_enter");
  EXPECT_EQ(b["site"]["line"], tagged_line(kWaitsSource, "uring_wait"));
  const nlohmann::json& sc = syscall("uring_wait");
  EXPECT_EQ(sc["fd"]["fd"], fd("uring_wait"));
  EXPECT_EQ(sc["fd"]["kind"], "io_uring");
}

TEST_F(WaitContext, TimeoutsSayHowLongAndWhatIsLeft) {
  // pthread_cond_timedwait: an absolute deadline an hour after it began.
  const nlohmann::json& c = syscall("cond_timed");
  EXPECT_EQ(c["name"], "futex");
  ASSERT_TRUE(c["timeout"]["remaining_s"].is_number()) << c.dump(1);
  double left = c["timeout"]["remaining_s"];
  EXPECT_GT(left, 3000);
  EXPECT_LE(left, 3600);
  EXPECT_TRUE(c["timeout"]["requested_s"].is_null());
  // std::this_thread::sleep_for(1 h): a relative sleep of 3600 s.
  const nlohmann::json& n = syscall("lock_holder");
  EXPECT_EQ(n["timeout"]["requested_s"], 3600.0) << n.dump(1);
  // A mutex wait without a timeout.
  EXPECT_EQ(syscall("errchk_wait")["timeout"]["none"], true);

  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(fixture_->pid())});
  EXPECT_NE(r.out.find("syscall: pselect6, timeout 3600.0 s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("syscall: futex, deadline in 3"), std::string::npos);
  EXPECT_NE(r.out.find("      watches fd " + std::to_string(fd("epoll_timer")) + " (timerfd "),
            std::string::npos);
}

// A Python service: sqlite's busy handler is a lock wait, a urllib call that
// polls its socket names the upstream, an RLock waiter names the owner, a
// Lock waiter says it has none, and two RLocks make a deadlock.
TEST(PythonWaits, LibraryWaitsPeersAndLockOwners) {
  if (access("/usr/bin/python3.11", X_OK) != 0)
    GTEST_SKIP() << "/usr/bin/python3.11 is missing (Debian package python3.11)";
  Child fixture({"/usr/bin/python3.11", PY_WAITS_SCRIPT});
  std::map<std::string, long> tids;
  long port = 0;
  for (;;) {
    auto line = fixture.read_line(std::chrono::seconds(20));
    ASSERT_TRUE(line) << "the fixture did not say ready";
    if (*line == "ready") break;
    char name[32];
    long n;
    if (std::sscanf(line->c_str(), "thread %31s %ld", name, &n) == 2) tids[name] = n;
    if (std::sscanf(line->c_str(), "upstream %ld", &n) == 1) port = n;
  }
  ASSERT_EQ(tids.size(), 7u);
  nlohmann::json audit;
  const nlohmann::json *sqlite = nullptr, *urllib = nullptr, *rlock = nullptr, *lock = nullptr;
  ASSERT_TRUE(eventually(
      [&] {
        audit = dump_json(fixture.pid());
        sqlite = thread_with_tid(audit, tids["sqlite_writer"]);
        urllib = thread_with_tid(audit, tids["urllib_call"]);
        rlock = thread_with_tid(audit, tids["rlock_waiter"]);
        lock = thread_with_tid(audit, tids["lock_waiter"]);
        auto has_lock = [](const nlohmann::json* t) {
          return t && t->at("blocking").is_object() && t->at("blocking")["lock"].is_object();
        };
        return sqlite && urllib && (*sqlite)["blocking"].is_object() &&
               (*sqlite)["blocking"]["category"] == "lock" && (*urllib)["syscall"].is_object() &&
               !(*urllib)["syscall"]["watched"].empty() && has_lock(rlock) && has_lock(lock) &&
               !audit["summary"]["deadlocks"].empty();
      },
      std::chrono::seconds(15)))
      << audit.dump(1);
  const nlohmann::json& b = (*sqlite)["blocking"];
  EXPECT_EQ(b["primitive"], "sqlite3 busy handler");
  EXPECT_EQ(b["detail"], "sqlite database is locked: its busy handler sleeps and retries");
  EXPECT_EQ(b["site"]["function"], "sqlite_writer");
  EXPECT_EQ(b["site"]["line"], tagged_line(PY_WAITS_SCRIPT, "sqlite_writer"));

  const nlohmann::json& sc = (*urllib)["syscall"];
  EXPECT_EQ(sc["name"], "poll");
  std::string detail = sc["watched"][0]["detail"];
  EXPECT_TRUE(detail.ends_with("-> 127.0.0.1:" + std::to_string(port) + " ESTABLISHED")) << detail;
  EXPECT_EQ(sc["timeout"]["requested_s"], 3600.0);
  EXPECT_EQ((*urllib)["blocking"]["site"]["line"], tagged_line(PY_WAITS_SCRIPT, "urllib_call"));

  const nlohmann::json& r = (*rlock)["blocking"];
  EXPECT_EQ(r["category"], "lock");
  EXPECT_EQ(r["lock"]["kind"], "python_rlock");
  ASSERT_TRUE(r["owner"].is_object()) << r.dump(1);
  EXPECT_EQ(r["owner"]["tid"], tids["rlock_holder"]);
  EXPECT_EQ(r["owner"]["name"], "rlock_holder");  // the Python thread's name
  EXPECT_EQ(r["lock"]["detail"], "held by \"rlock_holder\" (tid " +
                                     std::to_string(tids["rlock_holder"]) + "), acquired 2 times");
  EXPECT_EQ(r["site"]["line"], tagged_line(PY_WAITS_SCRIPT, "rlock_waiter"));

  const nlohmann::json& l = (*lock)["blocking"];
  EXPECT_EQ(l["lock"]["kind"], "python_lock");
  EXPECT_TRUE(l["owner"].is_null());
  EXPECT_EQ(l["lock"]["detail"], "a threading.Lock records no owner: any thread may release it");

  const nlohmann::json& deadlocks = audit["summary"]["deadlocks"];
  ASSERT_EQ(deadlocks.size(), 1u) << deadlocks.dump(1);
  const nlohmann::json& ring = deadlocks[0]["threads"];
  ASSERT_EQ(ring.size(), 2u);
  std::set<long> members;
  for (size_t i = 0; i < 2; ++i) {
    members.insert(ring[i]["tid"].get<long>());
    EXPECT_EQ(ring[i]["waits_for"]["kind"], "python_rlock");
    EXPECT_EQ(ring[i]["held_by"]["tid"], ring[1 - i]["tid"]);
    EXPECT_EQ(ring[i]["site"]["line"], tagged_line(PY_WAITS_SCRIPT, "rl_deadlock"));
  }
  EXPECT_EQ(members, (std::set<long>{tids["rl_dl_a"], tids["rl_dl_b"]}));
}

// The reader on canned memory: what a live process seldom shows.
struct CannedLocks : ::testing::Test {
  static constexpr uint64_t kLock = 0x10000;
  Thread waiter(const char* function, uint64_t futex, uint64_t op = 128) {
    Thread t;
    t.tid = 100;
    t.name = "waiter";
    t.blocking = Blocking{};
    t.blocking->category = "lock";
    t.syscall = SyscallInfo{};
    t.syscall->name = "futex";
    t.syscall->args = {futex, op, 2, 0, 0, 0};
    Frame f;
    f.function = function;
    f.module = "libc.so.6";
    t.frames.push_back(f);
    return t;
  }
  Thread other(pid_t tid, const char* name) {
    Thread t;
    t.tid = tid;
    t.name = name;
    return t;
  }
  void put_mutex(int32_t lock, uint32_t count, int32_t owner, int32_t kind) {
    std::vector<uint8_t> bytes(40, 0);
    int32_t words[5] = {lock, static_cast<int32_t>(count), owner, 1, kind};
    std::memcpy(bytes.data(), words, sizeof words);
    memory.put(kLock, bytes);
  }
  CannedMemory memory;
};

TEST_F(CannedLocks, AnOwnerThatIsNoThreadEndedHoldingTheLock) {
  put_mutex(2, 0, 4242, 0);
  std::vector<Thread> threads = {waiter("__pthread_mutex_lock", kLock), other(7, "main")};
  read_lock_owners(threads, memory);
  ASSERT_TRUE(threads[0].blocking->lock);
  const LockInfo& l = *threads[0].blocking->lock;
  ASSERT_TRUE(l.owner);
  EXPECT_FALSE(l.owner->alive);
  EXPECT_EQ(l.owner->tid, 4242);
  EXPECT_NE(l.detail.find("ended holding the lock"), std::string::npos) << l.detail;
  EXPECT_TRUE(find_deadlocks(threads).empty());
}

TEST_F(CannedLocks, AProcessSharedMutexHeldElsewhereIsNotCalledAbandoned) {
  put_mutex(2, 0, 4242, 0x80);
  std::vector<Thread> threads = {waiter("pthread_mutex_lock", kLock), other(7, "main")};
  read_lock_owners(threads, memory);
  ASSERT_TRUE(threads[0].blocking->lock);
  // (No thread 4242 exists here; when one does, its process is named.)
  const std::string& d = threads[0].blocking->lock->detail;
  EXPECT_TRUE(d.starts_with("held by tid 4242 of ")) << d;
  EXPECT_TRUE(d.ends_with(" (a process-shared mutex)")) << d;
}

TEST_F(CannedLocks, ALockTakenAMomentAgoIsNotCalledFree) {
  put_mutex(1, 0, 0, 0);  // locked, owner not yet written
  std::vector<Thread> threads = {waiter("pthread_mutex_lock", kLock), other(7, "main")};
  read_lock_owners(threads, memory);
  ASSERT_TRUE(threads[0].blocking->lock);
  EXPECT_EQ(threads[0].blocking->lock->detail, "held; its new owner is not recorded yet");
  EXPECT_FALSE(threads[0].blocking->lock->owner);
}

TEST_F(CannedLocks, GlibcsOwnLowLevelLocksAreNotReadAsMutexes) {
  // malloc's or stdio's lock: a bare int; what follows it is no mutex.
  put_mutex(2, 0, 4242, 0);
  std::vector<Thread> threads = {waiter("__lll_lock_wait_private", kLock), other(7, "main")};
  read_lock_owners(threads, memory);
  EXPECT_FALSE(threads[0].blocking->lock);
}

TEST_F(CannedLocks, APiMutexKeepsItsOwnerInTheLockWord) {
  put_mutex(static_cast<int32_t>(0x80000000u | 7), 0, 0, 0x20);
  std::vector<Thread> threads = {waiter("pthread_mutex_lock", kLock, 6 | 128), other(7, "main")};
  read_lock_owners(threads, memory);
  ASSERT_TRUE(threads[0].blocking->lock && threads[0].blocking->lock->owner);
  EXPECT_EQ(threads[0].blocking->lock->owner->tid, 7);
  EXPECT_EQ(threads[0].blocking->lock->owner->name, "main");
}

TEST_F(CannedLocks, BytesThatAreNoMutexGiveNoLockAndUnreadableOnesNeither) {
  put_mutex(2, 0, 7, 0x7654321);  // no glibc mutex kind
  std::vector<Thread> threads = {waiter("__pthread_mutex_lock", kLock), other(7, "main"),
                                 waiter("__pthread_mutex_lock", 0x999000)};
  read_lock_owners(threads, memory);
  EXPECT_FALSE(threads[0].blocking->lock);
  EXPECT_FALSE(threads[2].blocking->lock);
}

TEST_F(CannedLocks, OnlyLockWaitsInAFutexAreRead) {
  put_mutex(2, 0, 7, 0);
  std::vector<Thread> threads = {waiter("__pthread_mutex_lock", kLock, 1 /* FUTEX_WAKE */),
                                 waiter("pthread_cond_wait", kLock), other(7, "main")};
  threads[1].blocking->category = "condition";
  read_lock_owners(threads, memory);
  EXPECT_FALSE(threads[0].blocking->lock);
  EXPECT_FALSE(threads[1].blocking->lock);
}

TEST_F(CannedLocks, AChainIntoARingReportsTheRingOnly) {
  // 1 -> 2 -> 3 -> 2: thread 1 waits on the ring but is not in it.
  std::vector<Thread> threads;
  for (pid_t tid : {1, 2, 3}) {
    Thread t = other(tid, ("t" + std::to_string(tid)).c_str());
    t.blocking = Blocking{};
    t.blocking->lock = LockInfo{};
    t.blocking->lock->owner = LockOwner{tid == 3 ? 2 : tid + 1, "", true};
    threads.push_back(t);
  }
  auto rings = find_deadlocks(threads);
  ASSERT_EQ(rings.size(), 1u);
  ASSERT_EQ(rings[0].threads.size(), 2u);
  EXPECT_EQ(rings[0].threads[0].tid, 2);
  EXPECT_EQ(rings[0].threads[1].tid, 3);
}

TEST_F(CannedLocks, ARingWhoseMembersNoLongerWaitThereIsDropped) {
  // Seen waiting on each other's locks, but these threads are not in a
  // futex now (they do not exist): a ring read across a handoff.
  std::vector<Thread> threads;
  for (pid_t tid : {1, 2}) {
    Thread t = waiter("pthread_mutex_lock", kLock);
    t.tid = tid;
    t.blocking->lock = LockInfo{"pthread_mutex", kLock, LockOwner{tid == 1 ? 2 : 1, "", true}, ""};
    threads.push_back(t);
  }
  auto rings = find_deadlocks(threads);
  ASSERT_EQ(rings.size(), 1u);
  confirm_deadlocks(rings, getpid(), threads, memory);
  EXPECT_TRUE(rings.empty());
}

TEST(WaitContextParsing, EpollFdinfoListsTheTargetFds) {
  const char* text =
      "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\n"
      "tfd:        5 events:       19 data:                5  pos:0 ino:1a3f sdev:8\n"
      "tfd:       12 events:       19 data:                c  pos:0 ino:1057 sdev:e\n";
  EXPECT_EQ(parse_epoll_fdinfo(text), (std::vector<int>{5, 12}));
  EXPECT_TRUE(parse_epoll_fdinfo("pos:\t0\ntfd: garbage\n").empty());
}

TEST(WaitContextParsing, TimeoutsFromArgumentsAndMemory) {
  CannedMemory memory;
  auto put_timespec = [&](uint64_t addr, int64_t sec, int64_t nsec) {
    std::vector<uint8_t> bytes(16);
    std::memcpy(bytes.data(), &sec, 8);
    std::memcpy(bytes.data() + 8, &nsec, 8);
    memory.put(addr, bytes);
  };
  put_timespec(0x1000, 2, 500000000);
  put_timespec(0x2000, 1000, 0);
  put_timespec(0x3000, 5, 2000000000);                        // no valid timespec
  auto now = [](int) -> int64_t { return 990'000'000'000; };  // 990 s
  auto call = [](const char* name, std::array<uint64_t, 6> args) {
    SyscallInfo c;
    c.name = name;
    c.args = args;
    return c;
  };
  auto t = wait_timeout(call("poll", {0, 1, 100}), memory, now);
  ASSERT_TRUE(t && t->requested_s);
  EXPECT_DOUBLE_EQ(*t->requested_s, 0.1);
  t = wait_timeout(call("epoll_wait", {3, 0, 1, static_cast<uint64_t>(-1)}), memory, now);
  ASSERT_TRUE(t);
  EXPECT_TRUE(t->none);
  t = wait_timeout(call("nanosleep", {0x1000}), memory, now);
  ASSERT_TRUE(t && t->requested_s);
  EXPECT_DOUBLE_EQ(*t->requested_s, 2.5);
  // FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG: an absolute deadline, 10 s ahead.
  t = wait_timeout(call("futex", {0x9000, 9 | 128, 0, 0x2000}), memory, now);
  ASSERT_TRUE(t && t->remaining_s);
  EXPECT_DOUBLE_EQ(*t->remaining_s, 10.0);
  // clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, ...).
  t = wait_timeout(call("clock_nanosleep", {1, 1, 0x2000}), memory, now);
  ASSERT_TRUE(t && t->remaining_s);
  EXPECT_DOUBLE_EQ(*t->remaining_s, 10.0);
  EXPECT_FALSE(wait_timeout(call("nanosleep", {0x3000}), memory, now));  // bad nanoseconds
  EXPECT_FALSE(wait_timeout(call("nanosleep", {0x5000}), memory, now));  // unreadable
  EXPECT_FALSE(wait_timeout(call("read", {0, 0x1000, 10}), memory, now));
  t = wait_timeout(call("futex", {0x9000, 128, 0, 0}), memory, now);
  ASSERT_TRUE(t);
  EXPECT_TRUE(t->none);
}

TEST(WaitContextParsing, APollArrayTooLargeOrUnreadableWatchesNothing) {
  CannedMemory memory;
  SyscallInfo c;
  c.name = "poll";
  c.args = {0x1000, 1u << 20, 0};
  size_t more = 7;
  EXPECT_TRUE(watched_fds(getpid(), c, memory, 16, &more).empty());
  EXPECT_EQ(more, 1u << 20);  // said, not shown
  c.args = {0x1000, 3, 0};
  EXPECT_TRUE(watched_fds(getpid(), c, memory, 16, &more).empty());
  c.name = "select";
  c.args = {5000, 0x1000, 0, 0, 0};
  EXPECT_TRUE(watched_fds(getpid(), c, memory, 16, &more).empty());
}

}  // namespace
}  // namespace stackaudit::test

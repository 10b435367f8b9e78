// Unwinding and symbolizing a canned capture: registers and a copy of the stack
// taken in a known call chain of this test, unwound after that chain has
// returned (so the live stack no longer holds it), with live memory reads
// impossible. Only the copy and the module files can give the answer.
#include <ucontext.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "collector/module_map.h"
#include "collector/symbolizer.h"
#include "collector/unwinder.h"
#include "injector/memory.h"
#include "injector/proc.h"
#include "injector/remote_memory.h"

namespace stackaudit {
namespace {

__attribute__((noinline)) void capture_here(RawThread* out) {
  ucontext_t uc;
  getcontext(&uc);
  const greg_t* g = uc.uc_mcontext.gregs;
  out->regs.rip = static_cast<uint64_t>(g[REG_RIP]);
  out->regs.rsp = static_cast<uint64_t>(g[REG_RSP]);
  out->regs.rbp = static_cast<uint64_t>(g[REG_RBP]);
  out->regs.rbx = static_cast<uint64_t>(g[REG_RBX]);
  out->regs.r12 = static_cast<uint64_t>(g[REG_R12]);
  out->regs.r13 = static_cast<uint64_t>(g[REG_R13]);
  out->regs.r14 = static_cast<uint64_t>(g[REG_R14]);
  out->regs.r15 = static_cast<uint64_t>(g[REG_R15]);
  out->full_registers = true;
  // Copy from below the red zone up to 64 KiB or the end of the stack mapping.
  uint64_t lo = out->regs.rsp - 128;
  uint64_t hi = lo + 64 * 1024;
  for (const Mapping& m : proc::read_maps(getpid()))
    if (m.contains(out->regs.rsp)) hi = std::min(hi, m.end);
  out->stack_start = lo;
  out->stack.resize(hi - lo);
  // Through the kernel, as the capture does: a plain memcpy of the live stack
  // would trip AddressSanitizer's redzones in the sanitized build.
  RemoteMemory self(getpid());
  out->stack.resize(
      static_cast<size_t>(std::max<ssize_t>(0, self.read(lo, out->stack.data(), hi - lo))));
  asm volatile("" ::: "memory");
}

__attribute__((noinline)) void chain_inner(RawThread* out) {
  capture_here(out);
  asm volatile("" ::: "memory");
}

__attribute__((noinline)) void chain_outer(RawThread* out) {
  chain_inner(out);
  asm volatile("" ::: "memory");
}

// Overwrites the stack area the chain used.
__attribute__((noinline)) void scribble() {
  volatile char junk[16384];
  for (size_t i = 0; i < sizeof junk; ++i) junk[i] = static_cast<char>(0x41);
}

class CannedUnwind : public ::testing::Test {
 protected:
  void SetUp() override {
    chain_outer(&thread_);
    scribble();
    modules_.update(proc::read_maps(getpid()));
  }
  std::vector<std::string> functions(const UnwindResult& u) {
    Symbolizer symbols(modules_);
    std::vector<std::string> out;
    for (size_t i = 0; i < u.ips.size(); ++i)
      for (const Frame& f : symbols.symbolize(u.ips[i], i > 0)) out.push_back(f.function);
    return out;
  }
  RawThread thread_;
  ModuleMap modules_{getpid()};
  CannedMemory no_live_memory_;  // nothing: every live read fails
};

size_t index_of(const std::vector<std::string>& v, const std::string& suffix) {
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i] == suffix || v[i].ends_with("::" + suffix)) return i;
  return v.size();
}

TEST_F(CannedUnwind, WalksTheCallChainFromTheCopy) {
  Unwinder unwinder(modules_, no_live_memory_);
  UnwindResult u = unwinder.unwind(thread_);
  auto names = functions(u);
  size_t here = index_of(names, "capture_here");
  size_t inner = index_of(names, "chain_inner");
  size_t outer = index_of(names, "chain_outer");
  ASSERT_LT(outer, names.size()) << ::testing::PrintToString(names);
  SCOPED_TRACE(::testing::PrintToString(names) + " " + u.reason);
  EXPECT_LT(here, inner);
  EXPECT_EQ(inner + 1, outer);
  // It goes on into gtest's frames, past the test body.
  EXPECT_GT(names.size(), outer + 3);
}

TEST_F(CannedUnwind, SymbolsCarryFileAndLine) {
  Unwinder unwinder(modules_, no_live_memory_);
  UnwindResult u = unwinder.unwind(thread_);
  Symbolizer symbols(modules_);
  bool found = false;
  for (size_t i = 1; i < u.ips.size(); ++i) {
    for (const Frame& f : symbols.symbolize(u.ips[i], true)) {
      if (!f.function.ends_with("chain_inner")) continue;
      found = true;
      EXPECT_TRUE(f.file.ends_with("tests/test_unwind_canned.cpp")) << f.file;
      EXPECT_GT(f.line, 0);
      EXPECT_EQ(f.module, "stackaudit_tests");
    }
  }
  EXPECT_TRUE(found);
}

TEST_F(CannedUnwind, CorruptStackStopsCleanlyAsTruncated) {
  // Destroy everything above capture_here's own frame: its return address is
  // now garbage.
  size_t keep = 128 + 64;
  std::fill(thread_.stack.begin() + static_cast<long>(keep), thread_.stack.end(), 0x41);
  Unwinder unwinder(modules_, no_live_memory_);
  UnwindResult u = unwinder.unwind(thread_);
  EXPECT_TRUE(u.truncated);
  EXPECT_FALSE(u.reason.empty());
  EXPECT_LT(u.ips.size(), 4u);
  for (uint64_t ip : u.ips) EXPECT_TRUE(modules_.is_executable(ip));
}

TEST_F(CannedUnwind, NoRegistersMeansTruncatedNotACrash) {
  RawThread empty;
  Unwinder unwinder(modules_, no_live_memory_);
  UnwindResult u = unwinder.unwind(empty);
  EXPECT_TRUE(u.truncated);
  EXPECT_TRUE(u.ips.empty());
}

}  // namespace
}  // namespace stackaudit

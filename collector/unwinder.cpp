#include "collector/unwinder.h"

#include "collector/thread_memory.h"

#include <libunwind.h>

#include <cstdlib>
#include <cstring>

// Exported by libunwind-x86_64 (it is what _UPT_find_proc_info uses) but not
// declared in its public headers.
extern "C" int _Ux86_64_dwarf_search_unwind_table(unw_addr_space_t as, unw_word_t ip,
                                                  unw_dyn_info_t* di, unw_proc_info_t* pi,
                                                  int need_unwind_info, void* arg);

namespace stackaudit {

struct Unwinder::Context {
  Unwinder* unwinder;
  const RawThread* thread;
  CapturedThreadMemory memory;
  // For a thread read without a stop: the frame pointer found on its stack
  // (0: none), where code built with frame pointers needs it.
  uint64_t rbp_guess = 0;
  // A walk started again from a frame found through the frame-pointer
  // chain: its pc, sp and rbp are all the registers there are.
  bool restart = false;
  uint64_t restart_ip = 0, restart_sp = 0, restart_bp = 0;
};

namespace {

using Context = Unwinder::Context;

constexpr const char* kFrameLimit = "frame limit reached";

// DWARF .eh_frame_hdr as GCC and LLVM emit it: version 1, eh_frame_ptr
// pcrel|sdata4, fde_count udata4, table datarel|sdata4 (a binary search table
// of {initial location, FDE address} pairs relative to the header).
constexpr uint8_t kPeUdata4 = 0x03, kPeSdata4 = 0x0b, kPePcrel = 0x10, kPeDatarel = 0x30;

bool table_info(const Module& m, unw_dyn_info_t* di) {
  if (!m.elf || m.elf->eh_frame_hdr_vaddr() == 0) return false;
  uint8_t hdr[12];
  if (!m.elf->read_readonly(m.elf->eh_frame_hdr_vaddr(), hdr, sizeof hdr)) return false;
  if (hdr[0] != 1 || hdr[1] != (kPePcrel | kPeSdata4) || hdr[2] != kPeUdata4 ||
      hdr[3] != (kPeDatarel | kPeSdata4))
    return false;
  uint32_t fde_count;
  std::memcpy(&fde_count, hdr + 8, 4);
  uint64_t hdr_addr = m.elf->eh_frame_hdr_vaddr() + m.bias;
  std::memset(di, 0, sizeof *di);
  di->format = UNW_INFO_FORMAT_REMOTE_TABLE;
  di->start_ip = m.start;
  di->end_ip = m.end;
  di->u.rti.segbase = hdr_addr;
  di->u.rti.table_data = hdr_addr + sizeof hdr;
  // libunwind counts the table in words; one entry is two int32, one word.
  di->u.rti.table_len = fde_count * 8 / sizeof(unw_word_t);
  return true;
}

int find_proc_info(unw_addr_space_t as, unw_word_t ip, unw_proc_info_t* pi, int need_unwind_info,
                   void* arg) {
  auto* ctx = static_cast<Context*>(arg);
  const ModuleMap& modules = ctx->unwinder->modules();
  const Module* m = modules.is_anonymous_code(ip) ? nullptr : modules.find(ip);
  unw_dyn_info_t di;
  if (!m || !table_info(*m, &di)) return -UNW_ENOINFO;
  return _Ux86_64_dwarf_search_unwind_table(as, ip, &di, pi, need_unwind_info, arg);
}

void put_unwind_info(unw_addr_space_t, unw_proc_info_t* pi, void*) {
  std::free(pi->unwind_info);
  pi->unwind_info = nullptr;
}

int get_dyn_info_list_addr(unw_addr_space_t, unw_word_t*, void*) {
  return -UNW_ENOINFO;
}

int access_mem(unw_addr_space_t, unw_word_t addr, unw_word_t* val, int write, void* arg) {
  if (write) return -UNW_EINVAL;
  auto* ctx = static_cast<Context*>(arg);
  return ctx->memory.read_exact(addr, val, sizeof *val) ? 0 : -UNW_EINVAL;
}

int access_reg(unw_addr_space_t, unw_regnum_t reg, unw_word_t* val, int write, void* arg) {
  if (write) return -UNW_EINVAL;
  const Context& ctx = *static_cast<Context*>(arg);
  if (ctx.restart) {
    if (reg == UNW_X86_64_RIP) return *val = ctx.restart_ip, 0;
    if (reg == UNW_X86_64_RSP) return *val = ctx.restart_sp, 0;
    if (reg == UNW_X86_64_RBP && ctx.restart_bp) return *val = ctx.restart_bp, 0;
    return -UNW_EBADREG;
  }
  const RawThread& t = *ctx.thread;
  const user_regs_struct& r = t.regs;
  if (reg == UNW_X86_64_RIP) return *val = r.rip, 0;
  if (reg == UNW_X86_64_RSP) return *val = r.rsp, 0;
  // A thread captured without a stop has only sp and pc (from /proc syscall),
  // and maybe a frame pointer found on its stack.
  if (!t.full_registers) {
    uint64_t rbp = static_cast<Context*>(arg)->rbp_guess;
    if (reg == UNW_X86_64_RBP && rbp) return *val = rbp, 0;
    return -UNW_EBADREG;
  }
  switch (reg) {
    case UNW_X86_64_RAX:
      *val = r.rax;
      return 0;
    case UNW_X86_64_RDX:
      *val = r.rdx;
      return 0;
    case UNW_X86_64_RCX:
      *val = r.rcx;
      return 0;
    case UNW_X86_64_RBX:
      *val = r.rbx;
      return 0;
    case UNW_X86_64_RSI:
      *val = r.rsi;
      return 0;
    case UNW_X86_64_RDI:
      *val = r.rdi;
      return 0;
    case UNW_X86_64_RBP:
      *val = r.rbp;
      return 0;
    case UNW_X86_64_R8:
      *val = r.r8;
      return 0;
    case UNW_X86_64_R9:
      *val = r.r9;
      return 0;
    case UNW_X86_64_R10:
      *val = r.r10;
      return 0;
    case UNW_X86_64_R11:
      *val = r.r11;
      return 0;
    case UNW_X86_64_R12:
      *val = r.r12;
      return 0;
    case UNW_X86_64_R13:
      *val = r.r13;
      return 0;
    case UNW_X86_64_R14:
      *val = r.r14;
      return 0;
    case UNW_X86_64_R15:
      *val = r.r15;
      return 0;
    default:
      return -UNW_EBADREG;
  }
}

int access_fpreg(unw_addr_space_t, unw_regnum_t, unw_fpreg_t*, int, void*) {
  return -UNW_EBADREG;
}

int resume(unw_addr_space_t, unw_cursor_t*, void*) {
  return -UNW_EINVAL;
}

int get_proc_name(unw_addr_space_t, unw_word_t, char*, size_t, unw_word_t*, void*) {
  return -UNW_ENOINFO;  // symbolization is libdw's job
}

unw_accessors_t kAccessors = {find_proc_info, put_unwind_info, get_dyn_info_list_addr,
                              access_mem,     access_reg,      access_fpreg,
                              resume,         get_proc_name};

}  // namespace

Unwinder::Unwinder(const ModuleMap& modules, Memory& memory, size_t max_frames)
    : modules_(modules), memory_(memory), max_frames_(max_frames) {
  space_ = unw_create_addr_space(&kAccessors, 0);
  unw_set_caching_policy(space_, UNW_CACHE_GLOBAL);
}

Unwinder::~Unwinder() {
  if (space_) unw_destroy_addr_space(space_);
}

void Unwinder::flush() {
  unw_flush_cache(space_, 0, 0);
}

UnwindResult Unwinder::unwind(const RawThread& thread) {
  Context ctx{this, &thread, CapturedThreadMemory(thread, modules_, memory_)};
  UnwindResult out = unwind_once(ctx);
  bool needs_rbp = !thread.full_registers && out.truncated && !out.sps.empty() &&
                   out.reason.find(unw_strerror(-UNW_EBADREG)) != std::string::npos;
  uint64_t last_sp = out.sps.empty() ? 0 : out.sps.back();
  extend_by_frame_pointers(ctx, out);
  // Without a stop only sp and pc are known. Code built with frame pointers
  // (CPython 3.14+, distributions that turn them on) finds its frame through
  // rbp: when the walk stopped there, look for the frame-pointer pair on the
  // stack above the last frame reached (a saved rbp above it, then a return
  // address into code), and walk again from the start with it as rbp; keep
  // whichever walk went further.
  if (needs_rbp) {
    ctx.rbp_guess = frame_pointer_above(ctx, last_sp);
    if (ctx.rbp_guess) {
      UnwindResult again = unwind_once(ctx);
      extend_by_frame_pointers(ctx, again);
      if (again.ips.size() > out.ips.size()) out = std::move(again);
    }
  }
  out.frame_pointer.resize(out.ips.size(), false);
  return out;
}

void Unwinder::extend_by_frame_pointers(Context& ctx, UnwindResult& out) {
  if (!out.truncated || out.reason == kFrameLimit) return;
  UnwindResult fp = out;
  follow_frame_pointers(ctx, fp);
  if (fp.ips.size() > out.ips.size()) out = std::move(fp);
}

bool Unwinder::has_unwind_table(uint64_t ip) const {
  const Module* m = modules_.is_anonymous_code(ip) ? nullptr : modules_.find(ip);
  return m && m->elf && m->elf->eh_frame_hdr_vaddr() != 0;
}

void Unwinder::follow_frame_pointers(Context& ctx, UnwindResult& out) {
  // Code without unwind information (a JIT's, in anonymous memory; a module
  // whose table is missing) keeps the x86-64 frame-pointer chain when it was
  // built to: a saved rbp, then the return address, each link further up the
  // stack. Where the walk stopped, find such a chain above the last frame
  // (validated: return addresses right after call instructions in
  // executable memory, links going up), follow it while its return
  // addresses have no table, and walk on with the unwind tables from the
  // first one that has, starting from what the chain gives: pc, sp and rbp.
  constexpr int kHops = 16;
  for (int hop = 0; hop < kHops && out.truncated && !out.sps.empty(); ++hop) {
    if (out.ips.size() >= max_frames_) return;
    uint64_t link = frame_pointer_above(ctx, out.sps.back());
    if (!link) return;
    bool restarted = false;
    auto broke_off = [&](const char* why) {
      out.truncated = true;
      out.reason = std::string("the frame-pointer chain broke off: ") + why;
    };
    while (link) {
      uint64_t pair[2];
      if (!ctx.memory.read_exact(link, pair, sizeof pair))
        return broke_off("a link could not be read");
      uint64_t ip = pair[1], sp = link + 16, bp = pair[0];
      if (!modules_.is_executable(ip)) return broke_off("a return address outside code");
      if (sp <= out.sps.back()) return broke_off("the stack pointer did not move outward");
      out.ips.push_back(ip);
      out.sps.push_back(sp);
      out.frame_pointer.resize(out.ips.size(), false);
      out.frame_pointer.back() = true;
      out.truncated = false;
      out.reason.clear();
      if (out.ips.size() >= max_frames_) {
        out.truncated = true;
        out.reason = kFrameLimit;
        return;
      }
      if (has_unwind_table(ip)) {
        ctx.restart = true;
        ctx.restart_ip = ip;
        ctx.restart_sp = sp;
        ctx.restart_bp = bp;
        UnwindResult rest = unwind_once(ctx);
        ctx.restart = false;
        // Its first frame is the one the chain gave.
        for (size_t i = 1; i < rest.ips.size() && out.ips.size() < max_frames_; ++i) {
          out.ips.push_back(rest.ips[i]);
          out.sps.push_back(rest.sps[i]);
        }
        out.truncated = rest.truncated;
        out.reason = rest.reason;
        restarted = true;
        break;
      }
      if (bp == 0) return;  // the chain's end: the thread's first frame
      if (bp <= link || bp > link + (uint64_t{1} << 24))
        return broke_off("a link that does not go up the stack");
      link = bp;
    }
    if (!restarted) return;
  }
}

uint64_t Unwinder::frame_pointer_above(Context& ctx, uint64_t sp) {
  // A return address is right after a call instruction: e8 rel32, or ff /2
  // with its ModRM, SIB and displacement (2 to 7 bytes). Not so in a JIT's
  // code (anonymous memory): HotSpot's interpreter returns to an entry that
  // follows other code, so there being executable is all that is asked.
  auto after_call = [&](uint64_t ra) {
    uint8_t b[7];
    if (!modules_.is_executable(ra)) return false;
    if (modules_.is_anonymous_code(ra) || !modules_.find(ra)) return true;
    if (!ctx.memory.read_exact(ra - 7, b, sizeof b)) return false;
    if (b[2] == 0xe8) return true;
    for (int at : {5, 4, 3, 1, 0})  // the ff of a 2, 3, 4, 6 or 7-byte indirect call
      if (b[at] == 0xff && (b[at + 1] & 0x38) == 0x10) return true;
    return false;
  };
  // A frame-pointer pair at `a` (saved rbp, return address), and two more
  // links above it (or the end of the chain, rbp 0): a chain, not a stray pair.
  auto chain_at = [&](uint64_t a) {
    for (int link = 0; link < 3; ++link) {
      uint64_t pair[2];
      if (!ctx.memory.read_exact(a, pair, sizeof pair) || !after_call(pair[1])) return false;
      if (pair[0] == 0 && link > 0) return true;
      if (pair[0] <= a + 8 || pair[0] > a + (uint64_t{1} << 24)) return false;
      a = pair[0];
    }
    return true;
  };
  constexpr uint64_t kScan = 4096;  // bytes of stack looked at
  for (uint64_t a = (sp + 7) & ~uint64_t{7}; a < sp + kScan; a += 8)
    if (chain_at(a)) return a;
  return 0;
}

UnwindResult Unwinder::unwind_once(Context& ctx) {
  const RawThread& thread = *ctx.thread;
  UnwindResult out;
  unw_cursor_t cursor;
  if ((!ctx.restart && thread.regs.rip == 0) || unw_init_remote(&cursor, space_, &ctx) < 0) {
    out.truncated = true;
    out.reason = "no registers";
    return out;
  }
  uint64_t last_sp = 0;
  for (;;) {
    unw_word_t ip = 0, sp = 0;
    unw_get_reg(&cursor, UNW_REG_IP, &ip);
    unw_get_reg(&cursor, UNW_REG_SP, &sp);
    if (ip == 0) break;  // the outermost frame's return address
    if (!modules_.is_executable(ip)) {
      out.truncated = true;
      out.reason = "return address outside any executable mapping";
      break;
    }
    if (!out.ips.empty() && sp <= last_sp) {
      out.truncated = true;
      out.reason = "stack pointer did not move outward";
      break;
    }
    out.ips.push_back(ip);
    out.sps.push_back(sp);
    last_sp = sp;
    if (out.ips.size() >= max_frames_) {
      out.truncated = true;
      out.reason = kFrameLimit;
      break;
    }
    int r = unw_step(&cursor);
    if (r == 0) {
      // libunwind also ends "cleanly" when it knows nothing about a frame and
      // its frame-pointer fallback gives up. A true end is a frame whose
      // unwind information says it has no caller.
      unw_proc_info_t pi;
      if (unw_get_proc_info(&cursor, &pi) < 0) {
        out.truncated = true;
        out.reason = "no unwind information for the last frame";
      }
      break;
    }
    if (r < 0) {
      out.truncated = true;
      out.reason = std::string("unwinding stopped: ") + unw_strerror(r);
      if (!thread.full_registers) out.reason += " (captured without a stop: only sp and pc known)";
      break;
    }
  }
  return out;
}

}  // namespace stackaudit

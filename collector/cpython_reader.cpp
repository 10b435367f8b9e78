#include "collector/cpython_reader.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "collector/cpython_linetable.h"

namespace stackaudit {
namespace {

constexpr int kMaxInterpreters = 256;
constexpr int kMaxThreads = 100000;
constexpr int kMaxFrames = 4096;
constexpr size_t kMaxString = 4096;
constexpr int64_t kMaxDictEntries = 1 << 20;  // sys.modules, threading._active
constexpr int64_t kMaxAttributes = 4096;      // an instance's attributes
constexpr int kReadAttempts = 3;
// PyTypeObject fields the layouts need not carry: the same on 3.11-3.15.
constexpr uint32_t kTpName = 24, kTpBase = 256, kTpDict = 264, kTpDictoffset = 288;
// PyMemberDescrObject.d_member, and PyMemberDef.offset inside it.
constexpr uint32_t kMemberDescrDef = 40, kMemberDefOffset = 16;

// A Python string's code point as UTF-8. A lone surrogate (how Python keeps a
// byte that was not UTF-8, say in a file name decoded with surrogateescape) or
// anything above U+10FFFF has no UTF-8 form: it becomes U+FFFD.
void append_utf8(std::string& out, uint32_t c) {
  if ((c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF) c = 0xFFFD;
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xc0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xe0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  }
}

template <class T>
T field(const std::vector<uint8_t>& block, uint32_t offset) {
  T v{};
  if (offset + sizeof(T) <= block.size()) std::memcpy(&v, block.data() + offset, sizeof(T));
  return v;
}

}  // namespace

std::string python_module_name(const std::string& file) {
  auto relative = [&]() -> std::string {
    for (const char* marker : {"/site-packages/", "/dist-packages/"}) {
      auto at = file.rfind(marker);
      if (at != std::string::npos) return file.substr(at + std::strlen(marker));
    }
    // The standard library: .../lib/python3.11/<module path>.py
    auto at = file.find("/lib/python3");
    auto slash = at == std::string::npos ? at : file.find('/', at + 12);
    if (slash != std::string::npos) return file.substr(slash + 1);
    return file.substr(file.rfind('/') + 1);
  };
  std::string rel = relative();
  if (rel.ends_with(".py")) rel.resize(rel.size() - 3);
  if (rel.ends_with("/__init__")) rel.resize(rel.size() - 9);
  for (char& c : rel)
    if (c == '/') c = '.';
  return rel;
}

bool is_python_library_file(const std::string& file) {
  if (file.find("/site-packages/") != std::string::npos) return true;
  if (file.find("/dist-packages/") != std::string::npos) return true;
  if (file.starts_with("<frozen ")) return true;  // frozen stdlib modules
  auto at = file.find("/lib/python3");
  return at != std::string::npos && file.find('/', at + 12) != std::string::npos;
}

std::unique_ptr<CPythonReader> CPythonReader::detect(const ModuleMap& modules, Memory& memory,
                                                     std::string* warning,
                                                     uint32_t* detected_version) {
  constexpr const char* kSupported = "(supported: CPython 3.11 and later)";
  for (const Module& m : modules.modules()) {
    if (!m.elf) continue;
    uint64_t runtime = m.elf->symbol("_PyRuntime");
    if (!runtime) runtime = m.elf->section_address(".PyRuntime");
    if (!runtime) continue;
    uint64_t version_addr = m.elf->symbol("Py_Version");
    uint32_t version = 0;
    if (!version_addr || (!memory.read_exact(version_addr + m.bias, &version, sizeof version) &&
                          !m.elf->read_readonly(version_addr, &version, sizeof version))) {
      *warning = m.name + " looks like CPython older than 3.11 (no Py_Version); showing native " +
                 "frames only " + kSupported;
      return nullptr;
    }
    *detected_version = version;
    std::string where = "CPython " + cpython_version_text(version) + " in " + m.name;
    std::optional<CPythonLayout> layout;
    if (const CPythonLayout* row = cpython_layout(version)) {
      layout = *row;
    } else if (version >= kFirstDebugOffsetsVersion) {
      std::vector<uint8_t> raw(kDebugOffsetsBytes);
      std::string why;
      if (!memory.read_exact(runtime + m.bias, raw.data(), raw.size()))
        why = "has an unreadable _PyRuntime";
      else
        layout = cpython_layout_from_debug_offsets(raw.data(), raw.size(), version, &why);
      if (!layout) {
        *warning = where + " " + why + "; showing native frames only";
        return nullptr;
      }
    } else {
      *warning = where + " is not supported; showing native frames only " + kSupported;
      return nullptr;
    }
    uint64_t code_type = m.elf->symbol("PyCode_Type");
    uint64_t unicode_type = m.elf->symbol("PyUnicode_Type");
    return std::unique_ptr<CPythonReader>(new CPythonReader(
        memory, *layout, runtime + m.bias, version, code_type ? code_type + m.bias : 0,
        unicode_type ? unicode_type + m.bias : 0));
  }
  return nullptr;
}

CPythonReader::CPythonReader(Memory& memory, const CPythonLayout& layout, uint64_t runtime,
                             uint32_t version, uint64_t code_type, uint64_t unicode_type)
    : memory_(memory),
      L_(layout),
      runtime_(runtime),
      version_(version),
      code_type_(code_type),
      unicode_type_(unicode_type) {}

bool CPythonReader::read_string(uint64_t obj, std::string* out) {
  if (!obj) return false;
  // Most strings are short: the header and the text in one read when it can
  // be (the object may end closer than that to an unmapped page: then the
  // header alone).
  constexpr size_t kShort = 64;
  std::vector<uint8_t> head(L_.str.compact_data + kShort);
  bool whole = memory_.read_exact(obj, head.data(), head.size());
  if (!whole) {
    head.resize(L_.str.compact_data);
    if (!memory_.read_exact(obj, head.data(), head.size())) return false;
  }
  if (unicode_type_ && field<uint64_t>(head, L_.object.ob_type) != unicode_type_) return false;
  int64_t length = field<int64_t>(head, L_.str.length);
  uint32_t state = field<uint32_t>(head, L_.str.state);
  unsigned kind = (state >> 2) & 7;
  bool compact = (state >> 5) & 1;
  bool ascii = (state >> 6) & 1;
  if (!compact || length < 0 || (kind != 1 && kind != 2 && kind != 4)) return false;
  size_t n = std::min<size_t>(static_cast<size_t>(length), kMaxString);
  std::vector<uint8_t> data(n * kind);
  uint32_t start = ascii ? L_.str.ascii_data : L_.str.compact_data;
  if (whole && start + data.size() <= head.size())
    std::copy_n(head.begin() + start, data.size(), data.begin());
  else if (!data.empty() && !memory_.read_exact(obj + start, data.data(), data.size()))
    return false;
  out->clear();
  for (size_t i = 0; i < n; ++i) {
    uint32_t c = kind == 1   ? data[i]
                 : kind == 2 ? field<uint16_t>(data, static_cast<uint32_t>(i * 2))
                             : field<uint32_t>(data, static_cast<uint32_t>(i * 4));
    append_utf8(*out, c);
  }
  return true;
}

const CPythonReader::CodeInfo* CPythonReader::code_info(uint64_t code) {
  auto it = codes_.find(code);
  if (it != codes_.end()) return &it->second;
  std::vector<uint8_t> block(L_.code.code_adaptive);
  if (!memory_.read_exact(code, block.data(), block.size())) return nullptr;
  if (code_type_ && field<uint64_t>(block, L_.object.ob_type) != code_type_) return nullptr;
  CodeInfo info;
  info.firstlineno = field<int32_t>(block, L_.code.firstlineno);
  if (L_.code.firsttraceable) info.firsttraceable = field<int32_t>(block, L_.code.firsttraceable);
  if (!read_string(field<uint64_t>(block, L_.code.qualname), &info.qualname)) return nullptr;
  read_string(field<uint64_t>(block, L_.code.filename), &info.file);
  uint64_t table = field<uint64_t>(block, L_.code.linetable);
  int64_t size = 0;
  if (table && memory_.read_exact(table + L_.bytes.size, &size, sizeof size) && size > 0 &&
      size < (1 << 24)) {
    info.linetable.resize(static_cast<size_t>(size));
    if (!memory_.read_exact(table + L_.bytes.data, info.linetable.data(), info.linetable.size()))
      info.linetable.clear();
  }
  return &codes_.emplace(code, std::move(info)).first->second;
}

bool CPythonReader::read_thread(uint64_t tstate, PyThreadInfo& t,
                                const std::set<long>* frames_for) {
  t.tstate = tstate;
  std::vector<uint8_t> ts(std::max(L_.tstate.native_thread_id, L_.tstate.frame) + 8);
  if (!memory_.read_exact(tstate, ts.data(), ts.size())) return false;
  t.native_tid = field<int64_t>(ts, L_.tstate.native_thread_id);
  t.thread_id = field<uint64_t>(ts, L_.tstate.thread_id);
  if (frames_for && !frames_for->count(t.native_tid)) return true;
  uint64_t frame = field<uint64_t>(ts, L_.tstate.frame);
  if (L_.tstate.cframe_current_frame >= 0 && frame &&
      !read_ptr(frame + static_cast<uint32_t>(L_.tstate.cframe_current_frame), &frame))
    return false;
  return read_frames(frame, t);
}

bool CPythonReader::read_frames(uint64_t frame, PyThreadInfo& t) {
  uint32_t span = std::max({L_.frame.code, L_.frame.previous, L_.frame.instr}) + 8;
  std::vector<uint8_t> f(std::max({span, L_.frame.owner + 1, L_.frame.is_entry + 1}));
  std::set<uint64_t> seen;  // a torn chain may loop
  for (int depth = 0; frame; ++depth) {
    if (depth >= kMaxFrames || !seen.insert(frame).second ||
        !memory_.read_exact(frame, f.data(), f.size())) {
      t.truncated = true;
      break;
    }
    uint8_t owner = field<uint8_t>(f, L_.frame.owner);
    if (L_.frame.owner_shim && owner >= L_.frame.owner_shim) {
      // The entry frame a C-level eval-loop call pushes (3.12+): the Python
      // frame below it was the first of that call.
      // (3.15 also ends every chain with the thread state's own base frame:
      // the first shim after a Python frame is the one on the C stack.)
      if (!t.frames.empty() && !t.frames.back().is_entry) {
        t.frames.back().is_entry = true;
        t.frames.back().entry_at = frame;
      }
      frame = field<uint64_t>(f, L_.frame.previous);
      continue;
    }
    uint64_t code = field<uint64_t>(f, L_.frame.code) & ~L_.frame.code_tag_bits;
    const CodeInfo* info = code_info(code);
    if (!info) {  // freed or reused under us: the chain is no longer trustworthy
      t.truncated = true;
      break;
    }
    PyFrameInfo pf;
    pf.qualname = info->qualname;
    pf.file = info->file;
    pf.interpreter = t.interpreter;
    pf.is_entry = L_.frame.is_entry && field<uint8_t>(f, L_.frame.is_entry) != 0;
    uint64_t first = code + L_.code.code_adaptive;
    uint64_t instr = field<uint64_t>(f, L_.frame.instr);
    pf.generator = owner == L_.frame.owner_generator;
    pf.address = frame;
    // A frame whose first instructions have not run yet is not really there.
    pf.incomplete =
        !pf.generator && instr < first + 2 * static_cast<uint64_t>(info->firsttraceable);
    pf.line = line_of(*info, code, instr);
    t.frames.push_back(std::move(pf));
    frame = field<uint64_t>(f, L_.frame.previous);
  }
  return true;
}

int CPythonReader::line_of(const CodeInfo& info, uint64_t code, uint64_t instr) const {
  uint64_t first = code + L_.code.code_adaptive;
  if (instr < first) return 0;
  int unit = static_cast<int>((instr - first) / 2);
  return std::max(0, line_at_311(info.linetable, info.firstlineno, unit));
}

std::vector<std::pair<uint64_t, uint64_t>> CPythonReader::dict_items(uint64_t dict) {
  uint64_t keys = 0, values = 0;
  if (!dict || !read_ptr(dict + L_.dict.keys, &keys) || !keys) return {};
  int64_t capacity = -1;
  if (read_ptr(dict + L_.dict.values, &values) && values &&
      L_.object.values == CPythonLayout::Values::kInline) {
    // 3.13+: a split dict's values are a PyDictValues, its array after a
    // small header that says how many it has room for (the same struct as
    // an instance's inline values).
    uint8_t room = 0;
    if (!memory_.read_exact(values + L_.object.inline_capacity, &room, 1)) return {};
    capacity = room;
    values += L_.object.inline_array;
  }
  return keys_items(keys, values, kMaxDictEntries, capacity);
}

std::vector<std::pair<uint64_t, uint64_t>> CPythonReader::keys_items(uint64_t keys, uint64_t values,
                                                                     int64_t max_entries,
                                                                     int64_t values_capacity) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  std::vector<uint8_t> head(L_.dict.indices);
  if (!memory_.read_exact(keys, head.data(), head.size())) return out;
  uint8_t log2_index_bytes = field<uint8_t>(head, L_.dict.log2_index_bytes);
  uint8_t kind = field<uint8_t>(head, L_.dict.kind);
  int64_t n = field<int64_t>(head, L_.dict.nentries);
  if (n <= 0 || n > max_entries || log2_index_bytes > 40) return out;
  uint32_t esize = kind == 0 ? L_.dict.general_entry_size : L_.dict.unicode_entry_size;
  uint64_t entries = keys + L_.dict.indices + (uint64_t{1} << log2_index_bytes);
  std::vector<uint8_t> e(static_cast<size_t>(n) * esize);
  if (!memory_.read_exact(entries, e.data(), e.size())) return out;
  // A split table's values: as many as the keys, or as the instance has room
  // for (3.13+ inline values are sized when the instance is made).
  int64_t nvalues = values_capacity >= 0 ? std::min(n, values_capacity) : n;
  std::vector<uint64_t> split(values ? static_cast<size_t>(nvalues) : 0);
  if (values && !memory_.read_exact(values, split.data(), split.size() * 8)) return out;
  uint32_t key_at = kind == 0 ? 8 : 0;  // general entries start with the hash
  for (int64_t i = 0; i < n; ++i) {
    uint32_t base = static_cast<uint32_t>(i) * esize;
    uint64_t key = field<uint64_t>(e, base + key_at);
    uint64_t value = !values       ? field<uint64_t>(e, base + key_at + 8)
                     : i < nvalues ? split[static_cast<size_t>(i)]
                                   : 0;
    if (key && value) out.emplace_back(key, value);
  }
  return out;
}

uint64_t CPythonReader::dict_get(uint64_t dict, const std::string& key) {
  for (const auto& [k, v] : dict_items(dict))
    if (key_is(k, key)) return v;
  return 0;
}

bool CPythonReader::type_word(uint64_t type, uint32_t offset, uint64_t* out) {
  auto it = type_words_.find(type + offset);
  if (it != type_words_.end()) {
    *out = it->second;
    return true;
  }
  if (!read_ptr(type + offset, out)) return false;
  type_words_.emplace(type + offset, *out);
  return true;
}

bool CPythonReader::key_is(uint64_t key, const std::string& name) {
  auto it = key_names_.find(key);
  if (it == key_names_.end()) {
    std::string text;
    if (!read_string(key, &text)) return false;
    it = key_names_.emplace(key, std::move(text)).first;
  }
  return it->second == name;
}

uint64_t CPythonReader::attribute(uint64_t obj, const std::string& name) {
  auto key = std::make_pair(obj, name);
  auto it = attributes_.find(key);
  if (it == attributes_.end()) it = attributes_.emplace(key, read_attribute(obj, name)).first;
  return it->second;
}

uint64_t CPythonReader::read_attribute(uint64_t obj, const std::string& name) {
  uint64_t type = 0, flags = 0;
  if (!read_ptr(obj + L_.object.ob_type, &type) || !type ||
      !type_word(type, L_.object.tp_flags, &flags))
    return 0;
  auto before = [&](int32_t offset, uint64_t* out) {
    return read_ptr(obj + static_cast<uint64_t>(static_cast<int64_t>(offset)), out);
  };
  // Where the instance's attributes are: a values array that shares its keys
  // with the type (split, "managed"), or a dict of its own.
  uint64_t values = 0, dict = 0;
  int64_t capacity = -1;  // of inline values; -1: as many as the keys
  using Values = CPythonLayout::Values;
  if (L_.object.values == Values::kInline && (flags & L_.object.inline_values_flag)) {
    uint64_t basicsize = 0;
    uint8_t valid = 0;
    if (!type_word(type, L_.object.tp_basicsize, &basicsize) || basicsize > (1u << 20)) return 0;
    uint64_t inline_values = obj + basicsize;
    uint8_t room = 0;
    if (memory_.read_exact(inline_values + L_.object.inline_valid, &valid, 1) && valid &&
        memory_.read_exact(inline_values + L_.object.inline_capacity, &room, 1)) {
      values = inline_values + L_.object.inline_array;
      capacity = room;
    } else
      before(L_.object.managed_dict, &dict);
  } else if (flags & L_.object.managed_dict_flag) {
    if (L_.object.values == Values::kBeforeObject) {
      before(L_.object.managed_values, &values);
      if (!values) before(L_.object.managed_dict, &dict);
    } else {
      uint64_t p = 0;
      before(L_.object.managed_dict, &p);
      if (L_.object.values == Values::kTaggedPointer && (p & 1))
        values = p + 1;  // stored one byte below the values to tag it
      else
        dict = p;
    }
  } else {
    // A dict of its own at tp_dictoffset (subclasses of C types that have
    // one, such as asyncio's futures before 3.13), or no attributes.
    int64_t dictoffset = 0;
    uint64_t word = 0;
    if (!type_word(type, kTpDictoffset, &word) || (dictoffset = static_cast<int64_t>(word)) <= 0 ||
        dictoffset > (1 << 16) || !read_ptr(obj + dictoffset, &dict) || !dict)
      return slot(obj, type, name);
  }
  std::vector<std::pair<uint64_t, uint64_t>> items;
  if (values) {
    uint64_t keys = 0;
    if (!type_word(type, L_.object.ht_cached_keys, &keys) || !keys) return 0;
    items = keys_items(keys, values, kMaxAttributes, capacity);
  } else {
    items = dict_items(dict);
  }
  for (const auto& [k, v] : items)
    if (key_is(k, name)) return v;
  return slot(obj, type, name);
}

uint64_t CPythonReader::slot(uint64_t obj, uint64_t type, const std::string& name) {
  // A __slots__ member: a member descriptor in the type's (or a base's)
  // dict, whose PyMemberDef says at which offset the object keeps it.
  for (int i = 0; type && i < 16; ++i) {
    uint64_t dict = 0, descr = 0, def = 0, base = 0;
    int64_t offset = 0;
    if (read_ptr(type + kTpDict, &dict) && dict && (descr = dict_get(dict, name))) {
      uint64_t descr_type = 0, tp_name = 0;
      char kind[18] = {};
      if (!read_ptr(descr + L_.object.ob_type, &descr_type) ||
          !read_ptr(descr_type + kTpName, &tp_name) || !memory_.read_exact(tp_name, kind, 17) ||
          std::strcmp(kind, "member_descriptor") != 0 || !read_ptr(descr + kMemberDescrDef, &def) ||
          !memory_.read_exact(def + kMemberDefOffset, &offset, sizeof offset) || offset < 16 ||
          offset > (1 << 16))
        return 0;
      uint64_t v = 0;
      read_ptr(obj + static_cast<uint64_t>(offset), &v);
      return v;
    }
    if (!type_word(type, kTpBase, &base)) return 0;
    type = base;
  }
  return 0;
}

bool CPythonReader::read_long(uint64_t obj, uint64_t* out) {
  int64_t size = 0;
  if (!memory_.read_exact(obj + L_.integer.size, &size, sizeof size)) return false;
  // 3.12+: lv_tag holds the digit count above three bits of sign (0: positive).
  int64_t ndigits = L_.integer.tagged ? ((size & 3) == 0 ? size >> 3 : -1) : size;
  if (ndigits < 0 || ndigits > 3) return false;  // thread idents are positive, 64-bit
  uint32_t digits[3] = {0, 0, 0};
  if (ndigits && !memory_.read_exact(obj + L_.integer.digits, digits, 4 * ndigits)) return false;
  *out = 0;
  for (int64_t i = ndigits; i-- > 0;) *out = (*out << 30) | (digits[i] & 0x3fffffff);
  return true;
}

void CPythonReader::read_thread_names(uint64_t interp, std::vector<PyThreadInfo>& threads) {
  uint64_t modules = 0;
  if (!read_ptr(interp + L_.interp.modules, &modules)) return;
  uint64_t threading = dict_get(modules, "threading");
  uint64_t module_dict = 0;
  if (!threading || !read_ptr(threading + L_.object.module_dict, &module_dict)) return;
  uint64_t active = dict_get(module_dict, "_active");
  for (const auto& [key, thread] : dict_items(active)) {
    uint64_t ident = 0;
    if (!read_long(key, &ident)) continue;
    std::string name;
    if (!read_string(attribute(thread, "_name"), &name)) continue;
    for (PyThreadInfo& t : threads)
      if (t.thread_id == ident) t.name = name;
  }
}

uint64_t CPythonReader::gil_of(uint64_t interp) {
  if (L_.runtime.gil >= 0) return runtime_ + static_cast<uint32_t>(L_.runtime.gil);
  uint64_t gil = 0;
  read_ptr(interp + L_.interp.gil_pointer, &gil);
  return gil;
}

bool CPythonReader::read_once(PyProcessInfo& out, const std::set<long>* frames_for) {
  out.threads.clear();
  out.gil_waits.clear();
  out.interpreters = 0;
  codes_.clear();
  type_words_.clear();
  key_names_.clear();
  attributes_.clear();
  uint64_t interp = 0;
  if (!read_ptr(runtime_ + L_.runtime.interpreters_head, &interp)) {
    out.notes.push_back("the Python runtime could not be read: no Python frames");
    return true;
  }
  if (!interp) {
    out.notes.push_back("the Python interpreter is starting up or finalizing: no thread states");
    return true;
  }
  bool complete = true;
  std::vector<PyThreadInfo> states;      // every thread state of every interpreter
  std::map<uint64_t, uint64_t> holders;  // GIL -> the thread state holding it
  std::set<uint64_t> interps, tstates;   // seen: a torn list may loop
  for (int i = 0; interp && i < kMaxInterpreters && interps.insert(interp).second; ++i) {
    ++out.interpreters;
    int64_t id = 0;
    memory_.read_exact(interp + L_.interp.id, &id, sizeof id);
    uint64_t tstate = 0;
    if (!read_ptr(interp + L_.interp.threads_head, &tstate)) return false;
    // A layout that does not fit this interpreter shows here first: a thread
    // state points back to its interpreter.
    uint64_t owner = 0;
    if (tstate && read_ptr(tstate + L_.tstate.interp, &owner) && owner != interp) {
      if (i == 0) {  // the first one listed (the newest)
        out.notes.push_back(
            "the Python thread states do not point back to their interpreter "
            "(a layout we got wrong?): no Python frames");
        return true;
      }
      return false;
    }
    size_t first = states.size();
    for (int n = 0; tstate && n < kMaxThreads; ++n) {
      if (!tstates.insert(tstate).second) return false;  // a loop: torn, read again
      PyThreadInfo t;
      t.interpreter = id;
      if (!read_thread(tstate, t, frames_for)) return false;
      complete &= !t.truncated;
      states.push_back(std::move(t));
      if (!read_ptr(tstate + L_.tstate.next, &tstate)) return false;
    }
    std::vector<PyThreadInfo> mine(std::make_move_iterator(states.begin() + first),
                                   std::make_move_iterator(states.end()));
    read_thread_names(interp, mine);
    std::move(mine.begin(), mine.end(), states.begin() + first);
    // Who holds this interpreter's GIL (several may share one), and where
    // its waiters sleep.
    uint64_t gil = gil_of(interp);
    if (gil && L_.gil.cond_size && !holders.count(gil)) {
      uint64_t holder = 0;
      int32_t locked = 0;
      read_ptr(gil + L_.gil.holder, &holder);
      memory_.read_exact(gil + L_.gil.locked, &locked, sizeof locked);
      holders[gil] = locked ? holder : 0;
      // A thread waits for the GIL on its condition variable and mutex, and
      // one that was asked to drop it waits on the switch pair that follows
      // them (FORCE_SWITCHING, on every build) until another thread took it.
      out.gil_waits.emplace_back(gil + L_.gil.cond,
                                 gil + L_.gil.mutex + 2 * L_.gil.mutex_size + L_.gil.cond_size);
    }
    if (!read_ptr(interp + L_.interp.next, &interp)) break;
  }
  for (PyThreadInfo& t : states)
    for (const auto& [gil, holder] : holders) t.holds_gil |= holder && t.tstate == holder;
  // One entry per OS thread. A thread running a sub-interpreter was called
  // from another interpreter: its chain there is the inner one. On 3.12+ each
  // chain's outermost frame says where its eval-loop call keeps its entry
  // frame on the native stack: the lower, the deeper (the stack grows down).
  // Otherwise (3.11) the newer interpreter (higher id) is taken as the inner.
  auto outermost_entry = [](const PyThreadInfo& t) {
    return t.frames.empty() ? 0 : t.frames.back().entry_at;
  };
  std::stable_sort(states.begin(), states.end(), [&](const PyThreadInfo& a, const PyThreadInfo& b) {
    if (a.native_tid != b.native_tid) return a.native_tid < b.native_tid;
    uint64_t ea = outermost_entry(a), eb = outermost_entry(b);
    if (ea && eb) return ea < eb;
    return a.interpreter > b.interpreter;
  });
  for (PyThreadInfo& t : states) {
    // A state bound to no OS thread yet (tid 0) is its own entry.
    PyThreadInfo* same =
        t.native_tid > 0 && !out.threads.empty() && out.threads.back().native_tid == t.native_tid
            ? &out.threads.back()
            : nullptr;
    if (!same) {
      out.threads.push_back(std::move(t));
      continue;
    }
    if (!same->frames.empty() && !same->frames.back().is_entry) same->frames.back().is_entry = true;
    same->frames.insert(same->frames.end(), t.frames.begin(), t.frames.end());
    same->truncated |= t.truncated;
    same->holds_gil |= t.holds_gil;
    if (!t.name.empty()) same->name = t.name;  // the outermost interpreter names the thread
  }
  return complete;
}

PyProcessInfo CPythonReader::read(const std::set<long>* frames_for) {
  PyProcessInfo out;
  out.version = version_;
  // Threads run while we read: a chain can change under us. Retry a torn read;
  // keep the last one, marked, when none is clean.
  for (int attempt = 0; attempt < kReadAttempts; ++attempt) {
    out.notes.clear();
    if (read_once(out, frames_for)) return out;
  }
  out.notes.push_back(
      "some Python stacks changed while being read and are shown partial (truncated)");
  return out;
}

}  // namespace stackaudit

// What every fuzz target shares: a check that aborts with a message (libFuzzer
// reports an abort as a crash and keeps the input), and small helpers to carve
// values out of the fuzzer's bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#define FUZZ_CHECK(cond)                                                                \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

namespace stackaudit::fuzz {

// Takes bytes from the front of the fuzzer's input; past its end, zeros.
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  template <typename T>
  T take() {
    T value{};
    size_t n = sizeof value < size_ ? sizeof value : size_;
    std::memcpy(&value, data_, n);
    data_ += n;
    size_ -= n;
    return value;
  }
  // Up to `max` bytes, as text.
  std::string text(size_t max) {
    size_t n = max < size_ ? max : size_;
    std::string out(reinterpret_cast<const char*>(data_), n);
    data_ += n;
    size_ -= n;
    return out;
  }
  std::string rest() { return text(size_); }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_;
  size_t size_;
};

inline std::string as_text(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

inline size_t count_lines(std::string_view text) {
  size_t n = 0;
  for (char c : text) n += c == '\n';
  return n + (!text.empty() && text.back() != '\n');
}

}  // namespace stackaudit::fuzz

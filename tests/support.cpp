#include "tests/support.h"

#include "injector/proc.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace stackaudit::test {

const char* const kStackaudit = STACKAUDIT_BIN;
const char* const kParkThreads = PARK_THREADS_BIN;
const char* const kParkThreadsSource = PARK_THREADS_SOURCE;
const char* const kPyPark = PY_PARK_SCRIPT;
const char* const kSeccompSleepers = SECCOMP_SLEEPERS_BIN;

namespace {

std::vector<char*> c_argv(const std::vector<std::string>& argv) {
  std::vector<char*> out;
  for (const auto& a : argv) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

void exec_child(const std::vector<std::string>& argv) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  auto args = c_argv(argv);
  execv(args[0], args.data());
  _exit(127);
}

}  // namespace

Child::Child(const std::vector<std::string>& argv) {
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  pid_ = fork();
  if (pid_ == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    exec_child(argv);
  }
  close(in[0]);
  close(out[1]);
  in_.reset(in[1]);
  out_.reset(out[0]);
}

Child::~Child() {
  kill_and_reap();
}

void Child::kill_and_reap() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::optional<std::string> Child::read_line(std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{out_.get(), POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
    char buf[4096];
    ssize_t n = read(out_.get(), buf, sizeof buf);
    if (n <= 0) return std::nullopt;
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

std::optional<std::string> Child::wait_for(const std::string& prefix,
                                           std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    auto line = read_line(std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now()));
    if (!line) return std::nullopt;
    if (line->starts_with(prefix)) return line;
  }
  return std::nullopt;
}

void Child::write_line(const std::string& line) {
  std::string s = line + "\n";
  if (write(in_.get(), s.data(), s.size()) < 0) throw std::runtime_error("write to child");
}

long Child::ask(const std::string& command, const std::string& prefix) {
  write_line(command);
  auto line = wait_for(prefix, std::chrono::seconds(5));
  if (!line) return -1;
  return std::stol(line->substr(prefix.size()));
}

RunResult run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    exec_child(argv);
  }
  close(out[1]);
  close(err[1]);
  UniqueFd ends[2] = {UniqueFd(out[0]), UniqueFd(err[0])};
  RunResult r;
  auto end = std::chrono::steady_clock::now() + timeout;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  int open_fds = 2;
  bool killed = false;
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0 && !killed) {
      kill(pid, SIGKILL);
      killed = true;
    }
    if (poll(fds, 2, killed ? 1000 : static_cast<int>(left.count())) <= 0 && killed) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char buf[65536];
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        ends[i].reset();
        fds[i].fd = -1;
        --open_fds;
      } else {
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
      }
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  return r;
}

Agent::Agent(std::vector<std::string> args, std::vector<std::string> env) {
  port_ = free_port();
  std::vector<std::string> argv = {"/usr/bin/env"};
  argv.insert(argv.end(), env.begin(), env.end());
  argv.insert(argv.end(), {kStackaudit, "agent", "--listen", "127.0.0.1:" + std::to_string(port_)});
  argv.insert(argv.end(), args.begin(), args.end());
  child_ = std::make_unique<Child>(argv);
  pid_ = child_->pid();
}

std::string Agent::scrape() {
  return http_get(port_, "/metrics").value_or("");
}

bool Agent::serving() {
  return eventually([&] { return http_get(port_, "/metrics").has_value(); },
                    std::chrono::seconds(20));
}

int Agent::wait(std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  do {
    if (pid_ > 0 && waitpid(pid_, &status, WNOHANG) == pid_) {
      child_->forget();
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    }
    usleep(20 * 1000);
  } while (std::chrono::steady_clock::now() < end);
  return -1000;
}

int Agent::stop(int sig) {
  if (pid_ <= 0) return -1000;
  kill(pid_, sig);
  return wait(std::chrono::seconds(15));
}

nlohmann::json dump_json(pid_t pid, RunResult* result) {
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(pid), "--format", "json"});
  if (result) *result = r;
  if (r.exit_code != 0 && r.exit_code != 1)
    throw std::runtime_error("stackaudit dump failed (" + std::to_string(r.exit_code) +
                             "): " + r.err);
  return nlohmann::json::parse(r.out);
}

int tagged_line(const std::string& source, const std::string& tag) {
  std::ifstream in(source);
  std::string line;
  std::string marker = "@line:" + tag;
  for (int n = 1; std::getline(in, line); ++n) {
    auto pos = line.find(marker);
    if (pos == std::string::npos) continue;
    size_t end = pos + marker.size();
    if (end == line.size() || (!std::isalnum(line[end]) && line[end] != '_')) return n;
  }
  throw std::runtime_error("no @line:" + tag + " in " + source);
}

std::map<pid_t, char> thread_states(pid_t pid) {
  std::map<pid_t, char> out;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  UniqueDir d(dir.c_str());
  if (!d) return out;
  while (dirent* e = d.next()) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    // A thread may vanish while we read: then there is nothing to say about it.
    auto read = proc::read_file(dir + "/" + e->d_name + "/stat");
    if (!read) continue;
    const std::string& text = *read;
    auto close = text.rfind(')');
    if (close != std::string::npos && close + 2 < text.size())
      out[static_cast<pid_t>(std::atoi(e->d_name))] = text[close + 2];
  }
  return out;
}

std::optional<std::string> http_get(int port, const std::string& path, int* status) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return std::nullopt;
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (write(fd.get(), req.data(), req.size()) < 0) return std::nullopt;
  std::string response;
  char buf[65536];
  for (ssize_t n; (n = read(fd.get(), buf, sizeof buf)) > 0;)
    response.append(buf, static_cast<size_t>(n));
  auto body = response.find("\r\n\r\n");
  if (body == std::string::npos) return std::nullopt;
  if (status) *status = std::atoi(response.c_str() + response.find(' ') + 1);
  return response.substr(body + 4);
}

namespace {

// Binds 127.0.0.1:port (0: any); returns the port bound, or 0.
int bind_loopback(int port) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return 0;
  socklen_t len = sizeof addr;
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

}  // namespace

int free_port() {
  // Ports below the kernel's ephemeral range (32768 and up), from a band of
  // this test process's own: two test binaries run in parallel (ctest -j) do
  // not pick the same port between this check and the child's bind.
  static int next = 0;
  int base = 10000 + (getpid() % 1000) * 20;
  for (int i = 0; i < 20; ++i)
    if (int port = bind_loopback(base + next++ % 20)) return port;
  return bind_loopback(0);
}

std::optional<double> metric_value(const std::string& scrape, const std::string& series) {
  std::istringstream in(scrape);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > series.size() && line.starts_with(series) && line[series.size()] == ' ')
      return std::stod(line.substr(series.size() + 1));
  }
  return std::nullopt;
}

std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  for (pid_t p : proc::list_processes()) {
    auto st = proc::read_stat(p, p);
    if (st && st->ppid == pid) out.push_back(p);
  }
  return out;
}

char process_state(pid_t pid) {
  auto st = proc::read_stat(pid, pid);
  return st ? st->state : '?';
}

pid_t tracer_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("TracerPid:")) return std::stoi(line.substr(10));
  return -1;
}

bool nothing_stopped(pid_t pid) {
  for (const auto& [tid, state] : thread_states(pid))
    if (state == 't' || state == 'T') return false;
  return tracer_of(pid) == 0;
}

uint64_t rss_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("VmRSS:")) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

const nlohmann::json* thread_named(const nlohmann::json& audit, const std::string& name) {
  for (const auto& t : audit["threads"])
    if (t["name"] == name) return &t;
  return nullptr;
}

const nlohmann::json* thread_with_tid(const nlohmann::json& audit, long tid) {
  for (const auto& t : audit["threads"])
    if (t["tid"] == tid) return &t;
  return nullptr;
}

bool function_is(const nlohmann::json& frame, const std::string& function) {
  std::string f = frame["function"];
  return f == function || f.ends_with("::" + function);
}

const nlohmann::json* frame_named(const nlohmann::json& thread, const std::string& function) {
  for (const auto& f : thread["frames"])
    if (function_is(f, function)) return &f;
  return nullptr;
}

std::string namespaces_unavailable() {
  static const std::string why = [] {
    if (::access("/usr/bin/unshare", X_OK) != 0 || ::access("/usr/sbin/chroot", X_OK) != 0)
      return std::string("unshare or chroot (util-linux, coreutils) is not installed");
    RunResult r = run({"/usr/bin/unshare", "--mount", "--pid", "--fork", "/bin/true"},
                      std::chrono::seconds(20));
    if (r.exit_code != 0)
      return "unshare --mount --pid failed (it needs CAP_SYS_ADMIN): " +
             r.err.substr(0, r.err.find('\n'));
    return std::string();
  }();
  return why;
}

std::optional<std::string> sid_rootfs(std::string* why_missing) {
  const char* env = std::getenv("STACKAUDIT_SID_ROOTFS");
  std::string root = env && *env ? env : "/var/cache/stackaudit/sid-rootfs";
  std::string why;
  struct stat st;
  if (::stat((root + "/usr/bin").c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    why = "no Debian unstable rootfs at " + root +
          " (./setup.sh makes it with debootstrap; STACKAUDIT_SID_ROOTFS moves it)";
  else
    why = namespaces_unavailable();
  if (why.empty()) return root;
  if (why_missing) *why_missing = why;
  return std::nullopt;
}

namespace {

// unshare's command line: the binds are made by a shell in the new mount
// namespace, which then becomes chroot and the target (one PID throughout).
std::vector<std::string> rootfs_argv(
    const std::string& rootfs, const std::vector<std::string>& argv,
    const std::vector<std::pair<std::string, std::string>>& binds) {
  std::vector<std::string> out = {"/usr/bin/unshare", "--mount", "--pid", "--kill-child"};
  if (binds.empty()) {
    out.insert(out.end(), {"/usr/sbin/chroot", rootfs});
  } else {
    out.insert(out.end(),
               {"/bin/sh", "-c",
                "root=$1; shift; while [ \"$1\" != -- ]; do mount --bind \"$1\" \"$root$2\" "
                "|| exit 126; shift 2; done; shift; exec /usr/sbin/chroot \"$root\" \"$@\"",
                "sh", rootfs});
    for (const auto& [host, inside] : binds) out.insert(out.end(), {host, inside});
    out.push_back("--");
  }
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

}  // namespace

RootfsChild::RootfsChild(const std::string& rootfs, const std::vector<std::string>& argv,
                         const std::vector<std::pair<std::string, std::string>>& binds)
    : launcher_(rootfs_argv(rootfs, argv, binds)) {}

RootfsChild::~RootfsChild() {
  if (pid_ > 0) ::kill(pid_, SIGKILL);
  // ~Child then kills and reaps unshare.
}

pid_t RootfsChild::pid() {
  if (pid_ != 0) return pid_;
  std::vector<pid_t> kids;
  eventually([&] { return !(kids = children_of(launcher_.pid())).empty(); },
             std::chrono::seconds(10));
  pid_ = kids.empty() ? -1 : kids.front();
  return pid_;
}

TempDir::TempDir(const std::string& prefix) {
  std::string pattern = "/tmp/" + prefix + "-XXXXXX";
  if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp " + pattern);
  path_ = pattern;
}

TempDir::~TempDir() {
  run({"/bin/rm", "-rf", "--", path_});
}

void copy_file(const std::string& from, const std::string& to) {
  RunResult r = run({"/bin/cp", "--", from, to});
  if (r.exit_code != 0) throw std::runtime_error("cp " + from + " " + to + ": " + r.err);
}

}  // namespace stackaudit::test

#include "tests/python_targets.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace stackaudit::test {
namespace fs = std::filesystem;
namespace {

// "3.13" for an interpreter, from itself; "" when it does not run.
std::string version_of(const std::string& interpreter) {
  RunResult r = run({interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"},
                    std::chrono::seconds(20));
  std::string v = r.out.substr(0, r.out.find('\n'));
  return r.exit_code == 0 ? v : "";
}

// A host interpreter of this version: from STACKAUDIT_TEST_PYTHONS (paths
// separated by ':'), then PATH, then pyenv's versions folder. Debian's own
// /usr/bin/python3.11 for 3.11.
std::string host_interpreter(const std::string& version) {
  if (version == "3.11")
    return access("/usr/bin/python3.11", X_OK) == 0 ? "/usr/bin/python3.11" : "";
  std::vector<std::string> candidates;
  auto split = [&](const char* list, const std::string& suffix) {
    std::istringstream in(list ? list : "");
    for (std::string item; std::getline(in, item, ':');)
      if (!item.empty()) candidates.push_back(item + suffix);
  };
  split(std::getenv("STACKAUDIT_TEST_PYTHONS"), "");
  split(std::getenv("PATH"), "/python" + version);
  std::string pyenv = std::getenv("PYENV_ROOT") ? std::getenv("PYENV_ROOT")
                      : std::getenv("HOME")     ? std::string(std::getenv("HOME")) + "/.pyenv"
                                                : "";
  std::error_code ec;
  if (!pyenv.empty())
    for (const auto& e : fs::directory_iterator(pyenv + "/versions", ec))
      if (e.path().filename().string().starts_with(version + "."))
        candidates.push_back(e.path().string() + "/bin/python" + version);
  for (const std::string& c : candidates)
    if (access(c.c_str(), X_OK) == 0 && version_of(c) == version) return c;
  return "";
}

}  // namespace

std::string PythonTarget::name() const {
  std::string v = version;
  for (char& c : v)
    if (c == '.') c = '_';
  return "py" + v + (container ? "_container" : "_host");
}

void PrintTo(const PythonTarget& target, std::ostream* out) {
  *out << "CPython " << target.version << (target.container ? " in a container" : " on the host");
}

std::vector<PythonTarget> python_targets() {
  std::vector<PythonTarget> out;
  for (const char* v : {"3.11", "3.12", "3.13", "3.14", "3.15"}) out.push_back({v, false});
  for (const char* v : {"3.13", "3.14", "3.15"}) out.push_back({v, true});
  return out;
}

std::unique_ptr<PythonProcess> PythonProcess::start(const PythonTarget& target,
                                                    const std::string& script, std::string* missing,
                                                    const std::vector<std::string>& args) {
  std::unique_ptr<PythonProcess> p(new PythonProcess);
  std::vector<std::string> argv;
  if (!target.container) {
    p->interpreter_ = host_interpreter(target.version);
    if (p->interpreter_.empty()) {
      *missing = "no CPython " + target.version +
                 " on this machine (looked in STACKAUDIT_TEST_PYTHONS, PATH and pyenv)";
      return nullptr;
    }
    p->script_ = script;
    argv = {p->interpreter_, script};
    argv.insert(argv.end(), args.begin(), args.end());
    p->host_ = std::make_unique<Child>(argv);
    p->pid_ = p->host_->pid();
    return p;
  }
  auto root = sid_rootfs(missing);
  if (!root) return nullptr;
  p->interpreter_ = "/usr/bin/python" + target.version;
  if (access((*root + p->interpreter_).c_str(), X_OK) != 0) {
    *missing = "no " + p->interpreter_ + " in the Debian unstable rootfs at " + *root;
    return nullptr;
  }
  // The fixtures' folder at /mnt, as a service's code would be in its image.
  p->script_ = "/mnt/" + fs::path(script).filename().string();
  argv = {p->interpreter_, p->script_};
  argv.insert(argv.end(), args.begin(), args.end());
  p->tmp_ = std::make_unique<TempDir>("stackaudit-container-tmp");
  p->container_ = std::make_unique<RootfsChild>(
      *root, argv,
      std::vector<std::pair<std::string, std::string>>{
          {fs::path(script).parent_path().string(), "/mnt"}, {p->tmp_->path(), "/tmp"}});
  p->pid_ = p->container_->pid();
  return p;
}

PythonProcess::~PythonProcess() {
  container_.reset();  // before its /tmp goes
}

long PythonProcess::host_tid(long tid) const {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid_) + "/task", ec)) {
    std::ifstream status(e.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (!line.starts_with("NSpid:")) continue;
      std::istringstream in(line.substr(6));
      long host = -1, inner = -1;
      in >> host;
      for (long v; in >> v;) inner = v;
      if ((inner < 0 ? host : inner) == tid) return host;
    }
  }
  return -1;
}

}  // namespace stackaudit::test

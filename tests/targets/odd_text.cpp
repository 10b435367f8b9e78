// Test fixture: text that is not clean UTF-8, from each source stackaudit
// reads text from.
//
//   odd_text DIR [ARG...]
//
// - "worker--éééé" names a thread: the kernel keeps 15 bytes of a thread
//   name, which cuts the fourth "é" in half. It waits in read on a pipe.
// - a thread named with an escape sequence and a newline waits in a sleep;
// - a thread waits in read on a FIFO, DIR/fifo<0xff>, a path that is not UTF-8;
// - the arguments are whatever the test gives (it gives bytes that are not
//   UTF-8), and the test runs this program from a directory whose name is
//   not UTF-8 either.
// Prints "ready PID" and waits for stdin to close.
#include <fcntl.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

namespace {

int g_pipe[2];

__attribute__((noinline)) void cut_name() {
  // prctl cuts a name at 15 bytes, as the kernel does for any thread name
  // (pthread_setname_np refuses a longer one instead).
  prctl(PR_SET_NAME, "worker--\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
  char buf[8];
  if (read(g_pipe[0], buf, sizeof buf) < 0) std::perror("read");  // @line:cut_name
}

__attribute__((noinline)) void escape_name() {
  pthread_setname_np(pthread_self(), "evil\x1b[2J\nx");
  std::this_thread::sleep_for(std::chrono::hours(1));  // @line:escape_name
}

__attribute__((noinline)) void fifo_reader(std::string path) {
  pthread_setname_np(pthread_self(), "fifo_reader");
  int fd = open(path.c_str(), O_RDWR);  // read and write ends: never at EOF
  char buf[8];
  if (read(fd, buf, sizeof buf) < 0) std::perror("read");  // @line:fifo_reader
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || pipe(g_pipe) != 0) return 2;
  std::string fifo = std::string(argv[1]) + "/fifo\xff";
  if (mkfifo(fifo.c_str(), 0600) != 0) {
    std::perror("mkfifo");
    return 1;
  }
  std::thread(cut_name).detach();
  std::thread(escape_name).detach();
  std::thread(fifo_reader, fifo).detach();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::printf("ready %d\n", static_cast<int>(getpid()));
  std::fflush(stdout);
  char line[64];
  while (std::fgets(line, sizeof line, stdin)) {
  }
  return 0;
}

// Forks N children (default 3) that sleep until killed, prints "children PID
// PID ..." and "ready", and reaps each child as it dies, as a prefork master
// would. The children die with it (PR_SET_PDEATHSIG).
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 3;
  if (n < 0 || n > 4096) return 2;
  pid_t parent = getpid();
  printf("children");
  for (int i = 0; i < n; ++i) {
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(0);
      for (;;) pause();
    }
    printf(" %d", (int)pid);
  }
  printf("\nready\n");
  fflush(stdout);
  for (;;)
    if (wait(NULL) < 0 && errno == ECHILD) pause();
}

/* Test fixture: not CPython, but it exports what a reader looks for first:
 * Py_Version (a version we choose at build time) and a _PyRuntime that is
 * all zeros. stackaudit must fall back to native frames with one warning. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

__attribute__((visibility("default"))) const unsigned int Py_Version = FAKE_PY_VERSION;
__attribute__((visibility("default"))) char _PyRuntime[65536];

static void* nap(void* arg) {
  (void)arg;
  for (;;) sleep(3600);
  return NULL;
}

int main(void) {
  pthread_t t;
  pthread_create(&t, NULL, nap, NULL);
  usleep(50 * 1000);
  printf("ready %d\n", (int)getpid());
  fflush(stdout);
  for (;;) pause();
}

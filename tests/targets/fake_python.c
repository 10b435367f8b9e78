/* Test fixture: not CPython, but it exports what a reader looks for first:
 * Py_Version (a version we choose at build time) and a _PyRuntime that is
 * all zeros, or (FAKE_FREE_THREADED) starts with the _Py_DebugOffsets header
 * of a free-threaded build. stackaudit must fall back to native frames with
 * one warning. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

__attribute__((visibility("default"))) const unsigned int Py_Version = FAKE_PY_VERSION;
#ifdef FAKE_FREE_THREADED
__attribute__((visibility("default"))) struct {
  char cookie[8];
  unsigned long long version, free_threaded;
  char rest[65536];
} _PyRuntime = {{'x', 'd', 'e', 'b', 'u', 'g', 'p', 'y'}, FAKE_PY_VERSION, 1, {0}};
#else
__attribute__((visibility("default"))) char _PyRuntime[65536];
#endif

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

/* Test fixture: a 32-bit (i386) process that spins, built without a C
 * library (-m32 -nostdlib -static) so that no 32-bit libc is needed. */
void _start(void) {
  for (;;) __asm__ volatile("pause");
}

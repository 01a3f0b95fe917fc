#include <stdio.h>

/* The error function of BoringSSL's OPENSSL_PUT_ERROR, by its System V arguments. */
__attribute__((noinline)) void ERR_put_error(int library, int unused, int reason,
                                             const char *file, unsigned line) {
  fprintf(stderr, "%d %d %d %s:%u\n", library, unused, reason, file, line);
}

#define PUT(library, reason) ERR_put_error(library, 0, reason, "x/ssl/ssl_lib.cc", __LINE__)

/* Reports 66, 111, 226: what SSL_write reports. */
__attribute__((noinline)) int write_like(int n) {
  if (n == 1) { PUT(16, 66); return -1; }
  if (n < 0) { PUT(16, 111); return -1; }
  if (n == 7) { PUT(16, 226); return -1; }
  return n * 5;
}

/* Reports 215 and 226 only: ssl_read_impl. */
__attribute__((noinline)) int read_impl(int n) {
  if (n == 2) { PUT(16, 215); return -1; }
  if (n == 3) { PUT(16, 226); return -1; }
  return n + 11;
}

/* Reports 66 only and calls read_impl: SSL_peek. */
__attribute__((noinline)) int peek_like(int n) {
  if (n == 4) { PUT(16, 66); return -1; }
  return read_impl(n) * 3;
}

/* What SSL_read does after peeking: consume, with no reports of its own. */
volatile int consumed;
__attribute__((noinline)) void consume(int n) { consumed += n; }

/* SSL_read with SSL_peek inlined (Chromium): reports 66 only, calls read_impl as peek_like
   does, then consumes. */
__attribute__((noinline)) int read_like(int n) {
  if (n == 18) { PUT(16, 66); return -1; }
  int got = read_impl(n) * 3;
  consume(got);
  return got;
}

/* Also reports 66 only, but calls nothing that reports. */
__attribute__((noinline)) int other_66(int n) {
  if (n == 5) { PUT(16, 66); return -1; }
  return n * 7;
}

/* Two functions with the same reasons: no rule on reasons alone tells them apart. */
__attribute__((noinline)) int twin_a(int n) {
  if (n == 8) { PUT(16, 300); return -1; }
  if (n == 9) { PUT(16, 301); return -1; }
  return n + 1;
}

__attribute__((noinline)) int twin_b(int n) {
  if (n == 10) { PUT(16, 300); return -1; }
  if (n == 11) { PUT(16, 301); return -1; }
  return n + 2;
}

/* SSL_write's reasons under another library code (ERR_LIB_CIPHER, 30). */
__attribute__((noinline)) int other_library(int n) {
  if (n == 12) { PUT(30, 66); return -1; }
  if (n == 13) { PUT(30, 111); return -1; }
  if (n == 14) { PUT(30, 226); return -1; }
  return n - 1;
}

/* Called only through a function pointer (as aws-lc's functions are, through the GOT, in
   uv): no direct call marks its entry, the unwind table (.eh_frame_hdr) does. */
__attribute__((noinline)) int indirect_like(int n) {
  if (n == 15) { PUT(30, 500); return -1; }
  if (n == 16) { PUT(30, 501); return -1; }
  return n + 4;
}
int (*volatile indirect)(int) = indirect_like;

/* Size-optimised code (clang -Oz, as in Deno) loads small constants with `push imm8; pop reg`:
   CIPHER_R_TOO_LARGE (117) from aead.c, written out by hand. */
const char aead_source[] = "x/crypto/fipsmodule/cipher/aead.c";
__attribute__((naked, noinline)) int pushed_like(int n) {
  __asm__ volatile(
      "cmp $17, %edi\n"
      "jne 1f\n"
#ifdef __PIE__
      "lea aead_source(%rip), %rcx\n"
#else
      "mov $aead_source, %ecx\n"
#endif
      "push $0x1e\n"
      "pop %rdi\n"
      "push $0x75\n"
      "pop %rdx\n"
      "push $0x49\n"
      "pop %r8\n"
      "xor %esi, %esi\n"
      "sub $8, %rsp\n"
      "call ERR_put_error\n"
      "add $8, %rsp\n"
      "mov $-1, %eax\n"
      "ret\n"
      "1: lea 3(%rdi), %eax\n"
      "ret\n");
}

int main(int argc, char **argv) {
  (void)argv;
  return write_like(argc) + peek_like(argc) + other_66(argc) + twin_a(argc) + twin_b(argc) +
         other_library(argc) + indirect(argc) + pushed_like(argc) + read_like(argc);
}

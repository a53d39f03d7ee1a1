/* A 32-bit system call (int 0x80: getpid, i386 number 20) from an x86_64 program. The
 * filter covers the native arch only and kills any other: nothing after it may print. */
#include <stdio.h>
#include <sys/resource.h>

int main(void) {
    struct rlimit none = {0, 0};
    long ret;
    setrlimit(RLIMIT_CORE, &none); /* a SIGSYS death dumps core otherwise */
    printf("before\n");
    fflush(stdout);
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
    printf("survived int 0x80: %ld\n", ret);
    return 0;
}

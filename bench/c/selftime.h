/* What the bench's C helpers share: a monotonic clock in microseconds, and pinning the calling
 * thread to one CPU (the placement of a per-call case). A header, not a library, because the
 * bench compiles each helper from its one .c file. */
#ifndef BENCH_SELFTIME_H
#define BENCH_SELFTIME_H

#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <time.h>

static inline double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Pin the calling thread to cpu; cpu < 0 leaves it free. 0 on success, -1 (reported) if not. */
static inline int pin_to(int cpu) {
    if (cpu < 0)
        return 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        return -1;
    }
    return 0;
}

#endif

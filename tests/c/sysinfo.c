/* Prints sysinfo(2)'s total and free RAM in bytes: "total free". */
#include <stdio.h>
#include <sys/sysinfo.h>

int main(void) {
    struct sysinfo si;
    if (sysinfo(&si) != 0) { perror("sysinfo"); return 1; }
    printf("%llu %llu\n", (unsigned long long)si.totalram * si.mem_unit, (unsigned long long)si.freeram * si.mem_unit);
    return 0;
}

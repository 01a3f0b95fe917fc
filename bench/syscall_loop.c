/*
 * syscall_loop: what one syscall costs a process that probectl does not trace. It makes
 * COUNT 1-byte write(2)s to /dev/null (a syscall whose own work is nearly nothing) and prints
 * the nanoseconds per call. scripts/bench runs it, untraced and while probectl traces another
 * process, to show what probectl's syscall hooks cost every other process on the host.
 *
 *   syscall_loop COUNT
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long count = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
    if (count <= 0) {
        fprintf(stderr, "usage: syscall_loop COUNT\n");
        return 2;
    }
    int fd = open("/dev/null", O_WRONLY);
    if (fd < 0) {
        perror("/dev/null");
        return 1;
    }
    char byte = 'x';
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < count; i++) {
        if (write(fd, &byte, 1) != 1) {
            perror("write");
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
    printf("%.1f\n", ns / count);
    return 0;
}

/* A program that sets up before it reads its input, as an interpreter
 * does: booted to its first read of stdin, everything before that read is
 * in the snapshot, and each restore continues inside the read. It prints
 * what it saw on each side of the read, so a test can tell which values
 * are the boot's (shared by every restore) and which the request's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int counter;

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static unsigned long long entropy(void) {
    unsigned long long r = 0;
    if (getentropy(&r, sizeof r) != 0)
        abort();
    return r;
}

int main(int argc, char **argv) {
    const char *mode = getenv("MODE");
    unsigned long long boot_random = entropy();
    long long boot_ms = now_ms();
    counter++;
    fprintf(stderr, "set up with %d argument(s)\n", argc);
    if (mode && strcmp(mode, "exit-early") == 0) {
        fprintf(stderr, "giving up before reading\n");
        return 3;
    }

    char input[256];
    size_t n = fread(input, 1, sizeof input - 1, stdin);
    input[n] = 0;
    counter++;
    printf("arg=%s mode=%s counter=%d boot_random=%016llx random=%016llx "
           "boot_ms=%lld now_ms=%lld input=%s\n",
           argc > 1 ? argv[1] : "-", mode ? mode : "-", counter, boot_random,
           entropy(), boot_ms, now_ms(), input);
    return 0;
}

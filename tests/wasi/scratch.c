/* Reports what an earlier invocation left in /tmp, then leaves something:
 * run twice on one instance, the second must find /tmp empty again. With
 * `fill`, writes until the scratch space runs out and reports how it ended. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    FILE *f = fopen("/tmp/state", "r");
    if (f) {
        char buf[64] = {0};
        fgets(buf, sizeof buf, f);
        fclose(f);
        printf("found: %s\n", buf);
    } else {
        printf("absent: %s\n", strerror(errno));
    }
    f = fopen("/tmp/state", "w");
    if (!f) {
        printf("create: %s\n", strerror(errno));
        return 1;
    }
    fprintf(f, "%s", argc > 1 ? argv[1] : "x");
    fclose(f);
    if (argc > 1 && !strcmp(argv[1], "fill")) {
        static char block[1 << 16];
        memset(block, 'x', sizeof block);
        f = fopen("/tmp/big", "w");
        long long total = 0;
        while (fwrite(block, 1, sizeof block, f) == sizeof block) total += sizeof block;
        int err = ferror(f) ? errno : 0;
        fclose(f);
        printf("filled %s MiB, then: %s\n", total > (8 << 20) ? "more than 8" : "at most 8", strerror(err));
        printf("remove: %s\n", remove("/tmp/big") == 0 ? "ok" : strerror(errno));
    }
    return 0;
}

/* path_filestat_set_times and fd_filestat_set_times with every
 * combination of fstflags, through symlinks and not, on files, directories
 * and missing paths. Times are printed as what they equal: the value
 * given, the one before, or "now". argv[1]: the preopen to work in. */
#include "conf.h"

#define BASE_A 1000000000123456789ull /* 2001-09-09, to the nanosecond */
#define BASE_M 1100000000987654321ull
#define GIVEN_A 1200000000111111111ull
#define GIVEN_M 1300000000222222222ull

static const char *describe(uint64_t t, uint64_t given, uint64_t base, uint64_t start) {
    if (t == given)
        return "given";
    if (t == base)
        return "unchanged";
    /* File systems stamp "now" from a coarse clock: allow a second. */
    if (t + 1000000000ull >= start)
        return "now";
    return "other";
}

/* Stats `path` (following symlinks or not) and prints its times. */
static void times_of(const char *label, __wasi_fd_t dir, __wasi_lookupflags_t lookup, const char *path,
                     uint64_t start, uint64_t base_a, uint64_t base_m) {
    __wasi_filestat_t st;
    __wasi_errno_t e = __wasi_path_filestat_get(dir, lookup, path, &st);
    if (e != 0) {
        say("%s -> %s", label, ename(e));
        return;
    }
    say("%s -> atim %s, mtim %s", label, describe(st.atim, GIVEN_A, base_a, start),
        describe(st.mtim, GIVEN_M, base_m, start));
}

/* A symlink's modification time only: following a symlink reads it, and
 * whether that moves its access time is the host's mount option. */
static void mtime_of(const char *label, __wasi_fd_t dir, const char *path, uint64_t start, uint64_t base_m) {
    __wasi_filestat_t st;
    __wasi_errno_t e = __wasi_path_filestat_get(dir, 0, path, &st);
    if (e != 0) {
        say("%s -> %s", label, ename(e));
        return;
    }
    say("%s -> mtim %s", label, describe(st.mtim, GIVEN_M, base_m, start));
}

static uint64_t now(void) {
    __wasi_timestamp_t t = 0;
    (void)__wasi_clock_time_get(__WASI_CLOCKID_REALTIME, 1, &t);
    return t;
}

static const char *flag_names(__wasi_fstflags_t f) {
    static char buf[64];
    buf[0] = 0;
    if (f & __WASI_FSTFLAGS_ATIM)
        strcat(buf, "|ATIM");
    if (f & __WASI_FSTFLAGS_ATIM_NOW)
        strcat(buf, "|ATIM_NOW");
    if (f & __WASI_FSTFLAGS_MTIM)
        strcat(buf, "|MTIM");
    if (f & __WASI_FSTFLAGS_MTIM_NOW)
        strcat(buf, "|MTIM_NOW");
    return buf[0] ? buf + 1 : "0";
}

/* Sets the base times of `path`, quietly. */
static void reset(__wasi_fd_t dir, __wasi_lookupflags_t lookup, const char *path) {
    (void)__wasi_path_filestat_set_times(dir, lookup, path, BASE_A, BASE_M,
                                         __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM);
}

int main(int argc, char **argv) {
    __wasi_fd_t P = preopen(argv[1]);
    make_file("setup t", P, "t", "x");
    CALL("setup path_create_directory(P, \"td\")", __wasi_path_create_directory(P, "td"));
    CALL("setup path_symlink(\"t\", P, \"tl\")", __wasi_path_symlink("t", P, "tl"));
    CALL("setup path_symlink(\"nowhere\", P, \"dangling\")", __wasi_path_symlink("nowhere", P, "dangling"));
    /* Known times, so that a read-only copy of the fixtures has them too. */
    reset(P, 0, "t");
    reset(P, 0, "td");
    reset(P, 0, "tl");
    if (setup_only(argc, argv))
        return 0;

    uint64_t start = now();
    char label[160];
    /* Every combination of the four flags (an undefined one traps:
     * badargs.c). */
    for (__wasi_fstflags_t f = 0; f <= 0xf; f++) {
        reset(P, 0, "t");
        snprintf(label, sizeof label, "path_filestat_set_times(P, 0, \"t\", %s)", flag_names(f));
        CALL(label, __wasi_path_filestat_set_times(P, 0, "t", GIVEN_A, GIVEN_M, f));
        times_of("  t", P, 0, "t", start, BASE_A, BASE_M);
    }
    for (__wasi_fstflags_t f = 0; f <= 0xf; f++) {
        reset(P, 0, "t");
        int fd = open_at("path_open(P, \"t\", 0, READ)", P, 0, "t", 0, __WASI_RIGHTS_FD_READ, 0, 0);
        if (fd < 0)
            continue;
        snprintf(label, sizeof label, "fd_filestat_set_times(t, %s)", flag_names(f));
        CALL(label, __wasi_fd_filestat_set_times((__wasi_fd_t)fd, GIVEN_A, GIVEN_M, f));
        times_of("  t", P, 0, "t", start, BASE_A, BASE_M);
        quiet_close(fd);
    }

    /* Through a symlink, and not. */
    const __wasi_fstflags_t both = __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM;
    for (__wasi_lookupflags_t lookup = 0; lookup <= 1; lookup++) {
        reset(P, 0, "t");
        reset(P, 0, "tl");
        snprintf(label, sizeof label, "path_filestat_set_times(P, %s, \"tl\", ATIM|MTIM)",
                 lookup ? "FOLLOW" : "0");
        CALL(label, __wasi_path_filestat_set_times(P, lookup, "tl", GIVEN_A, GIVEN_M, both));
        times_of("  t", P, 0, "t", start, BASE_A, BASE_M);
        mtime_of("  tl itself", P, "tl", start, BASE_M);
        snprintf(label, sizeof label, "path_filestat_set_times(P, %s, \"tl\", MTIM_NOW)",
                 lookup ? "FOLLOW" : "0");
        reset(P, 0, "t");
        reset(P, 0, "tl");
        CALL(label, __wasi_path_filestat_set_times(P, lookup, "tl", 0, 0, __WASI_FSTFLAGS_MTIM_NOW));
        times_of("  t", P, 0, "t", start, BASE_A, BASE_M);
        mtime_of("  tl itself", P, "tl", start, BASE_M);
    }

    /* Other kinds of paths. */
    const char *paths[] = {"td", "td/", "t/", "tl/", "missing", "dangling", "dangling/", ".", "", "/t", "../t"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        for (__wasi_lookupflags_t lookup = 0; lookup <= 1; lookup++) {
            snprintf(label, sizeof label, "path_filestat_set_times(P, %s, \"%s\", ATIM|MTIM)",
                     lookup ? "FOLLOW" : "0", paths[i]);
            CALL(label, __wasi_path_filestat_set_times(P, lookup, paths[i], GIVEN_A, GIVEN_M, both));
        }
    times_of("  td", P, 0, "td", start, BASE_A, BASE_M);
    CALL("path_filestat_set_times(P, 0, \"t\", ATIM|ATIM_NOW)",
         __wasi_path_filestat_set_times(P, 0, "t", GIVEN_A, 0, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_ATIM_NOW));
    CALL("path_filestat_set_times(99, 0, \"t\", ATIM)",
         __wasi_path_filestat_set_times(99, 0, "t", GIVEN_A, 0, __WASI_FSTFLAGS_ATIM));

    /* Descriptors of other kinds. */
    reset(P, 0, "td");
    CALL("fd_filestat_set_times(P, MTIM)", __wasi_fd_filestat_set_times(P, 0, GIVEN_M, __WASI_FSTFLAGS_MTIM));
    int d = open_at("path_open(P, \"td\", DIRECTORY, 0)", P, 0, "td", __WASI_OFLAGS_DIRECTORY, 0, 0, 0);
    if (d >= 0) {
        CALL("fd_filestat_set_times(td, ATIM|MTIM)", __wasi_fd_filestat_set_times((__wasi_fd_t)d, GIVEN_A, GIVEN_M, both));
        times_of("  td", P, 0, "td", start, BASE_A, BASE_M);
    }
    quiet_close(d);
    int w = open_at("path_open(P, \"t\", 0, WRITE)", P, 0, "t", 0, __WASI_RIGHTS_FD_WRITE, 0, 0);
    if (w >= 0) {
        reset(P, 0, "t");
        write_text("fd_write(t, \"more\")", (__wasi_fd_t)w, "more");
        times_of("  t", P, 0, "t", start, BASE_A, BASE_M);
        reset(P, 0, "t");
        CALL("fd_filestat_set_size(t, 1)", __wasi_fd_filestat_set_size((__wasi_fd_t)w, 1));
        times_of("  t", P, 0, "t", start, BASE_A, BASE_M);
    }
    quiet_close(w);
    return 0;
}

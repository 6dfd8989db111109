/* The remaining calls: arguments, environment, clocks, randomness,
 * scheduling, signals, and the descriptor calls on files and directories
 * (seek, tell, sizes, advice, allocation, sync, scatter/gather I/O,
 * prestat names, close), ending with proc_exit(3). argv[1]: the preopen to
 * work in; argv[2..]: arguments to print. */
#include "conf.h"

/* proc_raise is in preview 1 but no longer in wasi-libc's header. */
__attribute__((import_module("wasi_snapshot_preview1"), import_name("proc_raise"))) int32_t
raw_proc_raise(int32_t signal);

static void value(const char *label, __wasi_errno_t e, unsigned long long v) {
    if (e == 0)
        say("%s -> %llu", label, v);
    else
        say("%s -> %s", label, ename(e));
}

int main(int argc, char **argv) {
    __wasi_fd_t P = preopen(argv[1]);
    make_file("setup f", P, "f", "0123456789");
    CALL("setup path_create_directory(P, \"d\")", __wasi_path_create_directory(P, "d"));
    if (setup_only(argc, argv))
        return 0;

    /* Arguments and environment (argv[0] is the program's path: not
     * printed). */
    __wasi_size_t count, size;
    CALL("args_sizes_get", __wasi_args_sizes_get(&count, &size));
    say("  %lu arguments", (unsigned long)count);
    static uint8_t *ptrs[64];
    static uint8_t bytes[4096];
    if (count < 64 && size < sizeof bytes) {
        CALL("args_get", __wasi_args_get(ptrs, bytes));
        for (__wasi_size_t i = 1; i < count; i++)
            say("  argv[%lu] = \"%s\"", (unsigned long)i, (char *)ptrs[i]);
    }
    CALL("environ_sizes_get", __wasi_environ_sizes_get(&count, &size));
    say("  %lu variables, %lu bytes", (unsigned long)count, (unsigned long)size);
    if (count < 64 && size < sizeof bytes) {
        CALL("environ_get", __wasi_environ_get(ptrs, bytes));
        for (__wasi_size_t i = 0; i < count; i++)
            say("  %s", (char *)ptrs[i]);
    }

    /* Clocks. */
    for (__wasi_clockid_t id = 0; id <= 3; id++) {
        char label[64];
        __wasi_timestamp_t t = 0;
        snprintf(label, sizeof label, "clock_res_get(%u)", id);
        __wasi_errno_t e = __wasi_clock_res_get(id, &t);
        say("%s -> %s", label, e ? ename(e) : t > 0 && t <= 1000000 ? "at most 1ms" : "other");
        snprintf(label, sizeof label, "clock_time_get(%u)", id);
        e = __wasi_clock_time_get(id, 1, &t);
        say("%s -> %s", label, e ? ename(e) : t > 0 ? "nonzero" : "zero");
    }
    __wasi_timestamp_t a = 0, b = 0;
    (void)__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &a);
    (void)__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &b);
    say("monotonic clock never goes back: %s", b >= a ? "yes" : "no");
    (void)__wasi_clock_time_get(__WASI_CLOCKID_REALTIME, 1, &a);
    say("realtime clock after 2020: %s", a > 1577836800000000000ull ? "yes" : "no");

    /* Randomness, scheduling, signals. */
    uint8_t r1[32] = {0}, r2[32] = {0};
    CALL("random_get(0 bytes)", __wasi_random_get(r1, 0));
    CALL("random_get(32 bytes)", __wasi_random_get(r1, sizeof r1));
    CALL("random_get(32 bytes)", __wasi_random_get(r2, sizeof r2));
    say("  the two differ: %s", memcmp(r1, r2, sizeof r1) ? "yes" : "no");
    CALL("sched_yield", __wasi_sched_yield());
    CALL("proc_raise(0)", (__wasi_errno_t)raw_proc_raise(0));
    CALL("proc_raise(TERM)", (__wasi_errno_t)raw_proc_raise(15));

    /* Prestat names. */
    __wasi_prestat_t pre;
    CALL("fd_prestat_get(P)", __wasi_fd_prestat_get(P, &pre));
    say("  tag %u, name length %lu", pre.tag, (unsigned long)pre.u.dir.pr_name_len);
    char name[64];
    size_t len = pre.u.dir.pr_name_len;
    memset(name, '#', sizeof name);
    CALL("fd_prestat_dir_name(P, length - 1)", __wasi_fd_prestat_dir_name(P, (uint8_t *)name, len - 1));
    CALL("fd_prestat_dir_name(P, length + 1)", __wasi_fd_prestat_dir_name(P, (uint8_t *)name, len + 1));
    say("  byte after the name: %s", name[len] == '#' ? "untouched" : name[len] == 0 ? "NUL" : "other");
    CALL("fd_prestat_dir_name(P, length)", __wasi_fd_prestat_dir_name(P, (uint8_t *)name, len));

    int f = open_at("path_open(P, \"f\", 0, READ|WRITE)", P, 0, "f", 0,
                    __WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_WRITE, 0, 0);
    int d = open_at("path_open(P, \"d\", DIRECTORY, READ)", P, 0, "d", __WASI_OFLAGS_DIRECTORY,
                    __WASI_RIGHTS_FD_READ, 0, 0);
    int ro = open_at("path_open(P, \"f\", 0, READ)", P, 0, "f", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    if (f < 0 || d < 0 || ro < 0)
        return 1;
    __wasi_fd_t F = (__wasi_fd_t)f, D = (__wasi_fd_t)d, RO = (__wasi_fd_t)ro;
    CALL("fd_prestat_get(file)", __wasi_fd_prestat_get(F, &pre));
    CALL("fd_prestat_dir_name(file)", __wasi_fd_prestat_dir_name(F, (uint8_t *)name, sizeof name));
    CALL("fd_prestat_get(dir)", __wasi_fd_prestat_get(D, &pre));
    CALL("fd_prestat_dir_name(dir)", __wasi_fd_prestat_dir_name(D, (uint8_t *)name, sizeof name));
    CALL("fd_prestat_get(99)", __wasi_fd_prestat_get(99, &pre));
    CALL("fd_prestat_dir_name(99)", __wasi_fd_prestat_dir_name(99, (uint8_t *)name, sizeof name));

    /* Seeking. */
    __wasi_filesize_t pos = 0;
    value("fd_seek(file, 3, SET)", __wasi_fd_seek(F, 3, __WASI_WHENCE_SET, &pos), pos);
    value("fd_seek(file, 2, CUR)", __wasi_fd_seek(F, 2, __WASI_WHENCE_CUR, &pos), pos);
    value("fd_seek(file, -1, END)", __wasi_fd_seek(F, -1, __WASI_WHENCE_END, &pos), pos);
    value("fd_seek(file, 5, END)", __wasi_fd_seek(F, 5, __WASI_WHENCE_END, &pos), pos);
    value("fd_tell(file)", __wasi_fd_tell(F, &pos), pos);
    read_text("fd_read(file) past the end", F, -1, 8);
    value("fd_seek(file, -1, SET)", __wasi_fd_seek(F, -1, __WASI_WHENCE_SET, &pos), pos);
    value("fd_seek(file, -100, CUR)", __wasi_fd_seek(F, -100, __WASI_WHENCE_CUR, &pos), pos);
    value("fd_seek(file, -100, END)", __wasi_fd_seek(F, -100, __WASI_WHENCE_END, &pos), pos);
    value("fd_seek(file, 2^62, SET)", __wasi_fd_seek(F, 1ll << 62, __WASI_WHENCE_SET, &pos), pos);
    value("fd_seek(file, 2^62, CUR)", __wasi_fd_seek(F, 1ll << 62, __WASI_WHENCE_CUR, &pos), pos);
    value("fd_tell(file)", __wasi_fd_tell(F, &pos), pos);
    value("fd_seek(file, 0, SET)", __wasi_fd_seek(F, 0, __WASI_WHENCE_SET, &pos), pos);
    value("fd_seek(dir, 0, SET)", __wasi_fd_seek(D, 0, __WASI_WHENCE_SET, &pos), pos);
    value("fd_tell(dir)", __wasi_fd_tell(D, &pos), pos);
    value("fd_seek(P, 0, CUR)", __wasi_fd_seek(P, 0, __WASI_WHENCE_CUR, &pos), pos);
    value("fd_seek(99, 0, CUR)", __wasi_fd_seek(99, 0, __WASI_WHENCE_CUR, &pos), pos);
    value("fd_seek(ro, 4, SET)", __wasi_fd_seek(RO, 4, __WASI_WHENCE_SET, &pos), pos);

    /* Scatter and gather. */
    char b1[3], b2[8];
    __wasi_iovec_t iovs[3] = {{(uint8_t *)b1, 0}, {(uint8_t *)b1, sizeof b1}, {(uint8_t *)b2, sizeof b2}};
    __wasi_size_t n = 0;
    value("fd_read(ro, [0, 3, 8 bytes])", __wasi_fd_read(RO, iovs, 3, &n), n);
    value("fd_pread(ro, [0, 3, 8 bytes], 0)", __wasi_fd_pread(RO, iovs, 3, 0, &n), n);
    value("fd_read(ro, no buffers)", __wasi_fd_read(RO, iovs, 0, &n), n);
    value("fd_read(ro, [0 bytes])", __wasi_fd_read(RO, iovs, 1, &n), n);
    const __wasi_ciovec_t ciovs[3] = {{(const uint8_t *)"", 0}, {(const uint8_t *)"AB", 2}, {(const uint8_t *)"CD", 2}};
    value("fd_write(file, [0, 2, 2 bytes])", __wasi_fd_write(F, ciovs, 3, &n), n);
    value("fd_pwrite(file, [0, 2, 2 bytes], 8)", __wasi_fd_pwrite(F, ciovs, 3, 8, &n), n);
    value("fd_write(file, no buffers)", __wasi_fd_write(F, ciovs, 0, &n), n);
    value("fd_write(ro, no buffers)", __wasi_fd_write(RO, ciovs, 0, &n), n);
    value("fd_read(file, no buffers)", __wasi_fd_read(F, iovs, 0, &n), n);
    show_file("contents of f", P, "f");
    value("fd_pwrite(file, \"AB\", 20)", __wasi_fd_pwrite(F, ciovs + 1, 1, 20, &n), n);
    read_text("fd_pread(file, 15)", F, 15, 32);
    read_text("fd_pread(file, 100)", F, 100, 32);
    read_text("fd_pread(file, 2^62)", F, (int64_t)(1ull << 62), 32);
    value("fd_pwrite(file, \"AB\", 2^63)", __wasi_fd_pwrite(F, ciovs + 1, 1, 1ull << 63, &n), n);
    read_text("fd_read(dir)", D, -1, 8);
    read_text("fd_pread(dir, 0)", D, 0, 8);
    value("fd_write(dir)", __wasi_fd_write(D, ciovs + 1, 1, &n), n);
    value("fd_pwrite(dir, 0)", __wasi_fd_pwrite(D, ciovs + 1, 1, 0, &n), n);
    value("fd_write(P)", __wasi_fd_write(P, ciovs + 1, 1, &n), n);

    /* Sizes. */
    __wasi_filestat_t st;
    value("fd_filestat_set_size(file, 30)", __wasi_fd_filestat_set_size(F, 30), 0);
    value("fd_filestat_get(file) size", __wasi_fd_filestat_get(F, &st), st.size);
    value("fd_filestat_set_size(file, 4)", __wasi_fd_filestat_set_size(F, 4), 0);
    value("fd_filestat_get(file) size", __wasi_fd_filestat_get(F, &st), st.size);
    value("fd_filestat_set_size(ro, 2)", __wasi_fd_filestat_set_size(RO, 2), 0);
    value("fd_filestat_set_size(dir, 0)", __wasi_fd_filestat_set_size(D, 0), 0);
    value("fd_filestat_set_size(file, 2^63)", __wasi_fd_filestat_set_size(F, 1ull << 63), 0);
    value("fd_filestat_get(file) size", __wasi_fd_filestat_get(F, &st), st.size);
    value("fd_filestat_get(dir) type", __wasi_fd_filestat_get(D, &st), st.filetype);
    value("fd_filestat_get(P) type", __wasi_fd_filestat_get(P, &st), st.filetype);
    value("fd_filestat_get(file) dev", __wasi_fd_filestat_get(F, &st), st.dev);
    value("fd_filestat_get(file) nlink", __wasi_fd_filestat_get(F, &st), st.nlink);
    __wasi_filestat_t st2;
    (void)__wasi_path_filestat_get(P, 0, "f", &st2);
    say("fd_filestat_get(file) ino is path_filestat_get's: %s", st.ino == st2.ino ? "yes" : "no");
    say("  path_filestat_get dev %llu", (unsigned long long)st2.dev);

    /* Advice, allocation, sync. */
    for (__wasi_advice_t adv = 0; adv <= 5; adv++) {
        char label[64];
        snprintf(label, sizeof label, "fd_advise(file, 0, 4, %u)", adv);
        CALL(label, __wasi_fd_advise(F, 0, 4, adv));
    }
    CALL("fd_advise(ro, 0, 0, NORMAL)", __wasi_fd_advise(RO, 0, 0, __WASI_ADVICE_NORMAL));
    CALL("fd_advise(dir, 0, 0, NORMAL)", __wasi_fd_advise(D, 0, 0, __WASI_ADVICE_NORMAL));
    CALL("fd_advise(99, 0, 0, NORMAL)", __wasi_fd_advise(99, 0, 0, __WASI_ADVICE_NORMAL));
    CALL("fd_allocate(file, 0, 100)", __wasi_fd_allocate(F, 0, 100));
    CALL("fd_allocate(ro, 0, 100)", __wasi_fd_allocate(RO, 0, 100));
    CALL("fd_allocate(dir, 0, 100)", __wasi_fd_allocate(D, 0, 100));
    CALL("fd_allocate(99, 0, 100)", __wasi_fd_allocate(99, 0, 100));
    CALL("fd_sync(file)", __wasi_fd_sync(F));
    CALL("fd_sync(ro)", __wasi_fd_sync(RO));
    CALL("fd_sync(dir)", __wasi_fd_sync(D));
    CALL("fd_sync(P)", __wasi_fd_sync(P));
    CALL("fd_sync(99)", __wasi_fd_sync(99));
    CALL("fd_datasync(file)", __wasi_fd_datasync(F));
    CALL("fd_datasync(ro)", __wasi_fd_datasync(RO));
    CALL("fd_datasync(dir)", __wasi_fd_datasync(D));
    CALL("fd_datasync(99)", __wasi_fd_datasync(99));

    /* Closing. */
    CALL("fd_close(file)", __wasi_fd_close(F));
    CALL("fd_close(file)", __wasi_fd_close(F));
    CALL("fd_close(dir)", __wasi_fd_close(D));
    CALL("fd_close(99)", __wasi_fd_close(99));
    CALL("fd_close(-1)", __wasi_fd_close((__wasi_fd_t)-1));
    CALL("fd_fdstat_get(dir)", __wasi_fd_fdstat_get(D, &(__wasi_fdstat_t){0}));
    CALL("fd_close(P)", __wasi_fd_close(P));
    CALL("path_create_directory(P, \"x\")", __wasi_path_create_directory(P, "x"));
    quiet_close(ro);
    say("proc_exit(3)");
    __wasi_proc_exit(3);
}

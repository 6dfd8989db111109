/* Appending: path_open with fdflags APPEND, then fd_write, fd_pwrite (which
 * Linux and wasmtime send to the end too), positions, and turning APPEND
 * on and off with fd_fdstat_set_flags. argv[1]: the preopen to work in. */
#include "conf.h"

#define RW (__WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_WRITE | __WASI_RIGHTS_FD_SEEK | __WASI_RIGHTS_FD_TELL)

static void tell(const char *label, __wasi_fd_t fd) {
    __wasi_filesize_t pos;
    __wasi_errno_t e = __wasi_fd_tell(fd, &pos);
    if (e == 0)
        say("%s -> %llu", label, (unsigned long long)pos);
    else
        say("%s -> %s", label, ename(e));
}

static void pwrite_text(const char *label, __wasi_fd_t fd, const char *text, uint64_t at) {
    const __wasi_ciovec_t iov = {(const uint8_t *)text, strlen(text)};
    __wasi_size_t n = 0;
    __wasi_errno_t e = __wasi_fd_pwrite(fd, &iov, 1, at, &n);
    if (e == 0)
        say("%s -> %lu bytes", label, (unsigned long)n);
    else
        say("%s -> %s", label, ename(e));
}

static void size_of(const char *label, __wasi_fd_t fd) {
    __wasi_filestat_t st;
    __wasi_errno_t e = __wasi_fd_filestat_get(fd, &st);
    if (e == 0)
        say("%s -> size %llu", label, (unsigned long long)st.size);
    else
        say("%s -> %s", label, ename(e));
}

int main(int argc, char **argv) {
    __wasi_fd_t P = preopen(argv[1]);
    make_file("setup log", P, "log", "0123456789");
    make_file("setup keep", P, "keep", "abc");
    if (setup_only(argc, argv))
        return 0;

    int fd = open_at("path_open(P, \"log\", 0, READ|WRITE|SEEK|TELL, APPEND)", P, 0, "log", 0, RW, 0,
                     __WASI_FDFLAGS_APPEND);
    if (fd >= 0) {
        __wasi_fd_t f = (__wasi_fd_t)fd;
        show_fdstat("fd_fdstat_get(log)", f);
        tell("fd_tell(log)", f);
        write_text("fd_write(log, \"AB\")", f, "AB");
        tell("fd_tell(log)", f);
        pwrite_text("fd_pwrite(log, \"cd\", 0)", f, "cd", 0);
        tell("fd_tell(log)", f);
        pwrite_text("fd_pwrite(log, \"ef\", 14)", f, "ef", 14);
        size_of("fd_filestat_get(log)", f);
        __wasi_filesize_t pos;
        CALL("fd_seek(log, 0, SET)", __wasi_fd_seek(f, 0, __WASI_WHENCE_SET, &pos));
        read_text("fd_read(log)", f, -1, 64);
        tell("fd_tell(log)", f);
        CALL("fd_seek(log, 2, SET)", __wasi_fd_seek(f, 2, __WASI_WHENCE_SET, &pos));
        write_text("fd_write(log, \"G\")", f, "G");
        tell("fd_tell(log)", f);
        CALL("fd_fdstat_set_flags(log, 0)", __wasi_fd_fdstat_set_flags(f, 0));
        show_fdstat("fd_fdstat_get(log)", f);
        CALL("fd_seek(log, 1, SET)", __wasi_fd_seek(f, 1, __WASI_WHENCE_SET, &pos));
        write_text("fd_write(log, \"h\")", f, "h");
        tell("fd_tell(log)", f);
        pwrite_text("fd_pwrite(log, \"i\", 3)", f, "i", 3);
        tell("fd_tell(log)", f);
        CALL("fd_fdstat_set_flags(log, APPEND)", __wasi_fd_fdstat_set_flags(f, __WASI_FDFLAGS_APPEND));
        show_fdstat("fd_fdstat_get(log)", f);
        write_text("fd_write(log, \"J\")", f, "J");
        tell("fd_tell(log)", f);
        pwrite_text("fd_pwrite(log, \"k\", 0)", f, "k", 0);
        read_text("fd_pread(log, 0)", f, 0, 64);
        CALL("fd_fdstat_set_flags(log, APPEND|NONBLOCK)",
             __wasi_fd_fdstat_set_flags(f, __WASI_FDFLAGS_APPEND | __WASI_FDFLAGS_NONBLOCK));
        show_fdstat("fd_fdstat_get(log)", f);
        CALL("fd_fdstat_set_flags(log, DSYNC)", __wasi_fd_fdstat_set_flags(f, __WASI_FDFLAGS_DSYNC));
        CALL("fd_fdstat_set_flags(log, SYNC)", __wasi_fd_fdstat_set_flags(f, __WASI_FDFLAGS_SYNC));
        CALL("fd_fdstat_set_flags(log, RSYNC)", __wasi_fd_fdstat_set_flags(f, __WASI_FDFLAGS_RSYNC));
        show_fdstat("fd_fdstat_get(log)", f);
        CALL("fd_filestat_set_size(log, 4)", __wasi_fd_filestat_set_size(f, 4));
        write_text("fd_write(log, \"L\")", f, "L");
        tell("fd_tell(log)", f);
        quiet_close(fd);
    }
    show_file("contents of log", P, "log");

    /* Appending without the right to write, and with TRUNC. */
    fd = open_at("path_open(P, \"keep\", 0, READ, APPEND)", P, 0, "keep", 0, __WASI_RIGHTS_FD_READ, 0,
                 __WASI_FDFLAGS_APPEND);
    if (fd >= 0) {
        write_text("fd_write(keep, \"x\")", (__wasi_fd_t)fd, "x");
        pwrite_text("fd_pwrite(keep, \"x\", 0)", (__wasi_fd_t)fd, "x", 0);
    }
    quiet_close(fd);
    fd = open_at("path_open(P, \"keep\", 0, WRITE, APPEND)", P, 0, "keep", 0, __WASI_RIGHTS_FD_WRITE, 0,
                 __WASI_FDFLAGS_APPEND);
    if (fd >= 0) {
        write_text("fd_write(keep, \"d\")", (__wasi_fd_t)fd, "d");
        pwrite_text("fd_pwrite(keep, \"e\", 0)", (__wasi_fd_t)fd, "e", 0);
        read_text("fd_read(keep)", (__wasi_fd_t)fd, -1, 64);
    }
    quiet_close(fd);
    show_file("contents of keep", P, "keep");
    fd = open_at("path_open(P, \"keep\", TRUNC, WRITE, APPEND)", P, 0, "keep", __WASI_OFLAGS_TRUNC,
                 __WASI_RIGHTS_FD_WRITE, 0, __WASI_FDFLAGS_APPEND);
    if (fd >= 0)
        write_text("fd_write(keep, \"z\")", (__wasi_fd_t)fd, "z");
    quiet_close(fd);
    show_file("contents of keep", P, "keep");
    fd = open_at("path_open(P, \"fresh\", CREAT|EXCL, WRITE, APPEND)", P, 0, "fresh",
                 __WASI_OFLAGS_CREAT | __WASI_OFLAGS_EXCL, __WASI_RIGHTS_FD_WRITE, 0, __WASI_FDFLAGS_APPEND);
    if (fd >= 0) {
        pwrite_text("fd_pwrite(fresh, \"one\", 5)", (__wasi_fd_t)fd, "one", 5);
        write_text("fd_write(fresh, \"two\")", (__wasi_fd_t)fd, "two");
    }
    quiet_close(fd);
    show_file("contents of fresh", P, "fresh");
    CALL("path_unlink_file(P, \"fresh\")", __wasi_path_unlink_file(P, "fresh"));
    return 0;
}

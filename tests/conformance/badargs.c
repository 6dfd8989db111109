/* Arguments a call does not define: flags with undefined bits and enum
 * values out of range. wasmtime does not answer these with an errno: the
 * call traps, before it looks at the descriptor. One case per run:
 * argv[1] is the preopen, argv[2] the case; the program prints the call
 * and, if it returns, its errno. */
#include "conf.h"

__attribute__((import_module("wasi_snapshot_preview1"), import_name("proc_raise"))) int32_t
raw_proc_raise(int32_t signal);

int main(int argc, char **argv) {
    __wasi_fd_t P = preopen(argv[1]);
    const char *c = argc > 2 ? argv[2] : "";
    __wasi_fd_t fd;
    __wasi_timestamp_t t;
    __wasi_filesize_t pos;
    char buf[8];
    __wasi_iovec_t iov = {(uint8_t *)buf, sizeof buf};
    __wasi_size_t n;
    __wasi_roflags_t roflags;
    say("%s", c);
    __wasi_errno_t e;
    if (!strcmp(c, "path_open(P, \"x\", 0, undefined right)"))
        e = __wasi_path_open(P, 0, "x", 0, 1ull << 40, 0, 0, &fd);
    else if (!strcmp(c, "path_open(P, \"x\", 0, undefined inheriting right)"))
        e = __wasi_path_open(P, 0, "x", 0, 0, 1ull << 40, 0, &fd);
    else if (!strcmp(c, "path_open(99, \"x\", 0, undefined right)"))
        e = __wasi_path_open(99, 0, "x", 0, 1ull << 40, 0, 0, &fd);
    else if (!strcmp(c, "path_open(P, \"x\", undefined oflag 0x10)"))
        e = __wasi_path_open(P, 0, "x", 0x10, 0, 0, 0, &fd);
    else if (!strcmp(c, "path_open(P, lookup 2, \"x\")"))
        e = __wasi_path_open(P, 2, "x", 0, 0, 0, 0, &fd);
    else if (!strcmp(c, "path_open(P, \"x\", fdflags 0x20)"))
        e = __wasi_path_open(P, 0, "x", 0, 0, 0, 0x20, &fd);
    else if (!strcmp(c, "path_filestat_get(P, lookup 2, \"x\")"))
        e = __wasi_path_filestat_get(P, 2, "x", &(__wasi_filestat_t){0});
    else if (!strcmp(c, "path_filestat_set_times(P, 0, \"x\", fstflags 0x10)"))
        e = __wasi_path_filestat_set_times(P, 0, "x", 0, 0, 0x10);
    else if (!strcmp(c, "path_link(P, lookup 2, \"x\", P, \"y\")"))
        e = __wasi_path_link(P, 2, "x", P, "y");
    else if (!strcmp(c, "fd_filestat_set_times(P, fstflags 0x10)"))
        e = __wasi_fd_filestat_set_times(P, 0, 0, 0x10);
    else if (!strcmp(c, "fd_filestat_set_times(99, fstflags 0x10)"))
        e = __wasi_fd_filestat_set_times(99, 0, 0, 0x10);
    else if (!strcmp(c, "fd_fdstat_set_flags(1, 0x20)"))
        e = __wasi_fd_fdstat_set_flags(1, 0x20);
    else if (!strcmp(c, "fd_fdstat_set_rights(P, undefined right)"))
        e = __wasi_fd_fdstat_set_rights(P, 1ull << 40, 0);
    else if (!strcmp(c, "fd_seek(P, 0, whence 3)"))
        e = __wasi_fd_seek(P, 0, 3, &pos);
    else if (!strcmp(c, "fd_advise(P, 0, 0, advice 6)"))
        e = __wasi_fd_advise(P, 0, 0, 6);
    else if (!strcmp(c, "clock_res_get(4)"))
        e = __wasi_clock_res_get(4, &t);
    else if (!strcmp(c, "clock_time_get(4)"))
        e = __wasi_clock_time_get(4, 1, &t);
    else if (!strcmp(c, "proc_raise(99)"))
        e = (__wasi_errno_t)raw_proc_raise(99);
    else if (!strcmp(c, "sock_accept(1, fdflags 0x20)"))
        e = __wasi_sock_accept(1, 0x20, &fd);
    else if (!strcmp(c, "sock_accept(99, fdflags 0x20)"))
        e = __wasi_sock_accept(99, 0x20, &fd);
    else if (!strcmp(c, "sock_recv(1, riflags 4)"))
        e = __wasi_sock_recv(1, &iov, 1, 4, &n, &roflags);
    else if (!strcmp(c, "sock_shutdown(1, sdflags 4)"))
        e = __wasi_sock_shutdown(1, 4);
    else {
        say("no such case");
        return 2;
    }
    say("-> %s", ename(e));
    return 0;
}

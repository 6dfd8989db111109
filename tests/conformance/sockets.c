/* sock_* on descriptors that are not sockets: stdio, a preopen, a file,
 * a directory, a closed and a never-opened number, and invalid flags.
 * argv[1]: the preopen to work in. */
#include "conf.h"

static void socket_calls(const char *name, __wasi_fd_t fd) {
    char label[128];
    __wasi_fd_t accepted;
    snprintf(label, sizeof label, "sock_accept(%s, 0)", name);
    CALL(label, __wasi_sock_accept(fd, 0, &accepted));
    char buf[8];
    __wasi_iovec_t iov = {(uint8_t *)buf, sizeof buf};
    __wasi_size_t n;
    __wasi_roflags_t roflags;
    snprintf(label, sizeof label, "sock_recv(%s, 0)", name);
    CALL(label, __wasi_sock_recv(fd, &iov, 1, 0, &n, &roflags));
    const __wasi_ciovec_t ciov = {(const uint8_t *)"x", 1};
    snprintf(label, sizeof label, "sock_send(%s, 0)", name);
    CALL(label, __wasi_sock_send(fd, &ciov, 1, 0, &n));
    snprintf(label, sizeof label, "sock_shutdown(%s, RD|WR)", name);
    CALL(label, __wasi_sock_shutdown(fd, __WASI_SDFLAGS_RD | __WASI_SDFLAGS_WR));
}

int main(int argc, char **argv) {
    __wasi_fd_t P = preopen(argv[1]);
    make_file("setup f", P, "f", "x");
    CALL("setup path_create_directory(P, \"d\")", __wasi_path_create_directory(P, "d"));
    if (setup_only(argc, argv))
        return 0;

    socket_calls("0", 0);
    socket_calls("1", 1);
    socket_calls("2", 2);
    socket_calls("P", P);
    int f = open_at("path_open(P, \"f\", 0, READ)", P, 0, "f", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    if (f >= 0)
        socket_calls("file", (__wasi_fd_t)f);
    int d = open_at("path_open(P, \"d\", DIRECTORY, READ)", P, 0, "d", __WASI_OFLAGS_DIRECTORY,
                    __WASI_RIGHTS_FD_READ, 0, 0);
    if (d >= 0)
        socket_calls("dir", (__wasi_fd_t)d);
    if (f >= 0) {
        CALL("fd_close(file)", __wasi_fd_close((__wasi_fd_t)f));
        socket_calls("closed", (__wasi_fd_t)f);
    }
    socket_calls("99", 99);
    socket_calls("-1", (__wasi_fd_t)-1);

    /* Flags (undefined ones are in badargs.c: they trap). */
    __wasi_fd_t accepted;
    CALL("sock_accept(1, APPEND)", __wasi_sock_accept(1, __WASI_FDFLAGS_APPEND, &accepted));
    char buf[8];
    __wasi_iovec_t iov = {(uint8_t *)buf, sizeof buf};
    __wasi_size_t n;
    __wasi_roflags_t roflags;
    CALL("sock_recv(1, PEEK|WAITALL)",
         __wasi_sock_recv(1, &iov, 1, __WASI_RIFLAGS_RECV_PEEK | __WASI_RIFLAGS_RECV_WAITALL, &n, &roflags));
    const __wasi_ciovec_t ciov = {(const uint8_t *)"x", 1};
    CALL("sock_send(1, siflags 1)", __wasi_sock_send(1, &ciov, 1, 1, &n));
    CALL("sock_shutdown(1, 0)", __wasi_sock_shutdown(1, 0));
    CALL("sock_shutdown(1, RD)", __wasi_sock_shutdown(1, __WASI_SDFLAGS_RD));
    quiet_close(d);
    return 0;
}

/* fd_renumber onto and from preopens, stdio and files, and which numbers
 * new descriptors get after closes and renumbers. argv[1]: the preopen to
 * work in. */
#include "conf.h"

#define R (__WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_WRITE)

static void prestat(const char *label, __wasi_fd_t fd) {
    __wasi_prestat_t pre;
    __wasi_errno_t e = __wasi_fd_prestat_get(fd, &pre);
    if (e != 0) {
        say("%s -> %s", label, ename(e));
        return;
    }
    char name[64] = {0};
    size_t len = pre.u.dir.pr_name_len < sizeof name - 1 ? pre.u.dir.pr_name_len : sizeof name - 1;
    e = __wasi_fd_prestat_dir_name(fd, (uint8_t *)name, len);
    say("%s -> preopen \"%s\" (%s)", label, name, ename(e));
}

int main(int argc, char **argv) {
    __wasi_fd_t P = preopen(argv[1]);
    make_file("setup a", P, "a", "file a");
    make_file("setup b", P, "b", "file b");
    make_file("setup out", P, "out", "");
    if (setup_only(argc, argv))
        return 0;

    /* The preopen keeps working under another number, and a file can
     * take the preopen's number. */
    int a = open_at("path_open(P, \"a\", 0, READ)", P, 0, "a", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    int b = open_at("path_open(P, \"b\", 0, READ)", P, 0, "b", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    if (a < 0 || b < 0)
        return 1;
    CALL("fd_renumber(P, b)", __wasi_fd_renumber(P, (__wasi_fd_t)b));
    prestat("  fd_prestat_get(b)", (__wasi_fd_t)b);
    prestat("  fd_prestat_get(P)", P);
    show_fdstat("  fd_fdstat_get(P)", P);
    read_text("  fd_read(b)", (__wasi_fd_t)b, -1, 16);
    int c = open_at("  path_open(b, \"a\", 0, READ)", (__wasi_fd_t)b, 0, "a", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    CALL("fd_renumber(a, P)", __wasi_fd_renumber((__wasi_fd_t)a, P));
    CALL("fd_renumber(b, P)", __wasi_fd_renumber((__wasi_fd_t)b, P));
    CALL("fd_renumber(P, a)", __wasi_fd_renumber(P, (__wasi_fd_t)a));
    CALL("fd_renumber(P, b)", __wasi_fd_renumber(P, (__wasi_fd_t)b));
    CALL("fd_renumber(b, P)", __wasi_fd_renumber((__wasi_fd_t)b, P));
    prestat("  fd_prestat_get(P)", P);
    prestat("  fd_prestat_get(b)", (__wasi_fd_t)b);
    show_fdstat("  fd_fdstat_get(b)", (__wasi_fd_t)b);
    /* A file onto the preopen: the preopen is gone. */
    b = open_at("path_open(P, \"b\", 0, READ)", P, 0, "b", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    int dir = open_at("path_open(P, \".\", DIRECTORY, 0)", P, 0, ".", __WASI_OFLAGS_DIRECTORY, 0, 0, 0);
    if (b < 0 || dir < 0)
        return 1;
    CALL("fd_renumber(b, P)", __wasi_fd_renumber((__wasi_fd_t)b, P));
    prestat("  fd_prestat_get(P)", P);
    show_fdstat("  fd_fdstat_get(P)", P);
    read_text("  fd_read(P)", P, -1, 16);
    int gone = open_at("  path_open(P, \"a\", 0, READ)", P, 0, "a", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    quiet_close(gone);
    __wasi_fd_t D = (__wasi_fd_t)dir;

    /* Numbers that are not open. */
    CALL("fd_renumber(D, D)", __wasi_fd_renumber(D, D));
    CALL("fd_renumber(99, D)", __wasi_fd_renumber(99, D));
    CALL("fd_renumber(D, 99)", __wasi_fd_renumber(D, 99));
    CALL("fd_renumber(99, 99)", __wasi_fd_renumber(99, 99));
    CALL("fd_renumber(c, c)", __wasi_fd_renumber((__wasi_fd_t)c, (__wasi_fd_t)c));

    /* Which numbers new descriptors get. */
    int x = open_at("path_open(D, \"a\") x", D, 0, "a", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    int y = open_at("path_open(D, \"a\") y", D, 0, "a", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    int z = open_at("path_open(D, \"a\") z", D, 0, "a", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    CALL("fd_close(x)", __wasi_fd_close((__wasi_fd_t)x));
    CALL("fd_close(z)", __wasi_fd_close((__wasi_fd_t)z));
    int u = open_at("path_open(D, \"a\") u", D, 0, "a", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    int v = open_at("path_open(D, \"a\") v", D, 0, "a", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    int w = open_at("path_open(D, \"a\") w", D, 0, "a", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    CALL("fd_renumber(y, w)", __wasi_fd_renumber((__wasi_fd_t)y, (__wasi_fd_t)w));
    int t = open_at("path_open(D, \"a\") t", D, 0, "a", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    quiet_close(u);
    quiet_close(v);
    quiet_close(w);
    quiet_close(t);
    quiet_close(c);

    /* Stdio: stdout parked on another number, a file in its place. */
    int park = open_at("path_open(D, \"a\") park", D, 0, "a", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    if (park < 0)
        return 1;
    CALL("fd_renumber(1, park)", __wasi_fd_renumber(1, (__wasi_fd_t)park));
    OUT = (__wasi_fd_t)park;
    show_fdstat("  fd_fdstat_get(park)", OUT);
    show_fdstat("  fd_fdstat_get(1)", 1);
    int out = open_at("  path_open(D, \"out\", 0, READ|WRITE)", D, 0, "out", 0, R, 0, 0);
    write_text("  fd_write(1, \"into the file\")", 1, "into the file");
    if (out >= 0 && out != 1)
        write_text("  fd_write(out, \"!\")", (__wasi_fd_t)out, "!");
    CALL("fd_renumber(park, 1)", __wasi_fd_renumber((__wasi_fd_t)park, 1));
    OUT = 1;
    show_fdstat("  fd_fdstat_get(1)", 1);
    show_file("  contents of out", D, "out");
    /* Stdin elsewhere. */
    int in = open_at("path_open(D, \"a\") in", D, 0, "a", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    CALL("fd_renumber(0, in)", __wasi_fd_renumber(0, (__wasi_fd_t)in));
    show_fdstat("  fd_fdstat_get(in)", (__wasi_fd_t)in);
    read_text("  fd_read(in)", (__wasi_fd_t)in, -1, 16);
    read_text("  fd_read(0)", 0, -1, 16);
    int next = open_at("path_open(D, \"a\") next", D, 0, "a", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    read_text("  fd_read(next)", (__wasi_fd_t)(next < 0 ? 99 : next), -1, 16);
    CALL("fd_renumber(2, next)", __wasi_fd_renumber(2, (__wasi_fd_t)(next < 0 ? 99 : next)));
    write_text("  fd_write(next, \"\")", (__wasi_fd_t)(next < 0 ? 99 : next), "");
    write_text("  fd_write(2, \"\")", 2, "");
    return 0;
}

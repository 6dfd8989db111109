/* Rights and open modes: path_open with every kind of requested rights,
 * on files and directories (directories with file rights too), reopening
 * the preopen with exactly its own rights, fd_fdstat_set_rights, and what
 * each descriptor then allows. argv[1]: the preopen to work in. */
#include "conf.h"

#define R_READ __WASI_RIGHTS_FD_READ
#define R_WRITE __WASI_RIGHTS_FD_WRITE
#define R_SEEK __WASI_RIGHTS_FD_SEEK
/* Every right preview 1 defines (bit 29 is SOCK_ACCEPT). */
#define R_ALL ((__wasi_rights_t)0x3fffffff)

/* Prints what reading and writing `fd` give. */
static void probe(const char *what, int fd) {
    if (fd < 0)
        return;
    char label[128];
    snprintf(label, sizeof label, "  fd_read(%s)", what);
    read_text(label, (__wasi_fd_t)fd, -1, 8);
    snprintf(label, sizeof label, "  fd_write(%s, \"\")", what);
    const __wasi_ciovec_t none = {(const uint8_t *)"", 0};
    __wasi_size_t n;
    CALL(label, __wasi_fd_write((__wasi_fd_t)fd, &none, 1, &n));
    snprintf(label, sizeof label, "  fd_fdstat_get(%s)", what);
    show_fdstat(label, (__wasi_fd_t)fd);
}

int main(int argc, char **argv) {
    __wasi_fd_t P = preopen(argv[1]);
    make_file("setup f", P, "f", "hello");
    CALL("setup path_create_directory(P, \"d\")", __wasi_path_create_directory(P, "d"));
    if (setup_only(argc, argv))
        return 0;

    __wasi_fdstat_t pst;
    CALL("fd_fdstat_get(P)", __wasi_fd_fdstat_get(P, &pst));
    show_fdstat("fd_fdstat_get(P)", P);
    __wasi_rights_t base = pst.fs_rights_base, inh = pst.fs_rights_inheriting;

    /* The preopen reopened, as wasi-libc and Rust's std do. */
    int fd = open_at("path_open(P, \".\", DIRECTORY, P's rights)", P, 0, ".",
                     __WASI_OFLAGS_DIRECTORY, base, inh, 0);
    show_fdstat("  fd_fdstat_get(it)", fd);
    if (fd >= 0) {
        __wasi_prestat_t pre;
        CALL("  fd_prestat_get(it)", __wasi_fd_prestat_get((__wasi_fd_t)fd, &pre));
        int inner = open_at("  path_open(it, \"f\", 0, READ)", (__wasi_fd_t)fd, 0, "f", 0, R_READ, 0, 0);
        probe("that", inner);
        quiet_close(inner);
    }
    quiet_close(fd);
    fd = open_at("path_open(P, \".\", 0, P's rights)", P, 0, ".", 0, base, inh, 0);
    quiet_close(fd);
    fd = open_at("path_open(P, \".\", DIRECTORY, P's inheriting as base)", P, 0, ".",
                 __WASI_OFLAGS_DIRECTORY, inh, inh, 0);
    quiet_close(fd);
    fd = open_at("path_open(P, \".\", DIRECTORY, 0 rights)", P, 0, ".", __WASI_OFLAGS_DIRECTORY, 0, 0, 0);
    if (fd >= 0) {
        /* Rights of a parent are no limit on what it opens. */
        int inner = open_at("  path_open(it, \"f\", 0, READ|WRITE)", (__wasi_fd_t)fd, 0, "f", 0,
                            R_READ | R_WRITE, 0, 0);
        show_fdstat("  fd_fdstat_get(that)", inner);
        quiet_close(inner);
    }
    quiet_close(fd);

    /* Directories opened with file rights. */
    fd = open_at("path_open(P, \"d\", DIRECTORY, READ)", P, 0, "d", __WASI_OFLAGS_DIRECTORY, R_READ, 0, 0);
    show_fdstat("  fd_fdstat_get(it)", fd);
    quiet_close(fd);
    fd = open_at("path_open(P, \"d\", 0, READ|SEEK)", P, 0, "d", 0, R_READ | R_SEEK, 0, 0);
    if (fd >= 0) {
        probe("dir", fd);
        __wasi_filesize_t pos;
        CALL("  fd_seek(dir, 0, SET)", __wasi_fd_seek((__wasi_fd_t)fd, 0, __WASI_WHENCE_SET, &pos));
        CALL("  fd_tell(dir)", __wasi_fd_tell((__wasi_fd_t)fd, &pos));
    }
    quiet_close(fd);
    fd = open_at("path_open(P, \"d\", 0, WRITE)", P, 0, "d", 0, R_WRITE, 0, 0);
    quiet_close(fd);
    fd = open_at("path_open(P, \"d\", 0, READ|WRITE)", P, 0, "d", 0, R_READ | R_WRITE, 0, 0);
    quiet_close(fd);
    fd = open_at("path_open(P, \"d\", DIRECTORY, all rights)", P, 0, "d", __WASI_OFLAGS_DIRECTORY, R_ALL, R_ALL, 0);
    quiet_close(fd);
    fd = open_at("path_open(P, \"d\", DIRECTORY, all but WRITE)", P, 0, "d", __WASI_OFLAGS_DIRECTORY,
                 R_ALL & ~R_WRITE, R_ALL, 0);
    show_fdstat("  fd_fdstat_get(it)", fd);
    quiet_close(fd);
    fd = open_at("path_open(P, \"d\", TRUNC, READ)", P, 0, "d", __WASI_OFLAGS_TRUNC, R_READ, 0, 0);
    quiet_close(fd);
    fd = open_at("path_open(P, \"d\", CREAT, READ)", P, 0, "d", __WASI_OFLAGS_CREAT, R_READ, 0, 0);
    quiet_close(fd);
    fd = open_at("path_open(P, \"d\", CREAT|DIRECTORY, READ)", P, 0, "d",
                 __WASI_OFLAGS_CREAT | __WASI_OFLAGS_DIRECTORY, R_READ, 0, 0);
    quiet_close(fd);
    fd = open_at("path_open(P, \"nd\", CREAT|DIRECTORY, READ)", P, 0, "nd",
                 __WASI_OFLAGS_CREAT | __WASI_OFLAGS_DIRECTORY, R_READ, 0, 0);
    quiet_close(fd);
    fd = open_at("path_open(P, \"d\", DIRECTORY|TRUNC, READ)", P, 0, "d",
                 __WASI_OFLAGS_DIRECTORY | __WASI_OFLAGS_TRUNC, R_READ, 0, 0);
    quiet_close(fd);
    fd = open_at("path_open(P, \"d\", DIRECTORY|EXCL, READ)", P, 0, "d",
                 __WASI_OFLAGS_DIRECTORY | __WASI_OFLAGS_EXCL, R_READ, 0, 0);
    quiet_close(fd);

    /* Files opened with each kind of rights. */
    fd = open_at("path_open(P, \"f\", DIRECTORY, READ)", P, 0, "f", __WASI_OFLAGS_DIRECTORY, R_READ, 0, 0);
    quiet_close(fd);
    fd = open_at("path_open(P, \"f\", 0, 0 rights)", P, 0, "f", 0, 0, 0, 0);
    probe("file", fd);
    quiet_close(fd);
    fd = open_at("path_open(P, \"f\", 0, READ)", P, 0, "f", 0, R_READ, 0, 0);
    probe("file", fd);
    quiet_close(fd);
    fd = open_at("path_open(P, \"f\", 0, WRITE)", P, 0, "f", 0, R_WRITE, 0, 0);
    probe("file", fd);
    quiet_close(fd);
    fd = open_at("path_open(P, \"f\", 0, READ|WRITE)", P, 0, "f", 0, R_READ | R_WRITE, 0, 0);
    probe("file", fd);
    quiet_close(fd);
    fd = open_at("path_open(P, \"f\", 0, directory rights)", P, 0, "f", 0, base, inh, 0);
    probe("file", fd);
    quiet_close(fd);
    fd = open_at("path_open(P, \"f\", 0, all rights)", P, 0, "f", 0, R_ALL, R_ALL, 0);
    probe("file", fd);
    quiet_close(fd);
    fd = open_at("path_open(P, \"f\", TRUNC, READ)", P, 0, "f", __WASI_OFLAGS_TRUNC, R_READ, 0, 0);
    probe("file", fd);
    quiet_close(fd);
    make_file("  restore f", P, "f", "hello");
    fd = open_at("path_open(P, \"f\", EXCL, READ)", P, 0, "f", __WASI_OFLAGS_EXCL, R_READ, 0, 0);
    quiet_close(fd);
    fd = open_at("path_open(P, \"f\", CREAT|EXCL, READ)", P, 0, "f",
                 __WASI_OFLAGS_CREAT | __WASI_OFLAGS_EXCL, R_READ, 0, 0);
    quiet_close(fd);
    fd = open_at("path_open(P, \"f\", CREAT, READ)", P, 0, "f", __WASI_OFLAGS_CREAT, R_READ, 0, 0);
    probe("file", fd);
    quiet_close(fd);
    fd = open_at("path_open(P, \"new\", CREAT, READ)", P, 0, "new", __WASI_OFLAGS_CREAT, R_READ, 0, 0);
    probe("new", fd);
    quiet_close(fd);
    CALL("  path_unlink_file(P, \"new\")", __wasi_path_unlink_file(P, "new"));
    fd = open_at("path_open(P, \"new\", CREAT, 0 rights)", P, 0, "new", __WASI_OFLAGS_CREAT, 0, 0, 0);
    probe("new", fd);
    quiet_close(fd);
    CALL("  path_unlink_file(P, \"new\")", __wasi_path_unlink_file(P, "new"));

    /* fdflags at open. */
    const struct {
        const char *name;
        __wasi_fdflags_t flags;
    } fdflags[] = {
        {"APPEND", __WASI_FDFLAGS_APPEND}, {"DSYNC", __WASI_FDFLAGS_DSYNC},
        {"NONBLOCK", __WASI_FDFLAGS_NONBLOCK}, {"RSYNC", __WASI_FDFLAGS_RSYNC},
        {"SYNC", __WASI_FDFLAGS_SYNC},
    };
    for (size_t i = 0; i < sizeof fdflags / sizeof fdflags[0]; i++) {
        char label[128];
        snprintf(label, sizeof label, "path_open(P, \"f\", 0, READ, fdflags %s)", fdflags[i].name);
        fd = open_at(label, P, 0, "f", 0, R_READ, 0, fdflags[i].flags);
        show_fdstat("  fd_fdstat_get(it)", fd);
        quiet_close(fd);
        snprintf(label, sizeof label, "path_open(P, \"d\", DIRECTORY, READ, fdflags %s)", fdflags[i].name);
        fd = open_at(label, P, 0, "d", __WASI_OFLAGS_DIRECTORY, R_READ, 0, fdflags[i].flags);
        show_fdstat("  fd_fdstat_get(it)", fd);
        quiet_close(fd);
    }

    /* Not directories. */
    int file = open_at("path_open(P, \"f\", 0, READ) as a base", P, 0, "f", 0, R_READ, 0, 0);
    if (file >= 0) {
        fd = open_at("path_open(file, \"x\", 0, READ)", (__wasi_fd_t)file, 0, "x", 0, R_READ, 0, 0);
        quiet_close(fd);
    }
    fd = open_at("path_open(1, \"f\", 0, READ)", 1, 0, "f", 0, R_READ, 0, 0);
    quiet_close(fd);
    fd = open_at("path_open(99, \"f\", 0, READ)", 99, 0, "f", 0, R_READ, 0, 0);
    quiet_close(fd);

    /* fd_fdstat_set_rights on everything. */
    CALL("fd_fdstat_set_rights(P, same)", __wasi_fd_fdstat_set_rights(P, base, inh));
    CALL("fd_fdstat_set_rights(P, fewer)", __wasi_fd_fdstat_set_rights(P, base & ~__WASI_RIGHTS_PATH_OPEN, inh));
    CALL("fd_fdstat_set_rights(P, more)", __wasi_fd_fdstat_set_rights(P, R_ALL, R_ALL));
    CALL("fd_fdstat_set_rights(P, 0)", __wasi_fd_fdstat_set_rights(P, 0, 0));
    show_fdstat("  fd_fdstat_get(P)", P);
    fd = open_at("  path_open(P, \"f\", 0, READ) after", P, 0, "f", 0, R_READ, 0, 0);
    quiet_close(fd);
    if (file >= 0) {
        CALL("fd_fdstat_set_rights(file, READ)", __wasi_fd_fdstat_set_rights((__wasi_fd_t)file, R_READ, 0));
        CALL("fd_fdstat_set_rights(file, 0)", __wasi_fd_fdstat_set_rights((__wasi_fd_t)file, 0, 0));
        probe("file", file);
    }
    CALL("fd_fdstat_set_rights(0, 0)", __wasi_fd_fdstat_set_rights(0, 0, 0));
    CALL("fd_fdstat_set_rights(1, WRITE)", __wasi_fd_fdstat_set_rights(1, R_WRITE, 0));
    CALL("fd_fdstat_set_rights(99, 0)", __wasi_fd_fdstat_set_rights(99, 0, 0));
    quiet_close(file);
    return 0;
}

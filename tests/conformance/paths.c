/* Every path call on every kind of path: files, directories, symlinks to
 * each, dangling and looping symlinks, a symlink leading out, missing
 * names, trailing slashes, dots, absolute and empty paths. Each call that
 * changes something is followed by putting the fixtures back. argv[1]: the
 * preopen to work in. */
#include "conf.h"

#define RW (__WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_WRITE)

static __wasi_fd_t P;

/* Removes `path` in P and everything under it, quietly. */
static void wipe(const char *path) {
    if (__wasi_path_unlink_file(P, path) == 0)
        return;
    __wasi_fd_t dir;
    if (__wasi_path_open(P, 0, path, __WASI_OFLAGS_DIRECTORY, __WASI_RIGHTS_FD_READDIR, 0, 0, &dir) == 0) {
        uint8_t buf[2048];
        __wasi_size_t used = 0;
        if (__wasi_fd_readdir(dir, buf, sizeof buf, 0, &used) == 0) {
            size_t at = 0;
            while (at + sizeof(__wasi_dirent_t) <= used) {
                __wasi_dirent_t d;
                memcpy(&d, buf + at, sizeof d);
                if (at + sizeof d + d.d_namlen > used)
                    break;
                char name[256], sub[512];
                memcpy(name, buf + at + sizeof d, d.d_namlen);
                name[d.d_namlen] = 0;
                at += sizeof d + d.d_namlen;
                if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
                    continue;
                snprintf(sub, sizeof sub, "%s/%s", path, name);
                wipe(sub);
            }
        }
        (void)__wasi_fd_close(dir);
    }
    (void)__wasi_path_remove_directory(P, path);
}

static void file(const char *path, const char *text) {
    __wasi_fd_t fd;
    if (__wasi_path_open(P, 0, path, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC, __WASI_RIGHTS_FD_WRITE, 0, 0,
                         &fd) != 0)
        return;
    const __wasi_ciovec_t iov = {(const uint8_t *)text, strlen(text)};
    __wasi_size_t n;
    (void)__wasi_fd_write(fd, &iov, 1, &n);
    (void)__wasi_fd_close(fd);
}

/* The fixtures, made afresh: `tree` is wiped first. */
static void fixtures(void) {
    wipe("tree");
    (void)__wasi_path_create_directory(P, "tree");
    file("tree/f", "data");
    file("tree/f2", "other");
    (void)__wasi_path_create_directory(P, "tree/d");
    (void)__wasi_path_create_directory(P, "tree/d2");
    (void)__wasi_path_create_directory(P, "tree/full");
    file("tree/full/x", "x");
    (void)__wasi_path_symlink("f", P, "tree/lf");
    (void)__wasi_path_symlink("d", P, "tree/ld");
    (void)__wasi_path_symlink("lf", P, "tree/chain");
    (void)__wasi_path_symlink("nowhere", P, "tree/dangling");
    (void)__wasi_path_symlink("loop", P, "tree/loop");
    (void)__wasi_path_symlink("loop2b", P, "tree/loop2a");
    (void)__wasi_path_symlink("loop2a", P, "tree/loop2b");
    (void)__wasi_path_symlink("../../outside", P, "tree/esc");
    (void)__wasi_path_symlink("f/", P, "tree/lfslash");
}

/* The working directory: the fixtures' `tree`, opened anew after each
 * reset (a reset replaces it). */
static __wasi_fd_t T = (__wasi_fd_t)-1;

static void reopen(void) {
    if (T != (__wasi_fd_t)-1)
        (void)__wasi_fd_close(T);
    if (__wasi_path_open(P, 0, "tree", __WASI_OFLAGS_DIRECTORY, 0, 0, 0, &T) != 0)
        T = (__wasi_fd_t)-1;
}

/* Puts the fixtures back after `e`, the outcome of a call that changes
 * them when it succeeds. */
static void changed(__wasi_errno_t e) {
    if (e == 0) {
        fixtures();
        reopen();
    }
}

static void stat_call(const char *label, __wasi_lookupflags_t lookup, const char *path) {
    __wasi_filestat_t st;
    __wasi_errno_t e = __wasi_path_filestat_get(T, lookup, path, &st);
    if (e == 0)
        say("%s -> type %u size %llu", label, st.filetype,
            st.filetype == __WASI_FILETYPE_DIRECTORY ? 0ull : (unsigned long long)st.size);
    else
        say("%s -> %s", label, ename(e));
}

static void open_call(const char *label, __wasi_lookupflags_t lookup, const char *path, __wasi_oflags_t oflags,
                      __wasi_rights_t rights) {
    __wasi_fd_t fd;
    __wasi_errno_t e = __wasi_path_open(T, lookup, path, oflags, rights, 0, 0, &fd);
    if (e == 0) {
        __wasi_fdstat_t st;
        __wasi_errno_t se = __wasi_fd_fdstat_get(fd, &st);
        say("%s -> opened, type %u", label, se == 0 ? st.fs_filetype : 255);
        (void)__wasi_fd_close(fd);
    } else {
        say("%s -> %s", label, ename(e));
    }
    if (oflags & (__WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC))
        changed(e);
}

static void readlink_call(const char *label, const char *path) {
    char buf[64];
    __wasi_size_t n = 0;
    __wasi_errno_t e = __wasi_path_readlink(T, path, (uint8_t *)buf, sizeof buf - 1, &n);
    if (e == 0) {
        buf[n] = 0;
        say("%s -> \"%s\"", label, buf);
    } else {
        say("%s -> %s", label, ename(e));
    }
}

int main(int argc, char **argv) {
    P = preopen(argv[1]);
    fixtures();
    say("setup done");
    if (setup_only(argc, argv))
        return 0;
    reopen();

    const char *names[] = {
        "f",        "f/",         "f/.",     "f/..",    "d",         "d/",      "d/.",     "d/..",
        "lf",       "lf/",        "ld",      "ld/",     "chain",     "chain/",  "lfslash", "lfslash/",
        "dangling", "dangling/",  "loop",    "loop/",   "loop2a",    "esc",     "esc/",    "missing",
        "missing/", "missing/x",  "f/x",     "ld/x",    "lf/x",      "",        ".",       "./",
        "..",       "../tree/f",  "/f",      "full",    "d/../f",    "d//",     "ld/../f", "ld/./",
    };
    char label[160];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *n = names[i];
#define L(fmt) (snprintf(label, sizeof label, fmt, n), label)
        say("-- \"%s\"", n);
        stat_call(L("path_filestat_get(T, 0, \"%s\")"), 0, n);
        stat_call(L("path_filestat_get(T, FOLLOW, \"%s\")"), 1, n);
        open_call(L("path_open(T, 0, \"%s\", 0, READ)"), 0, n, 0, __WASI_RIGHTS_FD_READ);
        open_call(L("path_open(T, FOLLOW, \"%s\", 0, READ)"), 1, n, 0, __WASI_RIGHTS_FD_READ);
        open_call(L("path_open(T, FOLLOW, \"%s\", DIRECTORY, READ)"), 1, n, __WASI_OFLAGS_DIRECTORY,
                  __WASI_RIGHTS_FD_READ);
        open_call(L("path_open(T, 0, \"%s\", 0, READ|WRITE)"), 0, n, 0, RW);
        open_call(L("path_open(T, 0, \"%s\", CREAT, READ|WRITE)"), 0, n, __WASI_OFLAGS_CREAT, RW);
        open_call(L("path_open(T, FOLLOW, \"%s\", CREAT, READ|WRITE)"), 1, n, __WASI_OFLAGS_CREAT, RW);
        open_call(L("path_open(T, FOLLOW, \"%s\", CREAT|EXCL, READ|WRITE)"), 1, n,
                  __WASI_OFLAGS_CREAT | __WASI_OFLAGS_EXCL, RW);
        open_call(L("path_open(T, FOLLOW, \"%s\", TRUNC, WRITE)"), 1, n, __WASI_OFLAGS_TRUNC,
                  __WASI_RIGHTS_FD_WRITE);
        readlink_call(L("path_readlink(T, \"%s\")"), n);
        __wasi_errno_t e;
        CALL(L("path_filestat_set_times(T, 0, \"%s\", MTIM_NOW)"),
             e = __wasi_path_filestat_set_times(T, 0, n, 0, 0, __WASI_FSTFLAGS_MTIM_NOW));
        CALL(L("path_filestat_set_times(T, FOLLOW, \"%s\", MTIM_NOW)"),
             e = __wasi_path_filestat_set_times(T, 1, n, 0, 0, __WASI_FSTFLAGS_MTIM_NOW));
        CALL(L("path_create_directory(T, \"%s\")"), e = __wasi_path_create_directory(T, n));
        changed(e);
        CALL(L("path_remove_directory(T, \"%s\")"), e = __wasi_path_remove_directory(T, n));
        changed(e);
        CALL(L("path_unlink_file(T, \"%s\")"), e = __wasi_path_unlink_file(T, n));
        changed(e);
        CALL(L("path_rename(T, \"%s\", T, \"moved\")"), e = __wasi_path_rename(T, n, T, "moved"));
        changed(e);
        CALL(L("path_rename(T, \"f2\", T, \"%s\")"), e = __wasi_path_rename(T, "f2", T, n));
        changed(e);
        CALL(L("path_rename(T, \"d2\", T, \"%s\")"), e = __wasi_path_rename(T, "d2", T, n));
        changed(e);
        CALL(L("path_link(T, 0, \"%s\", T, \"linked\")"), e = __wasi_path_link(T, 0, n, T, "linked"));
        changed(e);
        CALL(L("path_link(T, FOLLOW, \"%s\", T, \"linked\")"), e = __wasi_path_link(T, 1, n, T, "linked"));
        changed(e);
        CALL(L("path_link(T, 0, \"f\", T, \"%s\")"), e = __wasi_path_link(T, 0, "f", T, n));
        changed(e);
        CALL(L("path_symlink(\"f\", T, \"%s\")"), e = __wasi_path_symlink("f", T, n));
        changed(e);
        CALL(L("path_symlink(\"%s\", T, \"new\")"), e = __wasi_path_symlink(n, T, "new"));
        changed(e);
#undef L
    }
    /* Symlink targets that could only lead out. */
    CALL("path_symlink(\"/etc\", T, \"abs\")", __wasi_path_symlink("/etc", T, "abs"));
    CALL("path_symlink(\"../..\", T, \"up\")", __wasi_path_symlink("../..", T, "up"));
    readlink_call("path_readlink(T, \"up\")", "up");
    stat_call("path_filestat_get(T, FOLLOW, \"up\")", 1, "up");
    /* Names longer than a file system allows. */
    char longname[300];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    stat_call("path_filestat_get(T, 0, 299 bytes)", 0, longname);
    CALL("path_create_directory(T, 299 bytes)", __wasi_path_create_directory(T, longname));
    /* A path that is not UTF-8. */
    stat_call("path_filestat_get(T, 0, \"\\xff\")", 0, "\xff");
    CALL("path_create_directory(T, \"\\xff\")", __wasi_path_create_directory(T, "\xff"));
    return 0;
}

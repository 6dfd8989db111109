/* Shared helpers of the conformance programs: each prints one line per
 * preview-1 call (the call, its arguments in short, and the errno name or
 * the result), so that a diff against `wasmtime run` names the call.
 *
 * Output goes through __wasi_fd_write on OUT (not libc's stdio), so a
 * program can move fd 1 around without losing its report. Only values
 * that do not depend on the host are printed: inode numbers and times as
 * comparisons, never as numbers. */
#pragma once

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <wasi/api.h>

/* Not every program uses every helper. */
#define HELPER static __attribute__((unused))

/* Where the report goes. */
HELPER __wasi_fd_t OUT = 1;

/* Prints one line of the report. */
__attribute__((format(printf, 1, 2))) HELPER void say(const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if (n > (int)sizeof buf - 2)
        n = sizeof buf - 2;
    buf[n++] = '\n';
    const __wasi_ciovec_t iov = {(const uint8_t *)buf, (size_t)n};
    __wasi_size_t written;
    (void)__wasi_fd_write(OUT, &iov, 1, &written);
}

/* WASI's errno names, by number. */
static const char *const ERRNO_NAMES[] = {
    "ok", "E2BIG", "EACCES", "EADDRINUSE", "EADDRNOTAVAIL", "EAFNOSUPPORT",
    "EAGAIN", "EALREADY", "EBADF", "EBADMSG", "EBUSY", "ECANCELED", "ECHILD",
    "ECONNABORTED", "ECONNREFUSED", "ECONNRESET", "EDEADLK", "EDESTADDRREQ",
    "EDOM", "EDQUOT", "EEXIST", "EFAULT", "EFBIG", "EHOSTUNREACH", "EIDRM",
    "EILSEQ", "EINPROGRESS", "EINTR", "EINVAL", "EIO", "EISCONN", "EISDIR",
    "ELOOP", "EMFILE", "EMLINK", "EMSGSIZE", "EMULTIHOP", "ENAMETOOLONG",
    "ENETDOWN", "ENETRESET", "ENETUNREACH", "ENFILE", "ENOBUFS", "ENODEV",
    "ENOENT", "ENOEXEC", "ENOLCK", "ENOLINK", "ENOMEM", "ENOMSG",
    "ENOPROTOOPT", "ENOSPC", "ENOSYS", "ENOTCONN", "ENOTDIR", "ENOTEMPTY",
    "ENOTRECOVERABLE", "ENOTSOCK", "ENOTSUP", "ENOTTY", "ENXIO", "EOVERFLOW",
    "EOWNERDEAD", "EPERM", "EPIPE", "EPROTO", "EPROTONOSUPPORT", "EPROTOTYPE",
    "ERANGE", "EROFS", "ESPIPE", "ESRCH", "ESTALE", "ETIMEDOUT", "ETXTBSY",
    "EXDEV", "ENOTCAPABLE",
};

/* The name of errno `e`. */
static const char *ename(__wasi_errno_t e) {
    static char other[16];
    if (e < sizeof ERRNO_NAMES / sizeof ERRNO_NAMES[0])
        return ERRNO_NAMES[e];
    snprintf(other, sizeof other, "errno %u", e);
    return other;
}

/* `what -> errno` for a call whose only result is its errno. */
#define CALL(what, expr) say("%s -> %s", what, ename(expr))

/* The preopened directory named `name`; the program stops if there is
 * none, since nothing else it prints would mean anything. */
HELPER __wasi_fd_t preopen(const char *name) {
    for (__wasi_fd_t fd = 3; fd < 64; fd++) {
        __wasi_prestat_t pre;
        if (__wasi_fd_prestat_get(fd, &pre) != 0)
            continue;
        char buf[256];
        size_t len = pre.u.dir.pr_name_len;
        if (len >= sizeof buf || __wasi_fd_prestat_dir_name(fd, (uint8_t *)buf, len) != 0)
            continue;
        buf[len] = 0;
        if (strcmp(buf, name) == 0)
            return fd;
    }
    say("no preopen named %s", name);
    __wasi_proc_exit(2);
}

/* Opens `path` in `dir` with `oflags` and `rights` (inheriting the same);
 * prints the call as `label` and the descriptor or errno; returns the
 * descriptor or -1. */
HELPER int open_at(const char *label, __wasi_fd_t dir, __wasi_lookupflags_t lookup,
                   const char *path, __wasi_oflags_t oflags, __wasi_rights_t base,
                   __wasi_rights_t inheriting, __wasi_fdflags_t fdflags) {
    __wasi_fd_t fd;
    __wasi_errno_t e = __wasi_path_open(dir, lookup, path, oflags, base, inheriting, fdflags, &fd);
    if (e == 0) {
        say("%s -> fd %u", label, fd);
        return (int)fd;
    }
    say("%s -> %s", label, ename(e));
    return -1;
}

/* Closes `fd` if it is one, quietly: cleanup, not a case. */
HELPER void quiet_close(int fd) {
    if (fd >= 0)
        (void)__wasi_fd_close((__wasi_fd_t)fd);
}

/* Writes `text` to `fd`; prints the call as `label` and the count or errno. */
HELPER void write_text(const char *label, __wasi_fd_t fd, const char *text) {
    const __wasi_ciovec_t iov = {(const uint8_t *)text, strlen(text)};
    __wasi_size_t n = 0;
    __wasi_errno_t e = __wasi_fd_write(fd, &iov, 1, &n);
    if (e == 0)
        say("%s -> %lu bytes", label, (unsigned long)n);
    else
        say("%s -> %s", label, ename(e));
}

/* Reads up to `cap - 1` bytes from `fd` (at `offset` unless it is -1);
 * prints the call as `label` and what was read or the errno. */
HELPER void read_text(const char *label, __wasi_fd_t fd, int64_t offset, size_t cap) {
    char buf[256];
    if (cap > sizeof buf)
        cap = sizeof buf;
    const __wasi_iovec_t iov = {(uint8_t *)buf, cap - 1};
    __wasi_size_t n = 0;
    __wasi_errno_t e = offset < 0 ? __wasi_fd_read(fd, &iov, 1, &n)
                                  : __wasi_fd_pread(fd, &iov, 1, (uint64_t)offset, &n);
    if (e != 0) {
        say("%s -> %s", label, ename(e));
        return;
    }
    /* Bytes as text, anything unprintable (holes are zeros) escaped. */
    char shown[4 * sizeof buf + 1];
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            shown[at++] = (char)c;
        else
            at += (size_t)snprintf(shown + at, 5, "\\x%02x", c);
    }
    shown[at] = 0;
    say("%s -> %lu bytes \"%s\"", label, (unsigned long)n, shown);
}

/* The whole contents of `path` in `dir`, for checking what writes did;
 * prints them as `label`. */
HELPER void show_file(const char *label, __wasi_fd_t dir, const char *path) {
    __wasi_fd_t fd;
    __wasi_errno_t e = __wasi_path_open(dir, 0, path, 0, __WASI_RIGHTS_FD_READ, 0, 0, &fd);
    if (e != 0) {
        say("%s -> %s", label, ename(e));
        return;
    }
    read_text(label, fd, 0, 256);
    (void)__wasi_fd_close(fd);
}

/* Creates `path` in `dir` holding `text` (for fixtures); prints the
 * outcome as `label`. */
HELPER void make_file(const char *label, __wasi_fd_t dir, const char *path, const char *text) {
    __wasi_fd_t fd;
    __wasi_errno_t e = __wasi_path_open(dir, 0, path, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC,
                                        __WASI_RIGHTS_FD_WRITE, 0, 0, &fd);
    if (e != 0) {
        say("%s -> %s", label, ename(e));
        return;
    }
    const __wasi_ciovec_t iov = {(const uint8_t *)text, strlen(text)};
    __wasi_size_t n;
    e = __wasi_fd_write(fd, &iov, 1, &n);
    say("%s -> %s", label, ename(e));
    (void)__wasi_fd_close(fd);
}

/* The rights a preopen reports, named by what a reader needs to compare. */
static const char *rights_name(__wasi_rights_t r) {
    static char buf[64];
    snprintf(buf, sizeof buf, "%#llx", (unsigned long long)r);
    return buf;
}

/* Prints `fd_fdstat_get(fd)` as `label`. */
HELPER void show_fdstat(const char *label, __wasi_fd_t fd) {
    __wasi_fdstat_t st;
    __wasi_errno_t e = __wasi_fd_fdstat_get(fd, &st);
    if (e != 0) {
        say("%s -> %s", label, ename(e));
        return;
    }
    char base[32];
    snprintf(base, sizeof base, "%s", rights_name(st.fs_rights_base));
    say("%s -> type %u flags %#x base %s inheriting %s", label, st.fs_filetype, st.fs_flags, base,
        rights_name(st.fs_rights_inheriting));
}

/* The setup step only: with `--setup` a program creates its fixtures and
 * stops, so a read-only copy of them can be made. */
HELPER int setup_only(int argc, char **argv) {
    return argc > 2 && strcmp(argv[2], "--setup") == 0;
}

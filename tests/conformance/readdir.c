/* fd_readdir: whole listings, listings read a few records per call by
 * cookie, buffers too small for one record, cookies past the end, and
 * descriptors that are not directories. Names are printed sorted (hosts
 * list in different orders); cookies, types and inode numbers are checked
 * against each other and against path_filestat_get. argv[1]: the preopen
 * to work in. */
#include "conf.h"

#include <stdlib.h>

#define MAX_ENTRIES 64

struct entry {
    uint64_t next;
    uint64_t ino;
    uint8_t type;
    char name[32];
};

/* Parses the whole records in `buf[..used]` into `out`; returns how many. */
static int parse(const uint8_t *buf, size_t used, struct entry *out, int room) {
    int n = 0;
    size_t at = 0;
    while (at + sizeof(__wasi_dirent_t) <= used && n < room) {
        __wasi_dirent_t d;
        memcpy(&d, buf + at, sizeof d);
        if (at + sizeof d + d.d_namlen > used)
            break;
        out[n].next = d.d_next;
        out[n].ino = d.d_ino;
        out[n].type = d.d_type;
        size_t len = d.d_namlen < sizeof out[n].name - 1 ? d.d_namlen : sizeof out[n].name - 1;
        memcpy(out[n].name, buf + at + sizeof d, len);
        out[n].name[len] = 0;
        n++;
        at += sizeof d + d.d_namlen;
    }
    return n;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

/* Prints a listing: its length, whether the cookies count up from 1 in
 * order, `.` and `..` first, then every name sorted with its type and
 * whether its inode number is path_filestat_get's. */
static void show(const char *label, __wasi_fd_t dir, struct entry *e, int n) {
    int cookies_in_order = 1;
    for (int i = 0; i < n; i++)
        if (e[i].next != (uint64_t)i + 1)
            cookies_in_order = 0;
    int dots_first = n >= 2 && strcmp(e[0].name, ".") == 0 && strcmp(e[1].name, "..") == 0;
    say("%s -> %d entries, cookies 1..%d in order: %s, . and .. first: %s", label, n, n,
        cookies_in_order ? "yes" : "no", dots_first ? "yes" : "no");
    if (dots_first) {
        __wasi_filestat_t st;
        __wasi_errno_t err = __wasi_fd_filestat_get(dir, &st);
        say("  . type %u, ino nonzero: %s, same as fd_filestat_get: %s", e[0].type,
            e[0].ino ? "yes" : "no", err == 0 && st.ino == e[0].ino ? "yes" : "no");
        say("  .. type %u, ino nonzero: %s", e[1].type, e[1].ino ? "yes" : "no");
    }
    int skip = dots_first ? 2 : 0;
    qsort(e + skip, (size_t)(n - skip), sizeof *e, by_name);
    for (int i = skip; i < n; i++) {
        __wasi_filestat_t st;
        __wasi_errno_t err = __wasi_path_filestat_get(dir, 0, e[i].name, &st);
        say("  %s type %u, ino as path_filestat_get: %s", e[i].name, e[i].type,
            err == 0 && st.ino == e[i].ino ? "yes" : ename(err ? err : __WASI_ERRNO_NOTCAPABLE));
    }
}

/* Reads the whole listing `buf_len` bytes at a time, from cookie to cookie;
 * prints the number of calls and the listing. */
static void list_by(const char *label, __wasi_fd_t dir, size_t buf_len) {
    static uint8_t buf[8192];
    struct entry all[MAX_ENTRIES];
    int n = 0, calls = 0;
    uint64_t cookie = 0;
    for (;;) {
        __wasi_size_t used = 0;
        __wasi_errno_t e = __wasi_fd_readdir(dir, buf, buf_len, cookie, &used);
        calls++;
        if (e != 0) {
            say("%s -> %s", label, ename(e));
            return;
        }
        int got = parse(buf, used, all + n, MAX_ENTRIES - n);
        n += got;
        if (used < buf_len || calls > 200)
            break;
        if (got == 0) {
            say("%s -> no whole record in %zu bytes", label, buf_len);
            return;
        }
        cookie = all[n - 1].next;
    }
    char full[128];
    snprintf(full, sizeof full, "%s in %d calls", label, calls);
    show(full, dir, all, n);
}

int main(int argc, char **argv) {
    __wasi_fd_t P = preopen(argv[1]);
    CALL("setup path_create_directory(P, \"rd\")", __wasi_path_create_directory(P, "rd"));
    CALL("setup path_create_directory(P, \"rd/sub\")", __wasi_path_create_directory(P, "rd/sub"));
    CALL("setup path_create_directory(P, \"empty\")", __wasi_path_create_directory(P, "empty"));
    CALL("setup path_symlink(\"e00\", P, \"rd/sln\")", __wasi_path_symlink("e00", P, "rd/sln"));
    CALL("setup path_symlink(\"nowhere\", P, \"rd/dgl\")", __wasi_path_symlink("nowhere", P, "rd/dgl"));
    for (int i = 0; i < 20; i++) {
        char path[16];
        snprintf(path, sizeof path, "rd/e%02d", i);
        make_file("setup file", P, path, "x");
    }
    if (setup_only(argc, argv))
        return 0;

    int rd = open_at("path_open(P, \"rd\", DIRECTORY, READDIR)", P, 0, "rd", __WASI_OFLAGS_DIRECTORY,
                     __WASI_RIGHTS_FD_READDIR, 0, 0);
    int empty = open_at("path_open(P, \"empty\", DIRECTORY, READDIR)", P, 0, "empty",
                        __WASI_OFLAGS_DIRECTORY, __WASI_RIGHTS_FD_READDIR, 0, 0);
    if (rd < 0 || empty < 0)
        return 1;
    __wasi_fd_t D = (__wasi_fd_t)rd;
    list_by("fd_readdir(rd, 4096)", D, 4096);
    list_by("fd_readdir(rd, 64)", D, 64);
    list_by("fd_readdir(rd, 27)", D, 27);
    list_by("fd_readdir(empty, 4096)", (__wasi_fd_t)empty, 4096);
    list_by("fd_readdir(empty, 24)", (__wasi_fd_t)empty, 24);

    /* One call each, printing what came back. */
    uint8_t buf[256];
    const struct {
        size_t len;
        uint64_t cookie;
    } calls[] = {{0, 0}, {1, 0}, {10, 0}, {24, 0}, {25, 0}, {26, 0}, {256, 2}, {256, 23},
                 {256, 24}, {256, 25}, {256, 1000}, {256, ~0ull}, {30, 1}};
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        memset(buf, 0xee, sizeof buf);
        __wasi_size_t used = 0;
        __wasi_errno_t e = __wasi_fd_readdir(D, buf, calls[i].len, calls[i].cookie, &used);
        char label[96];
        snprintf(label, sizeof label, "fd_readdir(rd, %zu bytes, cookie %llu)", calls[i].len,
                 (unsigned long long)calls[i].cookie);
        if (e != 0) {
            say("%s -> %s", label, ename(e));
            continue;
        }
        struct entry first;
        int whole = parse(buf, used, &first, 1);
        __wasi_dirent_t head;
        memset(&head, 0, sizeof head);
        memcpy(&head, buf, used < sizeof head ? used : sizeof head);
        say("%s -> %lu bytes, first cookie %llu namlen %u, whole: %s, untouched after: %s", label,
            (unsigned long)used, used >= 8 ? (unsigned long long)head.d_next : 0ull,
            used >= 20 ? head.d_namlen : 0u, whole ? "yes" : "no",
            used < sizeof buf && buf[used] == 0xee ? "yes" : "no");
    }
    CALL("path_unlink_file(P, \"rd/e05\")", __wasi_path_unlink_file(P, "rd/e05"));
    list_by("fd_readdir(rd, 4096) after an unlink", D, 4096);
    make_file("path_open(P, \"rd/e05\", CREAT)", P, "rd/e05", "x");

    /* Not directories. */
    int f = open_at("path_open(P, \"rd/e00\", 0, READ|READDIR)", P, 0, "rd/e00", 0,
                    __WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_READDIR, 0, 0);
    __wasi_size_t used;
    if (f >= 0)
        CALL("fd_readdir(file)", __wasi_fd_readdir((__wasi_fd_t)f, buf, sizeof buf, 0, &used));
    CALL("fd_readdir(0)", __wasi_fd_readdir(0, buf, sizeof buf, 0, &used));
    CALL("fd_readdir(1)", __wasi_fd_readdir(1, buf, sizeof buf, 0, &used));
    CALL("fd_readdir(99)", __wasi_fd_readdir(99, buf, sizeof buf, 0, &used));
    int nr = open_at("path_open(P, \"rd\", DIRECTORY, 0 rights)", P, 0, "rd", __WASI_OFLAGS_DIRECTORY, 0, 0, 0);
    if (nr >= 0) {
        __wasi_errno_t e = __wasi_fd_readdir((__wasi_fd_t)nr, buf, sizeof buf, 0, &used);
        say("fd_readdir(rd without READDIR) -> %s", e ? ename(e) : "ok");
    }
    list_by("fd_readdir(P, 4096)", P, 4096);
    quiet_close(f);
    quiet_close(nr);
    quiet_close(rd);
    quiet_close(empty);
    return 0;
}

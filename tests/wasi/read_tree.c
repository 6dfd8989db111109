/* Walks the directory named by argv[1] (default `/`) as an ordinary C
 * program would,
 * printing every entry (sorted) with its type, size and a checksum of its
 * contents, and symlink targets. With a second argument `--try-write`, also
 * tries to change the tree and prints what each attempt got.
 * tests/wasi_fs.rs runs it in wisp (--files) and compares with wasmtime. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* FNV-1a over the file's contents, read in odd-sized chunks. */
static unsigned long long checksum(const char *path, long long *size) {
    unsigned long long h = 1469598103934665603ULL;
    FILE *f = fopen(path, "rb");
    *size = 0;
    if (!f) return 0;
    unsigned char buf[777];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * 1099511628211ULL;
        *size += (long long)n;
    }
    fclose(f);
    return h;
}

static void walk(const char *dir, const char *rel) {
    DIR *d = opendir(dir);
    if (!d) {
        printf("%s: opendir: %s\n", rel, strerror(errno));
        return;
    }
    char *names[512];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 512)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    for (int i = 0; i < n; i++) {
        char path[1024], sub[1024];
        size_t len = strlen(dir);
        snprintf(path, sizeof path, "%s%s%s", dir, len && dir[len - 1] == '/' ? "" : "/", names[i]);
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", names[i]);
        struct stat st;
        if (lstat(path, &st) < 0) {
            printf("%s: lstat: %s\n", sub, strerror(errno));
        } else if (S_ISLNK(st.st_mode)) {
            char target[256] = {0};
            readlink(path, target, sizeof target - 1);
            long long size;
            unsigned long long h = checksum(path, &size);
            printf("%s -> %s (reads %lld bytes, %016llx)\n", sub, target, size, h);
        } else if (S_ISDIR(st.st_mode)) {
            printf("%s/\n", sub);
            walk(path, sub);
        } else {
            long long size;
            unsigned long long h = checksum(path, &size);
            printf("%s %lld bytes %016llx (stat size %lld)\n", sub, size, h, (long long)st.st_size);
        }
        free(names[i]);
    }
}

static void attempt(const char *what, int rc) {
    printf("%-24s %s\n", what, rc < 0 ? strerror(errno) : "ok");
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/";
    walk(dir, "");
    if (argc > 2 && !strcmp(argv[2], "--try-write")) {
        char p[512];
        snprintf(p, sizeof p, "%s/new-file", argv[1]);
        attempt("create", open(p, O_CREAT | O_WRONLY, 0644));
        snprintf(p, sizeof p, "%s/new-dir", argv[1]);
        attempt("mkdir", mkdir(p, 0755));
        char first[512] = {0};
        DIR *d = opendir(argv[1]);
        struct dirent *e;
        while (d && (e = readdir(d)))
            if (e->d_type == DT_REG) {
                snprintf(first, sizeof first, "%s/%s", argv[1], e->d_name);
                break;
            }
        if (d) closedir(d);
        attempt("open for writing", open(first, O_WRONLY));
        attempt("unlink", unlink(first));
        attempt("truncate", truncate(first, 0));
        snprintf(p, sizeof p, "%s/renamed", argv[1]);
        attempt("rename", rename(first, p));
        attempt("read still works", open(first, O_RDONLY));
    }
    return 0;
}

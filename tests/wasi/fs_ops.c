/* Exercises the WASI filesystem through wasi-libc as an ordinary C program
 * would, in the writable directory named by argv[1] (which must start
 * empty), printing one line per check: what happened, or the errno text.
 * tests/wasi_fs.rs runs it in wisp and compares with `wasmtime run`. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char base[256];

static const char *at(const char *rel) {
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", base, rel);
    return buf[i];
}

static void check(const char *what, int rc) {
    printf("%-28s %s\n", what, rc < 0 ? strerror(errno) : "ok");
}

static int cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names in a directory, skipping . and .. (hosts order them
 * differently). */
static void list(const char *what, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        printf("%-28s %s\n", what, strerror(errno));
        return;
    }
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    printf("%-28s %d:", what, n);
    for (int i = 0; i < n; i++) {
        printf(" %s", names[i]);
        free(names[i]);
    }
    printf("\n");
}

static void show_file(const char *what, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("%-28s %s\n", what, strerror(errno));
        return;
    }
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    for (size_t i = 0; i < n; i++)
        if (buf[i] == 0) buf[i] = '0';
    printf("%-28s [%s]\n", what, buf);
}

static void show_stat(const char *what, const char *path, int follow) {
    struct stat st;
    int rc = follow ? stat(path, &st) : lstat(path, &st);
    if (rc < 0) {
        printf("%-28s %s\n", what, strerror(errno));
        return;
    }
    const char *type = S_ISREG(st.st_mode)   ? "file"
                       : S_ISDIR(st.st_mode) ? "dir"
                       : S_ISLNK(st.st_mode) ? "symlink"
                                             : "other";
    /* A directory's size and link count are the host filesystem's. */
    if (S_ISDIR(st.st_mode))
        printf("%-28s %s\n", what, type);
    else
        printf("%-28s %s size=%lld nlink=%llu\n", what, type, (long long)st.st_size,
               (unsigned long long)st.st_nlink);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fs_ops DIR\n");
        return 2;
    }
    snprintf(base, sizeof base, "%s", argv[1]);

    /* Files: create, write, read, seek, pread/pwrite, append, truncate. */
    int fd = open(at("a.txt"), O_CREAT | O_RDWR, 0644);
    check("open create", fd);
    check("write", (int)write(fd, "hello world", 11) - 11 == 0 ? 0 : -1);
    printf("%-28s %lld\n", "lseek cur", (long long)lseek(fd, 0, SEEK_CUR));
    printf("%-28s %lld\n", "lseek end-5", (long long)lseek(fd, -5, SEEK_END));
    char buf[64] = {0};
    printf("%-28s %zd [%s]\n", "read", read(fd, buf, sizeof buf - 1), buf);
    printf("%-28s %zd\n", "pwrite", pwrite(fd, "W", 1, 6));
    memset(buf, 0, sizeof buf);
    printf("%-28s %zd [%s]\n", "pread", pread(fd, buf, 5, 6), buf);
    printf("%-28s %zd\n", "pwrite past end", pwrite(fd, "!", 1, 13));
    check("close", close(fd));
    show_file("contents with hole", at("a.txt"));
    show_stat("stat a.txt", at("a.txt"), 1);
    fd = open(at("a.txt"), O_WRONLY | O_APPEND);
    check("open append", fd);
    lseek(fd, 0, SEEK_SET);
    check("append write", (int)write(fd, "+", 1) - 1);
    close(fd);
    show_file("after append", at("a.txt"));
    check("truncate 5", truncate(at("a.txt"), 5));
    show_file("after truncate", at("a.txt"));
    fd = open(at("a.txt"), O_WRONLY | O_TRUNC);
    check("open trunc", fd);
    close(fd);
    show_stat("stat after O_TRUNC", at("a.txt"), 1);
    check("open excl existing", open(at("a.txt"), O_CREAT | O_EXCL | O_WRONLY, 0644));
    check("open missing", open(at("missing"), O_RDONLY));
    check("open file as dir", open(at("a.txt"), O_RDONLY | O_DIRECTORY));
    check("open missing/x", open(at("missing/x"), O_RDONLY));
    check("open a.txt/x", open(at("a.txt/x"), O_RDONLY));
    fd = open(at("ro"), O_CREAT | O_WRONLY, 0644);
    close(fd);
    fd = open(at("ro"), O_RDONLY);
    check("write to read-only fd", (int)write(fd, "x", 1));
    close(fd);

    /* Directories. */
    check("mkdir d", mkdir(at("d"), 0755));
    check("mkdir d again", mkdir(at("d"), 0755));
    check("mkdir x/y", mkdir(at("x/y"), 0755));
    check("open dir for writing", open(at("d"), O_WRONLY));
    fd = open(at("d/f"), O_CREAT | O_WRONLY, 0644);
    close(fd);
    check("rmdir non-empty", rmdir(at("d")));
    check("rmdir a file", rmdir(at("d/f")));
    check("unlink a dir", unlink(at("d")));
    check("unlink missing", unlink(at("nope")));
    for (int i = 0; i < 40; i++) {
        char name[32];
        snprintf(name, sizeof name, "many/%02d-some-longer-name", i);
        if (i == 0) mkdir(at("many"), 0755);
        fd = open(at(name), O_CREAT | O_WRONLY, 0644);
        close(fd);
    }
    list("list many (count)", at("many"));
    list("list base", base);

    /* Renames. */
    check("rename file", rename(at("d/f"), at("g")));
    check("rename dir", rename(at("d"), at("e")));
    check("rename into itself", rename(at("e"), at("e/inner")));
    check("mkdir n", mkdir(at("n"), 0755));
    fd = open(at("n/x"), O_CREAT | O_WRONLY, 0644);
    close(fd);
    check("rename over non-empty", rename(at("e"), at("n")));
    check("rename file over dir", rename(at("g"), at("e")));
    check("rename dir over file", rename(at("e"), at("g")));
    check("rename missing", rename(at("zzz"), at("yyy")));
    list("list after renames", base);

    /* Links. */
    check("link", link(at("g"), at("g2")));
    show_stat("stat g (2 links)", at("g"), 1);
    check("link a dir", link(at("e"), at("e2")));
    check("symlink", symlink("g", at("s")));
    char target[64] = {0};
    printf("%-28s %zd [%s]\n", "readlink", readlink(at("s"), target, sizeof target - 1), target);
    check("readlink a file", (int)readlink(at("g"), target, sizeof target));
    show_stat("lstat s", at("s"), 0);
    show_stat("stat s", at("s"), 1);
    check("symlink exists", symlink("g", at("s")));
    check("symlink absolute", symlink("/etc/passwd", at("abs")));
    check("open absolute symlink", open(at("abs"), O_RDONLY));
    check("symlink up", symlink("../../etc/passwd", at("up")));
    check("open escaping symlink", open(at("up"), O_RDONLY));
    check("symlink loop", symlink("loop", at("loop")));
    check("open symlink loop", open(at("loop"), O_RDONLY));
    check("open .. escape", open(at("../etc/passwd"), O_RDONLY));
    check("unlink symlink", unlink(at("s")));
    show_stat("g after unlink s", at("g"), 1);

    /* Times. */
    struct timespec times[2] = {{1000000000, 0}, {1200000000, 500}};
    check("utimensat", utimensat(AT_FDCWD, at("g"), times, 0));
    struct stat st;
    stat(at("g"), &st);
    printf("%-28s atime=%lld mtime=%lld.%09ld\n", "times", (long long)st.st_atim.tv_sec,
           (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);

    /* stdio through the same calls. */
    check("lseek stdout", (int)lseek(1, 0, SEEK_SET));
    return 0;
}

/* The stdio descriptors under every call that takes a descriptor, then
 * closed, and the numbers they leave free. argv[1]: the preopen to work
 * in. Expects stdin at end of file and stdout, stderr to be pipes or
 * files (not terminals). */
#include "conf.h"

static void filestat(const char *label, __wasi_fd_t fd) {
    __wasi_filestat_t st;
    __wasi_errno_t e = __wasi_fd_filestat_get(fd, &st);
    if (e != 0) {
        say("%s -> %s", label, ename(e));
        return;
    }
    say("%s -> dev %llu ino %llu type %u nlink %llu size %llu times %llu %llu %llu", label,
        (unsigned long long)st.dev, (unsigned long long)st.ino, st.filetype,
        (unsigned long long)st.nlink, (unsigned long long)st.size, (unsigned long long)st.atim,
        (unsigned long long)st.mtim, (unsigned long long)st.ctim);
}

static void all_calls(const char *name, __wasi_fd_t fd) {
    char label[128];
#define L(fmt) (snprintf(label, sizeof label, fmt, name), label)
#define L2(fmt) (snprintf(label, sizeof label, fmt, name, name), label)
    show_fdstat(L("fd_fdstat_get(%s)"), fd);
    filestat(L("fd_filestat_get(%s)"), fd);
    __wasi_filesize_t pos;
    CALL(L("fd_seek(%s, 0, CUR)"), __wasi_fd_seek(fd, 0, __WASI_WHENCE_CUR, &pos));
    CALL(L("fd_seek(%s, 0, SET)"), __wasi_fd_seek(fd, 0, __WASI_WHENCE_SET, &pos));
    CALL(L("fd_tell(%s)"), __wasi_fd_tell(fd, &pos));
    read_text(L("fd_read(%s)"), fd, -1, 8);
    read_text(L("fd_pread(%s, 0)"), fd, 0, 8);
    const __wasi_ciovec_t none = {(const uint8_t *)"", 0};
    __wasi_size_t n;
    CALL(L("fd_write(%s, \"\")"), __wasi_fd_write(fd, &none, 1, &n));
    CALL(L("fd_pwrite(%s, \"\", 0)"), __wasi_fd_pwrite(fd, &none, 1, 0, &n));
    CALL(L("fd_advise(%s, NORMAL)"), __wasi_fd_advise(fd, 0, 0, __WASI_ADVICE_NORMAL));
    CALL(L("fd_allocate(%s, 0, 1)"), __wasi_fd_allocate(fd, 0, 1));
    CALL(L("fd_datasync(%s)"), __wasi_fd_datasync(fd));
    CALL(L("fd_sync(%s)"), __wasi_fd_sync(fd));
    CALL(L("fd_fdstat_set_flags(%s, 0)"), __wasi_fd_fdstat_set_flags(fd, 0));
    CALL(L("fd_fdstat_set_flags(%s, APPEND)"), __wasi_fd_fdstat_set_flags(fd, __WASI_FDFLAGS_APPEND));
    CALL(L("fd_fdstat_set_flags(%s, NONBLOCK)"), __wasi_fd_fdstat_set_flags(fd, __WASI_FDFLAGS_NONBLOCK));
    CALL(L("fd_filestat_set_size(%s, 0)"), __wasi_fd_filestat_set_size(fd, 0));
    CALL(L("fd_filestat_set_times(%s, 0, 0, 0)"), __wasi_fd_filestat_set_times(fd, 0, 0, 0));
    CALL(L("fd_filestat_set_times(%s, MTIM_NOW)"),
         __wasi_fd_filestat_set_times(fd, 0, 0, __WASI_FSTFLAGS_MTIM_NOW));
    uint8_t buf[64];
    __wasi_size_t used;
    CALL(L("fd_readdir(%s)"), __wasi_fd_readdir(fd, buf, sizeof buf, 0, &used));
    __wasi_prestat_t pre;
    CALL(L("fd_prestat_get(%s)"), __wasi_fd_prestat_get(fd, &pre));
    CALL(L("fd_prestat_dir_name(%s)"), __wasi_fd_prestat_dir_name(fd, buf, sizeof buf));
    __wasi_fd_t opened;
    CALL(L("path_open(%s, \"x\")"), __wasi_path_open(fd, 0, "x", 0, __WASI_RIGHTS_FD_READ, 0, 0, &opened));
    CALL(L("path_create_directory(%s, \"x\")"), __wasi_path_create_directory(fd, "x"));
    __wasi_filestat_t st;
    CALL(L("path_filestat_get(%s, \"x\")"), __wasi_path_filestat_get(fd, 0, "x", &st));
    CALL(L("path_filestat_set_times(%s, \"x\")"), __wasi_path_filestat_set_times(fd, 0, "x", 0, 0, 0));
    CALL(L("path_unlink_file(%s, \"x\")"), __wasi_path_unlink_file(fd, "x"));
    CALL(L("path_remove_directory(%s, \"x\")"), __wasi_path_remove_directory(fd, "x"));
    CALL(L("path_symlink(\"t\", %s, \"x\")"), __wasi_path_symlink("t", fd, "x"));
    CALL(L("path_readlink(%s, \"x\")"), __wasi_path_readlink(fd, "x", buf, sizeof buf, &used));
    CALL(L2("path_rename(%s, \"x\", %s, \"y\")"), __wasi_path_rename(fd, "x", fd, "y"));
    CALL(L2("path_link(%s, \"x\", %s, \"y\")"), __wasi_path_link(fd, 0, "x", fd, "y"));
#undef L
#undef L2
}

int main(int argc, char **argv) {
    __wasi_fd_t P = preopen(argv[1]);
    make_file("setup f", P, "f", "data");
    if (setup_only(argc, argv))
        return 0;

    all_calls("0", 0);
    all_calls("1", 1);
    all_calls("2", 2);
    CALL("path_rename(P, \"f\", 1, \"y\")", __wasi_path_rename(P, "f", 1, "y"));
    CALL("path_link(P, \"f\", 1, \"y\")", __wasi_path_link(P, 0, "f", 1, "y"));
    CALL("path_rename(1, \"f\", P, \"y\")", __wasi_path_rename(1, "f", P, "y"));

    /* Closing stdio frees its numbers for new descriptors. */
    CALL("fd_close(0)", __wasi_fd_close(0));
    CALL("fd_close(0)", __wasi_fd_close(0));
    show_fdstat("fd_fdstat_get(0)", 0);
    read_text("fd_read(0)", 0, -1, 8);
    int fd = open_at("path_open(P, \"f\", 0, READ)", P, 0, "f", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    read_text("fd_read(0)", 0, -1, 8);
    CALL("fd_close(2)", __wasi_fd_close(2));
    int fd2 = open_at("path_open(P, \"f\", 0, READ)", P, 0, "f", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    int fd3 = open_at("path_open(P, \"f\", 0, READ)", P, 0, "f", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    quiet_close(fd);
    quiet_close(fd2);
    quiet_close(fd3);
    return 0;
}

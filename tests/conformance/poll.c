/* poll_oneoff with clocks (relative, absolute, each clock id) and with
 * file, stdio and directory descriptors, alone and mixed; every event is
 * printed (userdata, errno, type, nbytes, flags), times never.
 * argv[1]: the preopen to work in. Expects stdin at end of file. */
#include "conf.h"

#define MS 1000000ull

static __wasi_subscription_t clock_sub(uint64_t userdata, __wasi_clockid_t id, uint64_t timeout,
                                       __wasi_subclockflags_t flags) {
    __wasi_subscription_t s;
    memset(&s, 0, sizeof s);
    s.userdata = userdata;
    s.u.tag = __WASI_EVENTTYPE_CLOCK;
    s.u.u.clock.id = id;
    s.u.u.clock.timeout = timeout;
    s.u.u.clock.flags = flags;
    return s;
}

static __wasi_subscription_t fd_sub(uint64_t userdata, __wasi_eventtype_t type, __wasi_fd_t fd) {
    __wasi_subscription_t s;
    memset(&s, 0, sizeof s);
    s.userdata = userdata;
    s.u.tag = type;
    if (type == __WASI_EVENTTYPE_FD_READ)
        s.u.u.fd_read.file_descriptor = fd;
    else
        s.u.u.fd_write.file_descriptor = fd;
    return s;
}

/* Polls `subs` and prints the events. */
static void poll(const char *label, const __wasi_subscription_t *subs, size_t n) {
    __wasi_event_t events[8];
    memset(events, 0xee, sizeof events);
    __wasi_size_t got = 0;
    __wasi_errno_t e = __wasi_poll_oneoff(subs, events, n, &got);
    if (e != 0) {
        say("%s -> %s", label, ename(e));
        return;
    }
    say("%s -> %lu events", label, (unsigned long)got);
    for (__wasi_size_t i = 0; i < got && i < 8; i++)
        say("  event userdata %llu error %s type %u nbytes %llu flags %#x",
            (unsigned long long)events[i].userdata, ename(events[i].error), events[i].type,
            (unsigned long long)events[i].fd_readwrite.nbytes, events[i].fd_readwrite.flags);
}

static uint64_t now(__wasi_clockid_t id) {
    __wasi_timestamp_t t = 0;
    (void)__wasi_clock_time_get(id, 1, &t);
    return t;
}

int main(int argc, char **argv) {
    __wasi_fd_t P = preopen(argv[1]);
    make_file("setup data", P, "data", "0123456789");
    make_file("setup empty", P, "empty", "");
    if (setup_only(argc, argv))
        return 0;

    __wasi_subscription_t s[4];
    __wasi_event_t ev;
    __wasi_size_t got;
    CALL("poll_oneoff(0 subscriptions)", __wasi_poll_oneoff(s, &ev, 0, &got));

    /* Clocks alone. */
    s[0] = clock_sub(1, __WASI_CLOCKID_MONOTONIC, 1 * MS, 0);
    poll("poll_oneoff(monotonic +1ms)", s, 1);
    s[0] = clock_sub(2, __WASI_CLOCKID_REALTIME, 1 * MS, 0);
    poll("poll_oneoff(realtime +1ms)", s, 1);
    s[0] = clock_sub(3, __WASI_CLOCKID_MONOTONIC, 0, 0);
    poll("poll_oneoff(monotonic +0)", s, 1);
    s[0] = clock_sub(4, __WASI_CLOCKID_MONOTONIC, now(__WASI_CLOCKID_MONOTONIC) + 1 * MS,
                     __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME);
    poll("poll_oneoff(monotonic at now+1ms)", s, 1);
    s[0] = clock_sub(5, __WASI_CLOCKID_REALTIME, now(__WASI_CLOCKID_REALTIME) - 1000 * MS,
                     __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME);
    poll("poll_oneoff(realtime at now-1s)", s, 1);
    s[0] = clock_sub(6, __WASI_CLOCKID_MONOTONIC, 0, __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME);
    poll("poll_oneoff(monotonic at 0)", s, 1);
    s[0] = clock_sub(7, __WASI_CLOCKID_PROCESS_CPUTIME_ID, 1 * MS, 0);
    poll("poll_oneoff(process cputime +1ms)", s, 1);
    s[0] = clock_sub(8, __WASI_CLOCKID_THREAD_CPUTIME_ID, 1 * MS, __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME);
    poll("poll_oneoff(thread cputime at 1ms)", s, 1);
    s[0] = clock_sub(9, 7, 1 * MS, 0);
    poll("poll_oneoff(clock id 7 +1ms)", s, 1);
    s[0] = clock_sub(10, __WASI_CLOCKID_MONOTONIC, 1 * MS, 2);
    poll("poll_oneoff(monotonic +1ms, undefined flag 2)", s, 1);
    s[0] = clock_sub(11, __WASI_CLOCKID_MONOTONIC, 1 * MS, 0);
    s[0].u.tag = 3;
    poll("poll_oneoff(undefined event type 3)", s, 1);
    s[0] = clock_sub(12, __WASI_CLOCKID_MONOTONIC, 1 * MS, 0);
    s[1] = clock_sub(13, __WASI_CLOCKID_MONOTONIC, 1000 * MS, 0);
    poll("poll_oneoff(+1ms, +1s)", s, 2);
    s[0] = clock_sub(14, __WASI_CLOCKID_MONOTONIC, 1000 * MS, 0);
    s[1] = clock_sub(15, __WASI_CLOCKID_REALTIME, 2 * MS, 0);
    poll("poll_oneoff(+1s, realtime +2ms)", s, 2);
    s[0] = clock_sub(16, __WASI_CLOCKID_MONOTONIC, 0, 0);
    s[1] = clock_sub(17, __WASI_CLOCKID_MONOTONIC, 0, 0);
    poll("poll_oneoff(+0, +0)", s, 2);
    s[0] = clock_sub(18, __WASI_CLOCKID_MONOTONIC, 1 * MS, 0);
    s[1] = clock_sub(19, __WASI_CLOCKID_PROCESS_CPUTIME_ID, 1 * MS, 0);
    poll("poll_oneoff(+1ms, process cputime)", s, 2);

    /* Descriptors. */
    int data = open_at("path_open(P, \"data\", 0, READ|WRITE)", P, 0, "data", 0,
                       __WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_WRITE, 0, 0);
    int empty = open_at("path_open(P, \"empty\", 0, READ)", P, 0, "empty", 0, __WASI_RIGHTS_FD_READ, 0, 0);
    int dir = open_at("path_open(P, \".\", DIRECTORY, 0)", P, 0, ".", __WASI_OFLAGS_DIRECTORY, 0, 0, 0);
    if (data < 0 || empty < 0 || dir < 0)
        return 1;
    s[0] = fd_sub(20, __WASI_EVENTTYPE_FD_READ, (__wasi_fd_t)data);
    poll("poll_oneoff(read data)", s, 1);
    s[0] = fd_sub(21, __WASI_EVENTTYPE_FD_WRITE, (__wasi_fd_t)data);
    poll("poll_oneoff(write data)", s, 1);
    s[0] = fd_sub(22, __WASI_EVENTTYPE_FD_READ, (__wasi_fd_t)empty);
    poll("poll_oneoff(read empty)", s, 1);
    s[0] = fd_sub(23, __WASI_EVENTTYPE_FD_WRITE, (__wasi_fd_t)empty);
    poll("poll_oneoff(write empty, opened for reading)", s, 1);
    char buf[16];
    __wasi_iovec_t iov = {(uint8_t *)buf, 4};
    __wasi_size_t n;
    CALL("fd_read(data, 4)", __wasi_fd_read((__wasi_fd_t)data, &iov, 1, &n));
    s[0] = fd_sub(24, __WASI_EVENTTYPE_FD_READ, (__wasi_fd_t)data);
    poll("poll_oneoff(read data after 4 bytes)", s, 1);
    __wasi_filesize_t pos;
    CALL("fd_seek(data, 0, END)", __wasi_fd_seek((__wasi_fd_t)data, 0, __WASI_WHENCE_END, &pos));
    poll("poll_oneoff(read data at its end)", s, 1);
    s[0] = fd_sub(25, __WASI_EVENTTYPE_FD_READ, 0);
    poll("poll_oneoff(read 0)", s, 1);
    s[0] = fd_sub(26, __WASI_EVENTTYPE_FD_WRITE, 1);
    s[1] = fd_sub(27, __WASI_EVENTTYPE_FD_WRITE, 2);
    poll("poll_oneoff(write 1, write 2)", s, 2);
    s[0] = fd_sub(28, __WASI_EVENTTYPE_FD_WRITE, 0);
    poll("poll_oneoff(write 0)", s, 1);
    s[0] = fd_sub(29, __WASI_EVENTTYPE_FD_READ, 1);
    poll("poll_oneoff(read 1)", s, 1);
    s[0] = fd_sub(30, __WASI_EVENTTYPE_FD_READ, (__wasi_fd_t)dir);
    poll("poll_oneoff(read dir)", s, 1);
    s[0] = fd_sub(31, __WASI_EVENTTYPE_FD_WRITE, P);
    poll("poll_oneoff(write P)", s, 1);
    s[0] = fd_sub(32, __WASI_EVENTTYPE_FD_READ, 99);
    poll("poll_oneoff(read 99)", s, 1);

    /* Mixed. */
    s[0] = clock_sub(33, __WASI_CLOCKID_MONOTONIC, 1000 * MS, 0);
    s[1] = fd_sub(34, __WASI_EVENTTYPE_FD_READ, (__wasi_fd_t)empty);
    poll("poll_oneoff(+1s, read empty)", s, 2);
    /* Stdout and stderr are ready at once; a clock already due is not
     * (wasmtime yields to it first). Files are left out: whether wasmtime
     * has a file ready at once or a moment later varies. */
    s[0] = fd_sub(35, __WASI_EVENTTYPE_FD_WRITE, 1);
    s[1] = clock_sub(36, __WASI_CLOCKID_MONOTONIC, 0, 0);
    s[2] = fd_sub(37, __WASI_EVENTTYPE_FD_WRITE, 2);
    poll("poll_oneoff(write 1, +0, write 2)", s, 3);
    s[0] = clock_sub(38, __WASI_CLOCKID_MONOTONIC, 1 * MS, 0);
    s[1] = fd_sub(39, __WASI_EVENTTYPE_FD_READ, 99);
    poll("poll_oneoff(+1ms, read 99)", s, 2);
    s[0] = fd_sub(40, __WASI_EVENTTYPE_FD_WRITE, 1);
    s[1] = fd_sub(41, __WASI_EVENTTYPE_FD_READ, (__wasi_fd_t)dir);
    poll("poll_oneoff(write 1, read dir)", s, 2);
    s[0] = clock_sub(42, __WASI_CLOCKID_MONOTONIC, 1000 * MS, 0);
    s[1] = fd_sub(43, __WASI_EVENTTYPE_FD_READ, 0);
    poll("poll_oneoff(+1s, read 0)", s, 2);
    quiet_close(data);
    quiet_close(empty);
    quiet_close(dir);
    return 0;
}

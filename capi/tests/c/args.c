/* Bad input through the C ABI is an error code, never a crash: NULL
 * pointers, unknown flags and event bits, negative timeouts, invalid
 * backends, short structs, closed fds. A free callback passed to a call
 * that fails runs exactly once, before the call returns. Also the errors
 * with a meaning of their own: -EBADF for a watch whose fd was closed while
 * registered, -EDEADLK for a modify from inside a hook, -EOPNOTSUPP for
 * what a backend cannot do, and evnexus_strerror for all of them. */
#define _GNU_SOURCE
#include "check.h"

#include <evnexus.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static atomic_int frees;

static void on_free(void *opaque)
{
    CHECK(opaque == &frees);
    atomic_fetch_add(&frees, 1);
}

static void on_fd(evnexus *ev, uint64_t token, int fd, short revents, void *opaque)
{
    (void)ev, (void)token, (void)fd, (void)revents, (void)opaque;
}

static void on_timer(evnexus *ev, uint64_t token, void *opaque)
{
    (void)ev, (void)token, (void)opaque;
}

static void on_child(evnexus *ev, int pid, int status, void *opaque)
{
    (void)ev, (void)pid, (void)status, (void)opaque;
}

/* Each call fails with `want`, and its free callback has run once. */
#define FAILS_AND_FREES(call, want)                                                                \
    do {                                                                                           \
        int before_ = atomic_load(&frees);                                                         \
        CHECK_EQ((call), (want));                                                                  \
        CHECK_EQ(atomic_load(&frees), before_ + 1);                                                \
    } while (0)

static void bad_arguments(void)
{
    evnexus *ev = NULL;
    CHECK_EQ(evnexus_new(NULL, EVNEXUS_BACKEND_AUTO), -EINVAL);
    CHECK_EQ(evnexus_new(&ev, 99), -EINVAL);
    CHECK_EQ(evnexus_new(&ev, EVNEXUS_BACKEND_HOOKS), -EINVAL); /* hooks need the hooks */
    CHECK(ev == NULL);
    CHECK_EQ(evnexus_new(&ev, EVNEXUS_BACKEND_EPOLL), 0);
    CHECK_EQ(evnexus_backend(ev), EVNEXUS_BACKEND_EPOLL);

    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    uint64_t token = 0;
    void *f = &frees;
    /* NULL engine or callback, unknown flags or event bits, bad fds. */
    FAILS_AND_FREES(evnexus_register_fd(NULL, sv[0], POLLIN, 0, on_fd, f, on_free, &token), -EINVAL);
    FAILS_AND_FREES(evnexus_register_fd(ev, sv[0], POLLIN, 0, NULL, f, on_free, &token), -EINVAL);
    FAILS_AND_FREES(evnexus_register_fd(ev, sv[0], POLLIN, 2, on_fd, f, on_free, &token), -EINVAL);
    FAILS_AND_FREES(evnexus_register_fd(ev, sv[0], (short)0x8000, 0, on_fd, f, on_free, &token),
                    -EINVAL);
    FAILS_AND_FREES(evnexus_register_fd(ev, -1, POLLIN, 0, on_fd, f, on_free, &token), -EBADF);
    FAILS_AND_FREES(evnexus_register_fd(ev, 1000000, POLLIN, 0, on_fd, f, on_free, &token), -EBADF);
    /* Negative deadlines and delays, NULL callbacks. */
    FAILS_AND_FREES(evnexus_timer_after(ev, -1, on_timer, f, on_free, &token), -EINVAL);
    FAILS_AND_FREES(evnexus_timer_at(ev, -5, on_timer, f, on_free, &token), -EINVAL);
    FAILS_AND_FREES(evnexus_timer_after(ev, 1, NULL, f, on_free, &token), -EINVAL);
    FAILS_AND_FREES(evnexus_watch_child(ev, 0, on_child, f, on_free, &token), -EINVAL);
    FAILS_AND_FREES(evnexus_watch_child(ev, -1, on_child, f, on_free, &token), -EINVAL);
    CHECK(token == 0); /* never written by a failed call */
    /* Without a free callback a failure is just the error. */
    CHECK_EQ(evnexus_timer_after(ev, -1, on_timer, NULL, NULL, NULL), -EINVAL);

    /* Timeouts: -1 is none, other negatives are invalid. */
    CHECK_EQ(evnexus_run_once(ev, -2), -EINVAL);
    CHECK_EQ(evnexus_run_once(ev, INT64_MIN), -EINVAL);
    CHECK_EQ(evnexus_run_once(ev, 0), 0);
    CHECK_EQ(evnexus_timer_reset_after(ev, 1, -1), -EINVAL);
    CHECK_EQ(evnexus_timer_reset_at(ev, 1, -1), -EINVAL);
    /* The far future is accepted, and is no timer due. */
    CHECK_EQ(evnexus_timer_after(ev, INT64_MAX, on_timer, NULL, NULL, &token), 0);
    CHECK(evnexus_next_timeout_ns(ev) > (int64_t)3600 * 1000000000);
    CHECK_EQ(evnexus_timer_reset_at(ev, token, INT64_MAX), 0);
    CHECK_EQ(evnexus_deregister(ev, token), 0);

    /* NULL engines everywhere. */
    CHECK_EQ(evnexus_backend(NULL), -EINVAL);
    CHECK_EQ(evnexus_run_once(NULL, 0), -EINVAL);
    CHECK_EQ(evnexus_run(NULL), -EINVAL);
    CHECK_EQ(evnexus_stop(NULL), -EINVAL);
    CHECK_EQ(evnexus_wake(NULL), -EINVAL);
    CHECK_EQ(evnexus_get_fd(NULL), -EINVAL);
    CHECK_EQ(evnexus_next_timeout_ns(NULL), -EINVAL);
    CHECK_EQ(evnexus_deregister(NULL, 1), -EINVAL);
    CHECK_EQ(evnexus_modify_fd(NULL, 1, POLLIN), -EINVAL);
    CHECK_EQ(evnexus_occurred_fd(NULL, 1, 0, POLLIN), -EINVAL);
    CHECK_EQ(evnexus_occurred_timeout(NULL, 1), -EINVAL);
    evnexus_stats s = {.size = sizeof s};
    CHECK_EQ(evnexus_get_stats(NULL, &s), -EINVAL);
    CHECK_EQ(evnexus_get_stats(ev, NULL), -EINVAL);
    s.size = sizeof(size_t); /* too short for even one count */
    CHECK_EQ(evnexus_get_stats(ev, &s), -EINVAL);
    /* An older, shorter struct gets what it has room for, nothing more. */
    struct {
        size_t size;
        uint64_t dispatched, reruns;
        uint64_t guard;
    } older = {.size = offsetof(evnexus_stats, stale_generation), .guard = 0xfeed};
    CHECK_EQ(evnexus_get_stats(ev, (evnexus_stats *)&older), 0);
    CHECK(older.guard == 0xfeed);
    evnexus_free(NULL); /* a no-op */

    /* The built-in loop has no poll set; edge needs the built-in loop. */
    struct pollfd fds[4];
    size_t n = 4;
    int timeout = -1;
    CHECK_EQ(evnexus_beforepoll(ev, fds, &n, &timeout), -EOPNOTSUPP);
    evnexus *poll_ev = NULL;
    CHECK_EQ(evnexus_new(&poll_ev, EVNEXUS_BACKEND_POLL), 0);
    FAILS_AND_FREES(evnexus_register_fd(poll_ev, sv[0], POLLIN, EVNEXUS_FD_EDGE, on_fd, f, on_free, NULL),
                    -EOPNOTSUPP);
    CHECK_EQ(evnexus_run_once(poll_ev, 0), -EOPNOTSUPP);
    CHECK_EQ(evnexus_beforepoll(poll_ev, NULL, &n, &timeout), -EINVAL);
    CHECK_EQ(evnexus_beforepoll(poll_ev, fds, NULL, &timeout), -EINVAL);
    n = 0; /* asking for the size needed */
    CHECK_EQ(evnexus_beforepoll(poll_ev, NULL, &n, &timeout), -ENOBUFS);
    CHECK_EQ(n, 1);
    CHECK_EQ(evnexus_afterpoll(poll_ev, NULL, 1), -EINVAL);
    CHECK(evnexus_get_fd(poll_ev) >= 0);
    evnexus_free(poll_ev);

    /* A watch whose fd is closed while registered: deregistering it ends
     * it, and says the kernel entry could not be removed. */
    int p[2];
    CHECK_EQ(pipe(p), 0);
    CHECK_EQ(evnexus_register_fd(ev, p[0], POLLIN, 0, on_fd, f, on_free, &token), 0);
    close(p[0]);
    int before = atomic_load(&frees);
    CHECK_EQ(evnexus_deregister(ev, token), -EBADF);
    CHECK_EQ(atomic_load(&frees), before + 1);
    CHECK_EQ(evnexus_deregister(ev, token), -ENOENT);
    close(p[1]);

    evnexus_free(ev);
    close(sv[0]);
    close(sv[1]);
}

/* ---- A modify from inside a hook is refused ---- */

static evnexus *hooked;
static uint64_t victim;
static int deadlk_seen;

static int fd_register(void *user, int fd, void **reg, short events, uint64_t token)
{
    (void)user, (void)fd, (void)reg, (void)events, (void)token;
    if (victim != 0) {
        CHECK_EQ(evnexus_modify_fd(hooked, victim, POLLOUT), -EDEADLK);
        deadlk_seen = 1;
    }
    return 0;
}
static int fd_modify(void *user, int fd, void **reg, short events, uint64_t token)
{
    (void)user, (void)fd, (void)reg, (void)events, (void)token;
    return -EIO;
}
static void fd_deregister(void *user, int fd, void *reg, uint64_t token)
{
    (void)user, (void)fd, (void)reg, (void)token;
}
static int timeout_register(void *user, void **reg, int64_t deadline, uint64_t token)
{
    (void)user, (void)reg, (void)deadline, (void)token;
    return 7; /* not a negative errno: becomes -EIO */
}
static int timeout_modify(void *user, void **reg, int64_t deadline, uint64_t token)
{
    (void)user, (void)reg, (void)deadline, (void)token;
    return 0;
}
static void timeout_deregister(void *user, void *reg, uint64_t token)
{
    (void)user, (void)reg, (void)token;
}

static void hook_errors(void)
{
    evnexus_hooks hooks = {
        .size = sizeof hooks,
        .fd_register = fd_register,
        .fd_modify = fd_modify,
        .fd_deregister = fd_deregister,
        .timeout_register = timeout_register,
        .timeout_modify = timeout_modify,
        .timeout_deregister = timeout_deregister,
    };
    CHECK_EQ(evnexus_new_with_hooks(NULL, &hooks), -EINVAL);
    CHECK_EQ(evnexus_new_with_hooks(&hooked, &hooks), 0);
    CHECK_EQ(evnexus_get_fd(hooked), -EOPNOTSUPP);
    CHECK_EQ(evnexus_next_timeout_ns(hooked), -1);
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    CHECK_EQ(evnexus_register_fd(hooked, sv[0], POLLIN, 0, on_fd, NULL, NULL, &victim), 0);
    CHECK_EQ(evnexus_register_fd(hooked, sv[1], POLLIN, 0, on_fd, NULL, NULL, NULL), 0);
    CHECK(deadlk_seen);
    /* A hook's own error comes back as it is, and the watch is unchanged. */
    CHECK_EQ(evnexus_modify_fd(hooked, victim, POLLOUT), -EIO);
    /* A hook that returns something other than 0 or -errno: -EIO. */
    FAILS_AND_FREES(evnexus_timer_after(hooked, 1, on_timer, &frees, on_free, NULL), -EIO);
    evnexus_free(hooked);
    close(sv[0]);
    close(sv[1]);
}

static void strerror_covers_every_code(void)
{
    const int codes[] = {0,       -EINVAL,  -EBADF,     -ENOSPC,          -ENOENT, -EDEADLK,
                         -ENOBUFS, -EBUSY,  -EOPNOTSUPP, -ENOTRECOVERABLE, -EPERM,  -ENOMEM,
                         -9999};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *m = evnexus_strerror(codes[i]);
        CHECK(m != NULL && strlen(m) > 0);
    }
    CHECK(strstr(evnexus_strerror(-EDEADLK), "hook") != NULL);
    CHECK(strcmp(evnexus_strerror(-ENOENT), evnexus_strerror(ENOENT)) == 0);
}

int main(void)
{
    bad_arguments();
    hook_errors();
    strerror_covers_every_code();
    printf("args: bad input is an error code, failed calls run their free callback once (%d)\n",
           atomic_load(&frees));
    return 0;
}

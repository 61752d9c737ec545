/* The fd deregistration race, in the shape of Xen's test_fdderegrace and
 * stricter: a watch is in the caller's pollfd array (beforepoll), it is
 * deregistered and its fd closed, poll() runs on the old array, a new file
 * gets the same fd number and a new watch, and afterpoll is handed the old
 * array claiming the fd is readable (as it now is). The new watch's
 * callback must not run from the stale array, the stale report must be
 * counted, and the new watch must fire on the next cycle. */
#define _GNU_SOURCE
#include "check.h"

#include <evnexus.h>
#include <poll.h>
#include <stdatomic.h>
#include <unistd.h>

struct watch {
    atomic_int runs;
    atomic_int freed;
    int fd;
    uint64_t token;
};

static void on_fd(evnexus *ev, uint64_t token, int fd, short revents, void *opaque)
{
    struct watch *w = opaque;
    (void)ev;
    CHECK_EQ(fd, w->fd);
    CHECK(token == w->token);
    CHECK(revents & POLLIN);
    CHECK_EQ(atomic_load(&w->freed), 0);
    atomic_fetch_add(&w->runs, 1);
}

static void on_free(void *opaque)
{
    struct watch *w = opaque;
    CHECK_EQ(atomic_fetch_add(&w->freed, 1), 0);
}

static uint64_t stale_generation(evnexus *ev)
{
    evnexus_stats s = {.size = sizeof s};
    CHECK_EQ(evnexus_get_stats(ev, &s), 0);
    return s.stale_generation;
}

int main(void)
{
    evnexus *ev = NULL;
    CHECK_EQ(evnexus_new(&ev, EVNEXUS_BACKEND_POLL), 0);

    int a[2];
    CHECK_EQ(pipe(a), 0);
    CHECK_EQ(write(a[1], "x", 1), 1);
    struct watch old = {.fd = a[0]};
    CHECK_EQ(evnexus_register_fd(ev, a[0], POLLIN, 0, on_fd, &old, on_free, &old.token), 0);

    /* The array is too small: the size needed comes back (ERROR_BUFFERFULL). */
    struct pollfd fds[8];
    size_t n = 1;
    int timeout = -1;
    CHECK_EQ(evnexus_beforepoll(ev, fds, &n, &timeout), -ENOBUFS);
    CHECK_EQ(n, 2);

    n = 8;
    CHECK_EQ(evnexus_beforepoll(ev, fds, &n, &timeout), 0);
    CHECK_EQ(n, 2); /* the engine's eventfd, then the watch */
    CHECK_EQ(fds[1].fd, a[0]);
    CHECK_EQ(timeout, -1);

    /* Deregister (outside any callback: waits, and the free callback has
     * run when it returns), then close the fd. */
    CHECK_EQ(evnexus_deregister(ev, old.token), 0);
    CHECK_EQ(atomic_load(&old.freed), 1);
    CHECK_EQ(evnexus_deregister(ev, old.token), -ENOENT);
    close(a[0]);
    close(a[1]);

    /* poll() on the old array: the closed fd says POLLNVAL. */
    CHECK(poll(fds, n, 0) >= 1);
    CHECK(fds[1].revents & POLLNVAL);

    /* A new file gets the old fd number, readable, with a new watch. */
    int b[2];
    CHECK_EQ(pipe(b), 0);
    if (b[0] != old.fd) {
        CHECK_EQ(dup2(b[0], old.fd), old.fd);
        close(b[0]);
        b[0] = old.fd;
    }
    CHECK_EQ(write(b[1], "y", 1), 1);
    struct watch new = {.fd = b[0]};
    CHECK_EQ(evnexus_register_fd(ev, b[0], POLLIN, 0, on_fd, &new, on_free, &new.token), 0);
    CHECK(new.token != old.token);

    /* afterpoll with the old array, claiming the (same-numbered) fd is
     * readable, which it is: stale, counted, nothing runs. */
    uint64_t stale_before = stale_generation(ev);
    fds[1].revents = POLLIN;
    CHECK_EQ(evnexus_afterpoll(ev, fds, n), 0);
    CHECK_EQ(atomic_load(&new.runs), 0);
    CHECK_EQ(atomic_load(&old.runs), 0);
    CHECK_EQ(stale_generation(ev), stale_before + 1);

    /* The same stale token reported straight, with the right fd. */
    CHECK_EQ(evnexus_occurred_fd(ev, old.token, b[0], POLLIN), EVNEXUS_STALE);
    CHECK_EQ(atomic_load(&new.runs), 0);
    CHECK_EQ(stale_generation(ev), stale_before + 2);

    /* The next cycle fires the new watch. */
    n = 8;
    timeout = -1;
    CHECK_EQ(evnexus_beforepoll(ev, fds, &n, &timeout), 0);
    CHECK_EQ(n, 2);
    CHECK_EQ(fds[1].fd, b[0]);
    CHECK(poll(fds, n, 1000) >= 1);
    CHECK_EQ(evnexus_afterpoll(ev, fds, n), 1);
    CHECK_EQ(atomic_load(&new.runs), 1);
    CHECK_EQ(atomic_load(&old.runs), 0);

    /* afterpoll refuses an array that is not the engine's. */
    fds[1].fd = b[1];
    CHECK_EQ(evnexus_afterpoll(ev, fds, n), -EINVAL);

    CHECK_EQ(evnexus_deregister(ev, new.token), 0);
    CHECK_EQ(atomic_load(&new.freed), 1);
    evnexus_free(ev);
    CHECK_EQ(atomic_load(&old.freed), 1);
    close(b[0]);
    close(b[1]);
    printf("fdderegrace: stale array rejected and counted, new watch fired next cycle\n");
    return 0;
}

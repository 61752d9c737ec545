/* Timeouts deregistering each other, in the shape of Xen's
 * libxl_test_timedereg: of three timeouts, the first to fire deregisters
 * the other two, registers a new group of three, and then deregisters
 * itself (a no-op: it has fired). The new group fires in order, the
 * cancelled ones never run, every free callback runs once, and nothing is
 * left registered. Run on the plain poll() loop and on the built-in loop. */
#define _GNU_SOURCE
#include "check.h"

#include <evnexus.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>

#define MS 1000000LL

struct timeout {
    const char *name;
    int64_t deadline;
    uint64_t token;
    atomic_int fired;
    atomic_int freed;
};

static struct timeout group[2][3];
static const char *order[8];
static int fired_count;

static void on_free(void *opaque)
{
    struct timeout *t = opaque;
    CHECK_EQ(atomic_fetch_add(&t->freed, 1), 0);
}

static void on_second_group(evnexus *ev, uint64_t token, void *opaque)
{
    struct timeout *t = opaque;
    (void)ev;
    CHECK(token == t->token);
    CHECK(now_ns() >= t->deadline);
    CHECK_EQ(atomic_fetch_add(&t->fired, 1), 0);
    order[fired_count++] = t->name;
}

static void add(evnexus *ev, struct timeout *t, const char *name, int64_t deadline,
                evnexus_timer_fn cb)
{
    t->name = name;
    t->deadline = deadline;
    CHECK_EQ(evnexus_timer_at(ev, deadline, cb, t, on_free, &t->token), 0);
}

static void on_first_group(evnexus *ev, uint64_t token, void *opaque)
{
    struct timeout *t = opaque;
    CHECK(token == t->token);
    CHECK(now_ns() >= t->deadline);
    CHECK_EQ(atomic_fetch_add(&t->fired, 1), 0);
    order[fired_count++] = t->name;

    /* Cancel the other two: not running, so their free callbacks run now
     * even though a callback does not wait. */
    for (int i = 0; i < 3; i++) {
        if (&group[0][i] == t) {
            continue;
        }
        CHECK_EQ(evnexus_deregister(ev, group[0][i].token), 0);
        CHECK_EQ(atomic_load(&group[0][i].freed), 1);
    }
    /* A new group, registered from inside the callback. */
    int64_t now = now_ns();
    add(ev, &group[1][0], "d", now + 10 * MS, on_second_group);
    add(ev, &group[1][1], "e", now + 20 * MS, on_second_group);
    add(ev, &group[1][2], "f", now + 30 * MS, on_second_group);
    /* And cancel itself again: it has fired, so this ends nothing. */
    CHECK_EQ(evnexus_deregister(ev, token), -ENOENT);
    CHECK_EQ(atomic_load(&t->freed), 0); /* freed once this run returns */
}

static void one_poll_cycle(evnexus *ev)
{
    struct pollfd fds[16];
    size_t n = 16;
    int timeout = 1000;
    CHECK_EQ(evnexus_beforepoll(ev, fds, &n, &timeout), 0);
    CHECK(timeout >= 0 && timeout <= 1000);
    CHECK(poll(fds, n, timeout) >= 0);
    CHECK(evnexus_afterpoll(ev, fds, n) >= 0);
}

static void run(int backend, const char *label)
{
    memset(group, 0, sizeof group);
    fired_count = 0;
    evnexus *ev = NULL;
    CHECK_EQ(evnexus_new(&ev, backend), 0);

    int64_t now = now_ns();
    add(ev, &group[0][0], "a", now + 10 * MS, on_first_group);
    add(ev, &group[0][1], "b", now + 20 * MS, on_first_group);
    add(ev, &group[0][2], "c", now + 30 * MS, on_first_group);

    int64_t give_up = now_ns() + 5000 * MS;
    while (fired_count < 4 && now_ns() < give_up) {
        if (backend == EVNEXUS_BACKEND_POLL) {
            one_poll_cycle(ev);
        } else {
            CHECK(evnexus_run_once(ev, 100 * MS) >= 0);
        }
    }
    CHECK_EQ(fired_count, 4);
    CHECK(strcmp(order[0], "a") == 0);
    CHECK(strcmp(order[1], "d") == 0);
    CHECK(strcmp(order[2], "e") == 0);
    CHECK(strcmp(order[3], "f") == 0);
    for (int g = 0; g < 2; g++) {
        for (int i = 0; i < 3; i++) {
            CHECK_EQ(atomic_load(&group[g][i].freed), 1);
            int cancelled = g == 0 && i > 0;
            CHECK_EQ(atomic_load(&group[g][i].fired), cancelled ? 0 : 1);
            /* Every token is over: any report of it is stale. */
            CHECK_EQ(evnexus_occurred_timeout(ev, group[g][i].token), EVNEXUS_STALE);
        }
    }
    evnexus_stats s = {.size = sizeof s};
    CHECK_EQ(evnexus_get_stats(ev, &s), 0);
    CHECK_EQ(s.registered, 6);
    CHECK_EQ(s.deregistered, 6); /* nothing left registered */
    CHECK_EQ(s.dispatched, 4);
    evnexus_free(ev);
    printf("timedereg (%s): a cancelled b and c, d e f fired in order, nothing left\n", label);
}

int main(void)
{
    run(EVNEXUS_BACKEND_POLL, "poll loop");
    run(EVNEXUS_BACKEND_AUTO, "built-in loop");
    return 0;
}

/* Forged and stale tokens through the C ABI from several threads, while
 * live reports run real callbacks on other threads: every forged or dead
 * token is rejected (reports STALE, deregister/modify/reset -ENOENT), a
 * live token reported with another watch's fd or as the wrong kind is
 * rejected, nothing is dispatched to the wrong registration, and the
 * engine's stale count equals the number of bad reports sent.
 *
 * Then the same bad reports race the built-in loop, which dispatches the
 * watches itself. */
#define _GNU_SOURCE
#include "check.h"

#include <evnexus.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

#define WATCHES 32
#define TIMERS 32
#define BAD_THREADS 3
#define GOOD_THREADS 2
#define ROUNDS 200000

struct watch {
    int fd, peer;
    uint64_t token;
    atomic_int running;
    atomic_llong runs;
    atomic_int freed;
};

static evnexus *ev;
static struct watch watches[WATCHES];
static uint64_t timer_tokens[TIMERS];
static uint64_t dead[WATCHES + TIMERS];
static atomic_int misdeliveries, timer_runs;
static atomic_llong bad_reports;
static atomic_bool stop;

static void on_fd(evnexus *e, uint64_t token, int fd, short revents, void *opaque)
{
    struct watch *w = opaque;
    (void)e;
    (void)revents;
    if (token != w->token || fd != w->fd) {
        atomic_fetch_add(&misdeliveries, 1);
    }
    CHECK_EQ(atomic_exchange(&w->running, 1), 0);
    atomic_fetch_add(&w->runs, 1);
    atomic_store(&w->running, 0);
}

static void on_timer(evnexus *e, uint64_t token, void *opaque)
{
    (void)e;
    (void)token;
    (void)opaque;
    atomic_fetch_add(&timer_runs, 1); /* none is ever due */
}

static void on_free(void *opaque)
{
    struct watch *w = opaque;
    CHECK_EQ(atomic_fetch_add(&w->freed, 1), 0);
}

/* Live watches 0..WATCHES/2, dead tokens of ended watches and timers. */
static void setup(int backend)
{
    CHECK_EQ(evnexus_new(&ev, backend), 0);
    for (int i = 0; i < WATCHES; i++) {
        struct watch *w = &watches[i];
        *w = (struct watch){0};
        int sv[2];
        CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
        w->fd = sv[0];
        w->peer = sv[1];
        /* Writable at once: the built-in loop reports it level-triggered. */
        CHECK_EQ(evnexus_register_fd(ev, w->fd, POLLOUT, 0, on_fd, w, on_free, &w->token), 0);
    }
    for (int i = 0; i < TIMERS; i++) {
        CHECK_EQ(evnexus_timer_after(ev, 3600LL * 1000000000, on_timer, NULL, NULL,
                                     &timer_tokens[i]),
                 0);
    }
    /* End the upper halves: their tokens are dead for good. */
    for (int i = WATCHES / 2; i < WATCHES; i++) {
        CHECK_EQ(evnexus_deregister(ev, watches[i].token), 0);
        CHECK_EQ(atomic_load(&watches[i].freed), 1);
        dead[i - WATCHES / 2] = watches[i].token;
    }
    for (int i = TIMERS / 2; i < TIMERS; i++) {
        CHECK_EQ(evnexus_deregister(ev, timer_tokens[i]), 0);
        dead[WATCHES / 2 + i - TIMERS / 2] = timer_tokens[i];
    }
}

static void teardown(void)
{
    evnexus_free(ev);
    for (int i = 0; i < WATCHES; i++) {
        CHECK_EQ(atomic_load(&watches[i].freed), 1);
        close(watches[i].fd);
        close(watches[i].peer);
    }
    CHECK_EQ(atomic_load(&timer_runs), 0);
    CHECK_EQ(atomic_load(&misdeliveries), 0);
}

/* One bad call; returns 1 if it was a report (counted as stale). */
static int bad_call(uint64_t x, uint64_t y)
{
    int live = (int)(x % (WATCHES / 2));
    int other = (live + 1 + (int)((x >> 8) % (WATCHES / 2 - 1))) % (WATCHES / 2);
    uint64_t dead_token = dead[(x >> 16) % (WATCHES / 2 + TIMERS / 2)];
    uint64_t live_timer = timer_tokens[(x >> 24) % (TIMERS / 2)];
    int fd = watches[live].fd;
    switch ((x >> 32) % 10) {
    case 0: CHECK_EQ(evnexus_occurred_fd(ev, y, fd, POLLIN), EVNEXUS_STALE); return 1;
    case 1: CHECK_EQ(evnexus_occurred_fd(ev, dead_token, fd, POLLIN), EVNEXUS_STALE); return 1;
    case 2: /* a live token with another live watch's fd */
        CHECK_EQ(evnexus_occurred_fd(ev, watches[live].token, watches[other].fd, POLLIN),
                 EVNEXUS_STALE);
        return 1;
    case 3: /* a live timer token as an fd event, a live watch as a timeout */
        CHECK_EQ(evnexus_occurred_fd(ev, live_timer, fd, POLLIN), EVNEXUS_STALE);
        CHECK_EQ(evnexus_occurred_timeout(ev, watches[live].token), EVNEXUS_STALE);
        return 2;
    case 4: CHECK_EQ(evnexus_occurred_timeout(ev, y), EVNEXUS_STALE); return 1;
    case 5: CHECK_EQ(evnexus_occurred_timeout(ev, dead_token), EVNEXUS_STALE); return 1;
    case 6: CHECK_EQ(evnexus_deregister(ev, (x & 1) ? y : dead_token), -ENOENT); return 0;
    case 7: CHECK_EQ(evnexus_modify_fd(ev, (x & 1) ? y : dead_token, POLLIN), -ENOENT); return 0;
    case 8: /* a timer token is no fd watch, an fd watch no timer */
        CHECK_EQ(evnexus_modify_fd(ev, live_timer, POLLIN), -ENOENT);
        CHECK_EQ(evnexus_timer_reset_after(ev, watches[live].token, 1), -ENOENT);
        return 0;
    default: CHECK_EQ(evnexus_timer_reset_after(ev, (x & 1) ? y : dead_token, 1), -ENOENT); return 0;
    }
}

static void *bad_thread(void *arg)
{
    uint64_t seed = (uintptr_t)arg;
    for (int i = 0; i < ROUNDS; i++) {
        uint64_t x = rnd(&seed), y = rnd(&seed);
        atomic_fetch_add(&bad_reports, bad_call(x, y));
    }
    return NULL;
}

static void *good_thread(void *arg)
{
    uint64_t seed = (uintptr_t)arg;
    while (!atomic_load(&stop)) {
        struct watch *w = &watches[rnd(&seed) % (WATCHES / 2)];
        int rc = evnexus_occurred_fd(ev, w->token, w->fd, POLLOUT);
        CHECK(rc == EVNEXUS_DISPATCHED || rc == EVNEXUS_DEFERRED);
    }
    return NULL;
}

static void *loop_thread(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        CHECK(evnexus_run_once(ev, 1000000) >= 0);
    }
    return NULL;
}

static uint64_t stale_total(void)
{
    evnexus_stats s = {.size = sizeof s};
    CHECK_EQ(evnexus_get_stats(ev, &s), 0);
    return s.stale_generation + s.stale_fd_mismatch + s.stale_out_of_range + s.stale_wrong_kind;
}

static void race(bool builtin_loop)
{
    pthread_t bad[BAD_THREADS], good[GOOD_THREADS];
    atomic_store(&stop, false);
    atomic_store(&bad_reports, 0);
    for (uintptr_t i = 0; i < BAD_THREADS; i++) {
        CHECK_EQ(pthread_create(&bad[i], NULL, bad_thread, (void *)(i * 31 + 7)), 0);
    }
    for (uintptr_t i = 0; i < GOOD_THREADS; i++) {
        CHECK_EQ(pthread_create(&good[i], NULL, builtin_loop ? loop_thread : good_thread,
                                (void *)(i + 3)),
                 0);
        if (builtin_loop) {
            break; /* one thread drives the loop */
        }
    }
    for (int i = 0; i < BAD_THREADS; i++) {
        CHECK_EQ(pthread_join(bad[i], NULL), 0);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < (builtin_loop ? 1 : GOOD_THREADS); i++) {
        CHECK_EQ(pthread_join(good[i], NULL), 0);
    }
}

int main(void)
{
    /* No loop of the engine's own: every stale report is one of ours. */
    setup(EVNEXUS_BACKEND_POLL);
    race(false);
    CHECK_EQ(stale_total(), atomic_load(&bad_reports));
    long long runs = 0;
    for (int i = 0; i < WATCHES / 2; i++) {
        runs += atomic_load(&watches[i].runs);
    }
    CHECK(runs > 0);
    for (int i = WATCHES / 2; i < WATCHES; i++) {
        CHECK_EQ(atomic_load(&watches[i].runs), 0);
    }
    printf("tokens (reports from threads): %lld bad reports rejected, all counted; %lld live runs, "
           "misdeliveries: 0\n",
           (long long)atomic_load(&bad_reports), runs);
    teardown();

    /* The same against the built-in loop dispatching the watches itself. */
    setup(EVNEXUS_BACKEND_AUTO);
    race(true);
    CHECK(stale_total() >= (uint64_t)atomic_load(&bad_reports));
    runs = 0;
    for (int i = 0; i < WATCHES / 2; i++) {
        runs += atomic_load(&watches[i].runs);
    }
    CHECK(runs > 0);
    printf("tokens (built-in loop): %lld bad reports rejected; %lld loop runs, misdeliveries: 0\n",
           (long long)atomic_load(&bad_reports), runs);
    teardown();
    return 0;
}

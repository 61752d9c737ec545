/* An application's own loop in C carrying the engine's registrations
 * through evnexus_hooks, with pthreads:
 *
 * - a loop thread polls the registered fds and watches the registered
 *   timeouts, and queues reports;
 * - delivery threads report them late (random delays), duplicated, and
 *   from several threads at once;
 * - a churn thread registers, modifies, resets and deregisters fd watches
 *   and timers on socket pairs whose fd numbers are reused, writes
 *   traffic, and makes hooks fail on purpose;
 * - a forger thread reports random and dead tokens, and deregisters,
 *   modifies and resets them;
 * - some callbacks deregister their own watch.
 *
 * Checked throughout: a callback only ever sees its own fd and token,
 * never runs concurrently with itself, never runs after its free callback
 * or after deregistering itself; a timer never runs early or twice; every
 * forged or dead token is rejected; a failing hook leaves nothing behind;
 * every free callback runs exactly once, also for the registrations still
 * live at evnexus_free, and the application's tables end empty. */
#define _GNU_SOURCE
#include "check.h"

#include <evnexus.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MS 1000000LL
#define MAX_RECS 20000
#define MAX_LIVE 128
#define MAX_ENTRIES 1024
#define QUEUE 4096
#define DELIVERERS 3
#define DEAD_RING 1024

/* ---- One registration, as the test sees it ---------------------------- */

struct rec {
    bool timer;
    int fd, peer;           /* fd watches: a socket pair */
    _Atomic int64_t deadline; /* timers: the earliest it may fire */
    _Atomic uint64_t token; /* 0 until evnexus_* returned it */
    atomic_int running, runs, fired, freed, self_ended;
};

static struct rec recs[MAX_RECS];
static atomic_int misdeliveries;
static atomic_llong callback_runs, self_deregistrations, reports_stale, reports_forged;

static void on_free(void *opaque)
{
    struct rec *r = opaque;
    CHECK_EQ(atomic_fetch_add(&r->freed, 1), 0);
    CHECK_EQ(atomic_load(&r->running), 0);
}

static void check_mine(struct rec *r, uint64_t token)
{
    uint64_t t = atomic_load(&r->token);
    if (t != 0 && t != token) {
        atomic_fetch_add(&misdeliveries, 1);
    }
    CHECK_EQ(atomic_load(&r->freed), 0);
}

static void on_fd(evnexus *ev, uint64_t token, int fd, short revents, void *opaque)
{
    struct rec *r = opaque;
    (void)revents;
    check_mine(r, token);
    if (fd != r->fd) {
        atomic_fetch_add(&misdeliveries, 1);
    }
    CHECK_EQ(atomic_exchange(&r->running, 1), 0);
    CHECK_EQ(atomic_load(&r->self_ended), 0);
    atomic_fetch_add(&r->runs, 1);
    atomic_fetch_add(&callback_runs, 1);
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    /* Now and then a watch ends itself from its own callback. */
    if (atomic_load(&r->runs) % 16 == 5) {
        int rc = evnexus_deregister(ev, token);
        CHECK(rc == 0 || rc == -ENOENT);
        if (rc == 0) {
            atomic_store(&r->self_ended, 1);
            atomic_fetch_add(&self_deregistrations, 1);
        }
    }
    atomic_store(&r->running, 0);
}

static void on_timer(evnexus *ev, uint64_t token, void *opaque)
{
    struct rec *r = opaque;
    (void)ev;
    check_mine(r, token);
    CHECK(now_ns() >= r->deadline);
    CHECK_EQ(atomic_exchange(&r->running, 1), 0);
    CHECK_EQ(atomic_fetch_add(&r->fired, 1), 0);
    atomic_fetch_add(&callback_runs, 1);
    atomic_store(&r->running, 0);
}

/* ---- The application's loop and its hooks ----------------------------- */

struct entry {
    bool used, timer;
    int fd;
    short events;
    int64_t deadline;
    uint64_t token;
};

struct report {
    bool timer;
    uint64_t token;
    int fd;
    short revents;
};

static struct app {
    pthread_mutex_t mu;
    struct entry e[MAX_ENTRIES];
    int fail_next; /* the next register/modify hook fails with -EPERM */
    pthread_cond_t cv;
    struct report q[QUEUE];
    size_t head, len;
    atomic_bool stop;
} app = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static evnexus *ev;

static int take_failure(void)
{
    int fail = app.fail_next;
    app.fail_next = 0;
    return fail ? -EPERM : 0;
}

static struct entry *new_entry(void)
{
    for (int i = 0; i < MAX_ENTRIES; i++) {
        if (!app.e[i].used) {
            memset(&app.e[i], 0, sizeof app.e[i]);
            app.e[i].used = true;
            return &app.e[i];
        }
    }
    CHECK(!"application table full");
    return NULL;
}

static int fd_register(void *user, int fd, void **reg, short events, uint64_t token)
{
    CHECK(user == &app);
    CHECK(*reg == NULL);
    pthread_mutex_lock(&app.mu);
    int rc = take_failure();
    if (rc == 0) {
        struct entry *e = new_entry();
        e->fd = fd;
        e->events = events;
        e->token = token;
        *reg = e;
    }
    pthread_mutex_unlock(&app.mu);
    return rc;
}

static int fd_modify(void *user, int fd, void **reg, short events, uint64_t token)
{
    (void)user;
    struct entry *e = *reg;
    pthread_mutex_lock(&app.mu);
    int rc = take_failure();
    CHECK(e->used && e->token == token && e->fd == fd);
    if (rc == 0) {
        e->events = events;
    }
    pthread_mutex_unlock(&app.mu);
    return rc;
}

static void fd_deregister(void *user, int fd, void *reg, uint64_t token)
{
    (void)user;
    struct entry *e = reg;
    pthread_mutex_lock(&app.mu);
    CHECK(e->used && !e->timer && e->token == token && e->fd == fd);
    e->used = false;
    pthread_mutex_unlock(&app.mu);
}

static int timeout_register(void *user, void **reg, int64_t deadline, uint64_t token)
{
    (void)user;
    pthread_mutex_lock(&app.mu);
    int rc = take_failure();
    if (rc == 0) {
        struct entry *e = new_entry();
        e->timer = true;
        e->deadline = deadline;
        e->token = token;
        *reg = e;
    }
    pthread_mutex_unlock(&app.mu);
    return rc;
}

/* A timeout the loop has reported is over for the application: its entry
 * is gone (or reused), and a modify or deregister of it finds another
 * token there and has nothing to do. */
static int timeout_modify(void *user, void **reg, int64_t deadline, uint64_t token)
{
    (void)user;
    struct entry *e = *reg;
    pthread_mutex_lock(&app.mu);
    int rc = take_failure();
    if (rc == 0 && e->used && e->timer && e->token == token) {
        e->deadline = deadline;
    }
    pthread_mutex_unlock(&app.mu);
    return rc;
}

static void timeout_deregister(void *user, void *reg, uint64_t token)
{
    (void)user;
    struct entry *e = reg;
    pthread_mutex_lock(&app.mu);
    if (e->used && e->timer && e->token == token) {
        e->used = false;
    }
    pthread_mutex_unlock(&app.mu);
}

/* Queues a report (the caller holds app.mu); false when the queue is full
 * (an fd is seen again on the next turn). */
static bool enqueue(struct report r)
{
    if (app.len == QUEUE) {
        return false;
    }
    app.q[(app.head + app.len++) % QUEUE] = r;
    pthread_cond_signal(&app.cv);
    return true;
}

static void *loop_thread(void *arg)
{
    (void)arg;
    struct pollfd fds[MAX_ENTRIES];
    uint64_t tokens[MAX_ENTRIES];
    while (!atomic_load(&app.stop)) {
        size_t n = 0;
        int64_t now = now_ns();
        pthread_mutex_lock(&app.mu);
        for (int i = 0; i < MAX_ENTRIES; i++) {
            struct entry *e = &app.e[i];
            if (!e->used) {
                continue;
            }
            if (e->timer) {
                if (e->deadline <= now &&
                    enqueue((struct report){.timer = true, .token = e->token})) {
                    e->used = false; /* occurred: over for the application */
                }
            } else {
                fds[n] = (struct pollfd){.fd = e->fd, .events = e->events};
                tokens[n++] = e->token;
            }
        }
        pthread_mutex_unlock(&app.mu);
        /* The snapshot may hold fds closed and reused meanwhile: exactly
         * the late, wrong reports the engine must reject. */
        if (poll(fds, n, 1) > 0) {
            pthread_mutex_lock(&app.mu);
            for (size_t i = 0; i < n; i++) {
                if (fds[i].revents) {
                    enqueue((struct report){.token = tokens[i], .fd = fds[i].fd,
                                            .revents = fds[i].revents});
                }
            }
            pthread_mutex_unlock(&app.mu);
        }
    }
    return NULL;
}

static void deliver(const struct report *r)
{
    int rc = r->timer ? evnexus_occurred_timeout(ev, r->token)
                      : evnexus_occurred_fd(ev, r->token, r->fd, r->revents);
    CHECK(rc == EVNEXUS_DISPATCHED || rc == EVNEXUS_DEFERRED || rc == EVNEXUS_STALE);
    if (rc == EVNEXUS_STALE) {
        atomic_fetch_add(&reports_stale, 1);
    }
}

static void *delivery_thread(void *arg)
{
    uint64_t seed = (uintptr_t)arg * 7919 + 1;
    for (;;) {
        pthread_mutex_lock(&app.mu);
        while (app.len == 0 && !atomic_load(&app.stop)) {
            pthread_cond_wait(&app.cv, &app.mu);
        }
        if (app.len == 0) {
            pthread_mutex_unlock(&app.mu);
            return NULL;
        }
        struct report r = app.q[app.head];
        app.head = (app.head + 1) % QUEUE;
        app.len--;
        pthread_mutex_unlock(&app.mu);
        uint64_t x = rnd(&seed);
        if (x % 4 == 0) {
            sleep_ns((int64_t)(x >> 40) % 300000); /* late: up to 0.3 ms */
        }
        deliver(&r);
        if (x % 8 == 1) {
            deliver(&r); /* duplicated */
        }
    }
}

/* ---- Dead tokens, shared with the forger ------------------------------- */

static pthread_mutex_t dead_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t dead[DEAD_RING];
static size_t dead_len;

static void bury(uint64_t token)
{
    pthread_mutex_lock(&dead_mu);
    dead[dead_len++ % DEAD_RING] = token;
    pthread_mutex_unlock(&dead_mu);
}

static void *forger_thread(void *arg)
{
    uint64_t seed = (uintptr_t)arg;
    while (!atomic_load(&app.stop)) {
        uint64_t x = rnd(&seed);
        uint64_t token = rnd(&seed);
        if (x % 2) {
            pthread_mutex_lock(&dead_mu);
            if (dead_len > 0) {
                token = dead[(x >> 8) % (dead_len < DEAD_RING ? dead_len : DEAD_RING)];
            }
            pthread_mutex_unlock(&dead_mu);
        }
        int fd = (int)((x >> 16) % 64);
        switch ((x >> 32) % 5) {
        case 0: CHECK_EQ(evnexus_occurred_fd(ev, token, fd, POLLIN), EVNEXUS_STALE); break;
        case 1: CHECK_EQ(evnexus_occurred_timeout(ev, token), EVNEXUS_STALE); break;
        case 2: CHECK_EQ(evnexus_deregister(ev, token), -ENOENT); break;
        case 3: CHECK_EQ(evnexus_modify_fd(ev, token, POLLIN), -ENOENT); break;
        default: CHECK_EQ(evnexus_timer_reset_after(ev, token, MS), -ENOENT); break;
        }
        if (atomic_fetch_add(&reports_forged, 1) % 32 == 0) {
            sleep_ns(20000); /* leave the machine to the others now and then */
        }
    }
    return NULL;
}

/* ---- Churn ----------------------------------------------------------- */

static int nrecs;
static int live[MAX_LIVE];
static int nlive;

static int app_entries_on(int fd)
{
    int n = 0;
    pthread_mutex_lock(&app.mu);
    for (int i = 0; i < MAX_ENTRIES; i++) {
        n += app.e[i].used && !app.e[i].timer && app.e[i].fd == fd;
    }
    pthread_mutex_unlock(&app.mu);
    return n;
}

static void fail_next_hook(void)
{
    pthread_mutex_lock(&app.mu);
    app.fail_next = 1;
    pthread_mutex_unlock(&app.mu);
}

static void add_fd(bool failing)
{
    struct rec *r = &recs[nrecs++];
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    r->fd = sv[0];
    r->peer = sv[1];
    CHECK_EQ(write(r->peer, "x", 1), 1);
    uint64_t token = 0;
    if (failing) {
        fail_next_hook();
    }
    int rc = evnexus_register_fd(ev, r->fd, POLLIN, 0, on_fd, r, on_free, &token);
    if (failing) {
        /* The hook's error comes back; nothing is left behind: the free
         * callback has run, no token was handed out, the application's
         * table has nothing on the fd. */
        CHECK_EQ(rc, -EPERM);
        CHECK_EQ(atomic_load(&r->freed), 1);
        CHECK(token == 0);
        CHECK_EQ(app_entries_on(r->fd), 0);
        close(r->fd);
        close(r->peer);
        return;
    }
    CHECK_EQ(rc, 0);
    atomic_store(&r->token, token);
    live[nlive++] = (int)(r - recs);
}

static void add_timer(bool failing, uint64_t x)
{
    struct rec *r = &recs[nrecs++];
    r->timer = true;
    r->deadline = now_ns() + (int64_t)(x % (5 * MS));
    uint64_t token = 0;
    if (failing) {
        fail_next_hook();
    }
    int rc = evnexus_timer_at(ev, atomic_load(&r->deadline), on_timer, r, on_free, &token);
    if (failing) {
        CHECK_EQ(rc, -EPERM);
        CHECK_EQ(atomic_load(&r->freed), 1);
        CHECK(token == 0);
        return;
    }
    CHECK_EQ(rc, 0);
    atomic_store(&r->token, token);
    live[nlive++] = (int)(r - recs);
}

static void end_one(int slot)
{
    struct rec *r = &recs[live[slot]];
    uint64_t token = atomic_load(&r->token);
    int rc = evnexus_deregister(ev, token);
    /* -ENOENT: the timer fired, or the watch ended itself. Either way,
     * outside any callback, deregistration waits for a run in progress:
     * the free callback has run when it returns. */
    CHECK(rc == 0 || rc == -ENOENT);
    CHECK_EQ(atomic_load(&r->freed), 1);
    CHECK_EQ(atomic_load(&r->running), 0);
    if (!r->timer) {
        CHECK_EQ(app_entries_on(r->fd), 0);
        close(r->fd); /* its number is free for the next socket pair */
        close(r->peer);
    }
    bury(token);
    live[slot] = live[--nlive];
}

static void churn(int64_t seconds)
{
    uint64_t seed = 12345;
    int64_t end = now_ns() + seconds * 1000 * MS;
    while (now_ns() < end && nrecs < MAX_RECS - 1) {
        uint64_t x = rnd(&seed);
        int action = (int)(x % 16);
        if (nlive == MAX_LIVE || (nlive > 0 && action < 5)) {
            end_one((int)((x >> 8) % (uint64_t)nlive));
        } else if (action < 9) {
            add_fd(x % 97 == 0);
        } else if (action < 11) {
            add_timer(x % 89 == 0, x >> 20);
        } else if (nlive > 0) {
            struct rec *r = &recs[live[(x >> 8) % (uint64_t)nlive]];
            uint64_t token = atomic_load(&r->token);
            if (r->timer) {
                /* A report racing the reset may fire either deadline. */
                int64_t deadline = now_ns() + (int64_t)((x >> 24) % (3 * MS));
                if (deadline < atomic_load(&r->deadline)) {
                    atomic_store(&r->deadline, deadline);
                }
                int rc = evnexus_timer_reset_at(ev, token, deadline);
                CHECK(rc == 0 || rc == -ENOENT);
            } else if (action < 13) {
                bool failing = x % 31 == 0;
                if (failing) {
                    fail_next_hook();
                }
                short events = (x >> 30) % 2 ? POLLIN : POLLIN | POLLPRI;
                int rc = evnexus_modify_fd(ev, token, events);
                if (failing) {
                    CHECK(rc == -EPERM || rc == -ENOENT);
                    pthread_mutex_lock(&app.mu);
                    app.fail_next = 0; /* unused if the watch had ended */
                    pthread_mutex_unlock(&app.mu);
                } else {
                    CHECK(rc == 0 || rc == -ENOENT);
                }
            } else if (!atomic_load(&r->self_ended)) {
                CHECK_EQ(write(r->peer, "t", 1), 1); /* traffic */
            }
        }
        if (x % 4 == 0) {
            sleep_ns(100000); /* let the loop and the deliverers keep up */
        }
    }
}

int main(int argc, char **argv)
{
    int64_t seconds = argc > 1 ? atoll(argv[1]) : 2;
    evnexus_hooks hooks = {
        .size = sizeof hooks,
        .user = &app,
        .fd_register = fd_register,
        .fd_modify = fd_modify,
        .fd_deregister = fd_deregister,
        .timeout_register = timeout_register,
        .timeout_modify = timeout_modify,
        .timeout_deregister = timeout_deregister,
    };
    /* A short hooks struct, or a missing hook, is refused. */
    evnexus_hooks short_hooks = hooks;
    short_hooks.size = sizeof hooks - 1;
    CHECK_EQ(evnexus_new_with_hooks(&ev, &short_hooks), -EINVAL);
    evnexus_hooks missing = hooks;
    missing.timeout_modify = NULL;
    CHECK_EQ(evnexus_new_with_hooks(&ev, &missing), -EINVAL);
    CHECK_EQ(evnexus_new_with_hooks(&ev, NULL), -EINVAL);

    CHECK_EQ(evnexus_new_with_hooks(&ev, &hooks), 0);
    CHECK_EQ(evnexus_backend(ev), EVNEXUS_BACKEND_HOOKS);
    /* The built-in loop's calls do not apply; edge needs a built-in loop. */
    CHECK_EQ(evnexus_run_once(ev, 0), -EOPNOTSUPP);
    CHECK_EQ(evnexus_register_fd(ev, 0, POLLIN, EVNEXUS_FD_EDGE, on_fd, &recs[0], NULL, NULL),
             -EOPNOTSUPP);

    pthread_t loop, deliverers[DELIVERERS], forgers[2];
    CHECK_EQ(pthread_create(&loop, NULL, loop_thread, NULL), 0);
    for (uintptr_t i = 0; i < DELIVERERS; i++) {
        CHECK_EQ(pthread_create(&deliverers[i], NULL, delivery_thread, (void *)(i + 1)), 0);
    }
    for (uintptr_t i = 0; i < 2; i++) {
        CHECK_EQ(pthread_create(&forgers[i], NULL, forger_thread, (void *)(i + 99)), 0);
    }

    churn(seconds);

    atomic_store(&app.stop, true);
    pthread_mutex_lock(&app.mu);
    pthread_cond_broadcast(&app.cv);
    pthread_mutex_unlock(&app.mu);
    CHECK_EQ(pthread_join(loop, NULL), 0);
    for (int i = 0; i < DELIVERERS; i++) {
        CHECK_EQ(pthread_join(deliverers[i], NULL), 0);
    }
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(pthread_join(forgers[i], NULL), 0);
    }

    evnexus_stats s = {.size = sizeof s};
    CHECK_EQ(evnexus_get_stats(ev, &s), 0);
    int still_live = nlive;

    /* Free with registrations still live: each one's free callback runs
     * once, and each one's deregister hook empties the application's
     * table. */
    evnexus_free(ev);
    for (int i = 0; i < nrecs; i++) {
        CHECK_EQ(atomic_load(&recs[i].freed), 1);
        CHECK(atomic_load(&recs[i].fired) <= 1);
    }
    for (int i = 0; i < MAX_ENTRIES; i++) {
        CHECK(!app.e[i].used);
    }
    for (int i = 0; i < nlive; i++) {
        struct rec *r = &recs[live[i]];
        if (!r->timer) {
            close(r->fd);
            close(r->peer);
        }
    }
    CHECK_EQ(atomic_load(&misdeliveries), 0);
    /* The run exercised what it is about. */
    CHECK(atomic_load(&callback_runs) > 0);
    CHECK(atomic_load(&self_deregistrations) > 0);
    CHECK(atomic_load(&reports_stale) > 0);
    printf("apploop: %d registrations (%d live at free), %lld callback runs, %lld self-deregistrations,\n"
           "         %lld late reports rejected, %lld forged or dead tokens rejected,\n"
           "         engine: dispatched %llu, reruns %llu, stale %llu; misdeliveries: 0\n",
           nrecs, still_live, (long long)callback_runs, (long long)self_deregistrations,
           (long long)reports_stale, (long long)reports_forged, (unsigned long long)s.dispatched,
           (unsigned long long)s.reruns,
           (unsigned long long)(s.stale_generation + s.stale_fd_mismatch + s.stale_out_of_range +
                                s.stale_wrong_kind));
    return 0;
}

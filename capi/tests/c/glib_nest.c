/* The built-in loop nested in a running GLib main loop: GLib watches the
 * engine's fd (g_unix_fd_add) and keeps one timeout source at the engine's
 * next timer; each wake-up runs one non-blocking evnexus_run_once.
 *
 * Checked: fd events (a level-triggered pipe, an edge-triggered socket)
 * and timers are dispatched from inside g_main_loop_run; timers fire in
 * deadline order and never early; a timer registered from another thread
 * while GLib sleeps wakes it and fires; a timer reset from another thread
 * fires at its new deadline. Run on each built-in backend. */
#define _GNU_SOURCE
#include "check.h"

#include <evnexus.h>
#include <glib-unix.h>
#include <glib.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

#define MS 1000000LL

struct nest {
    evnexus *ev;
    GMainLoop *loop;
    guint timeout_source;
    bool in_glib;
    int turns;
};

static struct nest n;
static int pipe_fds[2], sock[2];
static int pipe_reads, edge_runs;

struct timer {
    const char *name;
    _Atomic int64_t deadline;
    uint64_t token;
    int fired_as; /* 1-based order of firing */
};
static struct timer timers[4];
static int fired;

static gboolean on_engine_timeout(gpointer data);

static void turn(void)
{
    n.turns++;
    CHECK(evnexus_run_once(n.ev, 0) >= 0);
    if (n.timeout_source != 0) {
        g_source_remove(n.timeout_source);
        n.timeout_source = 0;
    }
    int64_t ns = evnexus_next_timeout_ns(n.ev);
    CHECK(ns >= -1);
    if (ns >= 0) {
        n.timeout_source = g_timeout_add((guint)((ns + MS - 1) / MS), on_engine_timeout, NULL);
    }
}

static gboolean on_engine_fd(gint fd, GIOCondition condition, gpointer data)
{
    (void)fd;
    (void)data;
    CHECK(condition & G_IO_IN);
    turn();
    return G_SOURCE_CONTINUE;
}

static gboolean on_engine_timeout(gpointer data)
{
    (void)data;
    n.timeout_source = 0;
    turn();
    return G_SOURCE_REMOVE;
}

static gboolean give_up(gpointer data)
{
    (void)data;
    CHECK(!"the nested engine did not finish within 10 s");
    return G_SOURCE_REMOVE;
}

static void maybe_quit(void)
{
    if (pipe_reads == 1 && edge_runs == 1 && fired == 4) {
        g_main_loop_quit(n.loop);
    }
}

static void on_pipe(evnexus *ev, uint64_t token, int fd, short revents, void *opaque)
{
    (void)ev;
    (void)token;
    (void)opaque;
    CHECK(n.in_glib);
    CHECK_EQ(fd, pipe_fds[0]);
    CHECK(revents & POLLIN);
    char buf[8];
    CHECK_EQ(read(fd, buf, sizeof buf), 4);
    pipe_reads++;
    maybe_quit();
}

static void on_edge(evnexus *ev, uint64_t token, int fd, short revents, void *opaque)
{
    (void)ev;
    (void)token;
    (void)revents;
    (void)opaque;
    CHECK(n.in_glib);
    CHECK_EQ(fd, sock[0]);
    edge_runs++; /* not drained: edge-triggered, it must not run again */
    maybe_quit();
}

static void on_timer(evnexus *ev, uint64_t token, void *opaque)
{
    struct timer *t = opaque;
    (void)ev;
    CHECK(n.in_glib);
    CHECK(token == t->token || t->token == 0);
    CHECK(now_ns() >= atomic_load(&t->deadline));
    CHECK_EQ(t->fired_as, 0);
    t->fired_as = ++fired;
    maybe_quit();
}

static void add_timer(struct timer *t, const char *name, int64_t deadline)
{
    t->name = name;
    atomic_store(&t->deadline, deadline);
    CHECK_EQ(evnexus_timer_at(n.ev, deadline, on_timer, t, NULL, &t->token), 0);
}

/* Another thread, while GLib sleeps: write the pipe, register a timer,
 * reset one, and make the edge-triggered socket readable. */
static void *other_thread(void *arg)
{
    (void)arg;
    sleep_ns(20 * MS);
    CHECK_EQ(write(pipe_fds[1], "ping", 4), 4);
    sleep_ns(20 * MS);
    add_timer(&timers[2], "c (from a thread)", now_ns() + 30 * MS);
    /* d was due at +500 ms; bring it to +80 ms from now. */
    int64_t d = now_ns() + 80 * MS;
    CHECK_EQ(evnexus_timer_reset_at(n.ev, timers[3].token, d), 0);
    atomic_store(&timers[3].deadline, d);
    CHECK_EQ(write(sock[1], "e", 1), 1);
    return NULL;
}

static void run(int backend, const char *label)
{
    n = (struct nest){0};
    pipe_reads = edge_runs = fired = 0;
    for (int i = 0; i < 4; i++) {
        timers[i] = (struct timer){0};
    }
    CHECK_EQ(evnexus_new(&n.ev, backend), 0);
    CHECK_EQ(pipe(pipe_fds), 0);
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sock), 0);
    CHECK_EQ(evnexus_register_fd(n.ev, pipe_fds[0], POLLIN, 0, on_pipe, NULL, NULL, NULL), 0);
    CHECK_EQ(evnexus_register_fd(n.ev, sock[0], POLLIN, EVNEXUS_FD_EDGE, on_edge, NULL, NULL, NULL), 0);
    int64_t now = now_ns();
    add_timer(&timers[1], "b", now + 60 * MS);
    add_timer(&timers[0], "a", now + 10 * MS);
    add_timer(&timers[3], "d (reset from a thread)", now + 500 * MS);

    n.loop = g_main_loop_new(NULL, FALSE);
    int fd = evnexus_get_fd(n.ev);
    CHECK(fd >= 0);
    guint fd_source = g_unix_fd_add(fd, G_IO_IN, on_engine_fd, NULL);
    guint guard = g_timeout_add(10000, give_up, NULL);
    pthread_t thread;
    CHECK_EQ(pthread_create(&thread, NULL, other_thread, NULL), 0);
    turn();
    n.in_glib = true;
    g_main_loop_run(n.loop);
    n.in_glib = false;
    CHECK_EQ(pthread_join(thread, NULL), 0);

    CHECK_EQ(pipe_reads, 1);
    CHECK_EQ(edge_runs, 1);
    /* Deadline order: a (+10), b (+60), c (~+70, from the thread), d (~+120). */
    CHECK_EQ(timers[0].fired_as, 1);
    CHECK_EQ(timers[1].fired_as, 2);
    CHECK_EQ(timers[2].fired_as, 3);
    CHECK_EQ(timers[3].fired_as, 4);
    /* Nothing left but the two fd watches. (The next timeout may still
     * name d's old deadline: a moved or cancelled timer can only make the
     * host wake once for nothing, never late.) */
    evnexus_stats s = {.size = sizeof s};
    CHECK_EQ(evnexus_get_stats(n.ev, &s), 0);
    CHECK_EQ(s.registered - s.deregistered, 2);

    g_source_remove(fd_source);
    g_source_remove(guard);
    if (n.timeout_source != 0) {
        g_source_remove(n.timeout_source);
    }
    g_main_loop_unref(n.loop);
    evnexus_free(n.ev);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    close(sock[0]);
    close(sock[1]);
    printf("glib_nest (%s): fd events and 4 timers dispatched through GLib in %d turns\n", label,
           n.turns);
}

int main(void)
{
    run(EVNEXUS_BACKEND_EPOLL, "epoll");
    evnexus *probe = NULL;
    if (evnexus_new(&probe, EVNEXUS_BACKEND_URING) == 0) {
        evnexus_free(probe);
        run(EVNEXUS_BACKEND_URING, "io_uring");
    } else {
        /* The kernel refuses io_uring here: AUTO is epoll, tested above. */
        printf("glib_nest: io_uring refused by this kernel, epoll only\n");
    }
    return 0;
}

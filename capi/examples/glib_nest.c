/* evnexus's built-in loop nested in a GLib main loop, as a GLib-based
 * daemon (libvirtd) would carry it: GLib watches the engine's fd and
 * sleeps at most until the engine's next timer; whenever either fires,
 * one non-blocking evnexus_run_once dispatches what is ready and due.
 *
 *   cc glib_nest.c $(pkg-config --cflags --libs evnexus glib-2.0) */
#include <evnexus.h>
#include <glib-unix.h>
#include <glib.h>
#include <stdio.h>
#include <unistd.h>

struct nest {
    evnexus *ev;
    GMainLoop *loop;
    guint timeout_source; /* GLib's timeout for the engine's next timer */
    int pings;
};

static gboolean on_engine_timeout(gpointer data);

/* One turn of the engine, then the GLib timeout moved to its next timer. */
static void turn(struct nest *n)
{
    int ran = evnexus_run_once(n->ev, 0);
    if (ran < 0) {
        fprintf(stderr, "evnexus_run_once: %s\n", evnexus_strerror(ran));
    }
    if (n->timeout_source != 0) {
        g_source_remove(n->timeout_source);
        n->timeout_source = 0;
    }
    int64_t ns = evnexus_next_timeout_ns(n->ev);
    if (ns >= 0) {
        guint ms = (guint)((ns + 999999) / 1000000); /* round up: never early */
        n->timeout_source = g_timeout_add(ms, on_engine_timeout, n);
    }
}

static gboolean on_engine_fd(gint fd, GIOCondition condition, gpointer data)
{
    (void)fd;
    (void)condition;
    turn(data);
    return G_SOURCE_CONTINUE;
}

static gboolean on_engine_timeout(gpointer data)
{
    struct nest *n = data;
    n->timeout_source = 0; /* this source ends by returning REMOVE */
    turn(n);
    return G_SOURCE_REMOVE;
}

/* ---- What the application registers with the engine ---- */

struct app {
    struct nest *nest;
    int pipe[2];
};

static void on_readable(evnexus *ev, uint64_t token, int fd, short revents, void *opaque)
{
    struct app *app = opaque;
    char buf[16];
    (void)ev;
    (void)token;
    (void)revents;
    ssize_t len = read(fd, buf, sizeof buf);
    printf("pipe readable: read %zd bytes\n", len);
    app->nest->pings++;
}

static void on_ping_timer(evnexus *ev, uint64_t token, void *opaque)
{
    struct app *app = opaque;
    (void)ev;
    (void)token;
    printf("timer: writing to the pipe\n");
    if (write(app->pipe[1], "ping", 4) != 4) {
        perror("write");
    }
}

static void on_quit_timer(evnexus *ev, uint64_t token, void *opaque)
{
    struct app *app = opaque;
    (void)ev;
    (void)token;
    printf("timer: quitting the GLib main loop\n");
    g_main_loop_quit(app->nest->loop);
}

int main(void)
{
    struct nest n = {0};
    struct app app = {.nest = &n};
    int rc = evnexus_new(&n.ev, EVNEXUS_BACKEND_AUTO);
    if (rc < 0 || pipe(app.pipe) != 0) {
        fprintf(stderr, "setup failed: %s\n", evnexus_strerror(rc));
        return 1;
    }
    n.loop = g_main_loop_new(NULL, FALSE);

    /* Registrations, as anywhere else. */
    if ((rc = evnexus_register_fd(n.ev, app.pipe[0], POLLIN, 0, on_readable, &app, NULL, NULL)) < 0 ||
        (rc = evnexus_timer_after(n.ev, 50 * 1000000LL, on_ping_timer, &app, NULL, NULL)) < 0 ||
        (rc = evnexus_timer_after(n.ev, 100 * 1000000LL, on_quit_timer, &app, NULL, NULL)) < 0) {
        fprintf(stderr, "registration failed: %s\n", evnexus_strerror(rc));
        return 1;
    }

    /* The nesting: GLib watches the engine's fd, and the first turn arms
     * GLib's timeout for the engine's first timer. */
    guint fd_source = g_unix_fd_add(evnexus_get_fd(n.ev), G_IO_IN, on_engine_fd, &n);
    turn(&n);
    g_main_loop_run(n.loop);

    g_source_remove(fd_source);
    if (n.timeout_source != 0) {
        g_source_remove(n.timeout_source);
    }
    g_main_loop_unref(n.loop);
    evnexus_free(n.ev); /* before the pipe it watches is closed */
    close(app.pipe[0]);
    close(app.pipe[1]);
    printf("done: %d ping(s) through GLib\n", n.pings);
    return n.pings == 1 ? 0 : 1;
}

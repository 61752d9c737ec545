/* A plain poll() loop with evnexus: evnexus_beforepoll fills the pollfd
 * array with the engine's fds (and says how long poll() may sleep),
 * the application appends fds of its own, and evnexus_afterpoll
 * dispatches what poll() found (libxl's libxl_osevent_beforepoll /
 * afterpoll). A registration made on another thread wakes the poll().
 *
 *   cc poll_loop.c $(pkg-config --cflags --libs evnexus) */
#define _GNU_SOURCE
#include <evnexus.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static evnexus *ev;
static int fired, done;

static void on_timer(evnexus *e, uint64_t token, void *opaque)
{
    (void)e, (void)token;
    printf("timer %s fired\n", (const char *)opaque);
    fired++;
}

/* From another thread, while the loop sleeps in poll(): the engine wakes
 * it through the eventfd in the array's first entry. */
static void *other_thread(void *arg)
{
    (void)arg;
    usleep(20000);
    int rc = evnexus_timer_after(ev, 10 * 1000000LL, on_timer, "from a thread", NULL, NULL);
    if (rc < 0) {
        fprintf(stderr, "timer: %s\n", evnexus_strerror(rc));
    }
    return NULL;
}

int main(void)
{
    int rc = evnexus_new(&ev, EVNEXUS_BACKEND_POLL);
    if (rc < 0 || (rc = evnexus_timer_after(ev, 5 * 1000000LL, on_timer, "5 ms", NULL, NULL)) < 0) {
        fprintf(stderr, "setup: %s\n", evnexus_strerror(rc));
        return 1;
    }
    int own[2]; /* the application's own fd, polled in the same array */
    if (pipe(own) != 0) {
        return 1;
    }

    pthread_t thread;
    size_t cap = 1; /* deliberately small: beforepoll says what it needs */
    struct pollfd *fds = malloc(cap * sizeof *fds);
    while (fired < 2 || !done) {
        size_t n = cap - 1; /* keep a place for our own fd */
        int timeout = 1000; /* our own limit, lowered to the next timer */
        rc = evnexus_beforepoll(ev, fds, &n, &timeout);
        if (rc == -ENOBUFS) {
            cap = n + 1;
            fds = realloc(fds, cap * sizeof *fds);
            continue;
        }
        if (rc < 0) {
            fprintf(stderr, "beforepoll: %s\n", evnexus_strerror(rc));
            return 1;
        }
        fds[n] = (struct pollfd){.fd = own[0], .events = POLLIN};
        if (poll(fds, n + 1, timeout) < 0) {
            perror("poll");
            return 1;
        }
        if ((rc = evnexus_afterpoll(ev, fds, n + 1)) < 0) {
            fprintf(stderr, "afterpoll: %s\n", evnexus_strerror(rc));
            return 1;
        }
        if (fired == 1 && !done) {
            pthread_create(&thread, NULL, other_thread, NULL);
            done = 1;
        }
    }
    pthread_join(thread, NULL); /* evnexus_free must be the engine's last call */
    free(fds);
    evnexus_free(ev);
    close(own[0]);
    close(own[1]);
    printf("poll loop: %d timers fired\n", fired);
    return 0;
}

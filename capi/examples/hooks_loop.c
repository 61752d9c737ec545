/* An application's own event loop carrying evnexus's registrations through
 * evnexus_hooks (libxl's libxl_osevent_hooks shape): the loop keeps a
 * table of what to watch, polls it, and reports events back with
 * evnexus_occurred_fd / evnexus_occurred_timeout. A report may come late
 * or for something already deregistered: the engine rejects it.
 *
 *   cc hooks_loop.c $(pkg-config --cflags --libs evnexus) */
#define _GNU_SOURCE
#include <evnexus.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 64

/* The application's table: one entry per registration, its index kept as
 * the registration's value (*reg). */
static struct entry {
    int used, is_timer, fd;
    short events;
    int64_t deadline;
    uint64_t token;
} table[SLOTS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int add(int is_timer, int fd, short events, int64_t deadline, uint64_t token, void **reg)
{
    pthread_mutex_lock(&mu);
    for (intptr_t i = 0; i < SLOTS; i++) {
        if (!table[i].used) {
            table[i] = (struct entry){1, is_timer, fd, events, deadline, token};
            *reg = (void *)i;
            pthread_mutex_unlock(&mu);
            return 0;
        }
    }
    pthread_mutex_unlock(&mu);
    return -ENOSPC; /* the engine call fails with this, leaving nothing */
}

static void drop(void *reg, uint64_t token)
{
    pthread_mutex_lock(&mu);
    struct entry *e = &table[(intptr_t)reg];
    if (e->used && e->token == token) { /* a reported timeout is gone already */
        e->used = 0;
    }
    pthread_mutex_unlock(&mu);
}

static int fd_register(void *user, int fd, void **reg, short events, uint64_t token)
{
    (void)user;
    return add(0, fd, events, 0, token, reg);
}
static int fd_modify(void *user, int fd, void **reg, short events, uint64_t token)
{
    (void)user, (void)fd, (void)token;
    pthread_mutex_lock(&mu);
    table[(intptr_t)*reg].events = events;
    pthread_mutex_unlock(&mu);
    return 0;
}
static void fd_deregister(void *user, int fd, void *reg, uint64_t token)
{
    (void)user, (void)fd;
    drop(reg, token);
}
static int timeout_register(void *user, void **reg, int64_t deadline, uint64_t token)
{
    (void)user;
    return add(1, -1, 0, deadline, token, reg);
}
static int timeout_modify(void *user, void **reg, int64_t deadline, uint64_t token)
{
    (void)user;
    pthread_mutex_lock(&mu);
    struct entry *e = &table[(intptr_t)*reg];
    if (e->used && e->token == token) {
        e->deadline = deadline;
    }
    pthread_mutex_unlock(&mu);
    return 0;
}
static void timeout_deregister(void *user, void *reg, uint64_t token)
{
    (void)user;
    drop(reg, token);
}

/* ---- What the program registers ---- */

static int got, ticks; /* bytes read, timers fired */

static void on_readable(evnexus *ev, uint64_t token, int fd, short revents, void *opaque)
{
    char buf[64];
    (void)opaque, (void)revents;
    ssize_t n = read(fd, buf, sizeof buf);
    printf("watch %#llx: read %zd bytes\n", (unsigned long long)token, n);
    got += n > 0 ? (int)n : 0;
    if (got == 15) {
        evnexus_deregister(ev, token); /* a callback may end its own watch */
    }
}

static void on_tick(evnexus *ev, uint64_t token, void *opaque)
{
    (void)ev, (void)token, (void)opaque;
    printf("timer fired\n");
    ticks++;
}

static void *writer(void *arg)
{
    int fd = *(int *)arg;
    for (int i = 0; i < 3; i++) {
        usleep(10000);
        if (write(fd, "hello", 5) != 5) {
            perror("write");
        }
    }
    return NULL;
}

int main(void)
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
    evnexus *ev;
    int p[2], rc;
    if ((rc = evnexus_new_with_hooks(&ev, &hooks)) < 0 || pipe(p) != 0 ||
        (rc = evnexus_register_fd(ev, p[0], POLLIN, 0, on_readable, NULL, NULL, NULL)) < 0 ||
        (rc = evnexus_timer_after(ev, 20 * 1000000LL, on_tick, NULL, NULL, NULL)) < 0) {
        fprintf(stderr, "setup: %s\n", evnexus_strerror(rc));
        return 1;
    }
    pthread_t t;
    pthread_create(&t, NULL, writer, &p[1]);

    /* The application's loop: snapshot the table, poll, report. */
    while (got < 15 || ticks < 1) {
        struct pollfd fds[SLOTS];
        uint64_t tokens[SLOTS], due[SLOTS];
        int nfds = 0, ndue = 0;
        pthread_mutex_lock(&mu);
        for (int i = 0; i < SLOTS; i++) {
            struct entry *e = &table[i];
            if (e->used && !e->is_timer) {
                fds[nfds] = (struct pollfd){.fd = e->fd, .events = e->events};
                tokens[nfds++] = e->token;
            } else if (e->used && e->deadline <= now_ns()) {
                due[ndue++] = e->token;
                e->used = 0; /* a timeout that occurred is over for the loop */
            }
        }
        pthread_mutex_unlock(&mu);
        if (poll(fds, (nfds_t)nfds, 5) > 0) {
            for (int i = 0; i < nfds; i++) {
                if (fds[i].revents) {
                    evnexus_occurred_fd(ev, tokens[i], fds[i].fd, fds[i].revents);
                }
            }
        }
        for (int i = 0; i < ndue; i++) {
            evnexus_occurred_timeout(ev, due[i]);
        }
    }
    pthread_join(t, NULL);
    evnexus_free(ev);
    close(p[0]);
    close(p[1]);
    printf("hooks loop: %d bytes read, %d timer fired\n", got, ticks);
    return 0;
}

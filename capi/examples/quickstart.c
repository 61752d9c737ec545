#include <evnexus.h>
#include <stdio.h>
#include <unistd.h>

static void on_readable(evnexus *ev, uint64_t token, int fd, short revents, void *name)
{
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    printf("%s: %zd bytes, token %#llx, revents %#x\n", (char *)name, n,
           (unsigned long long)token, (unsigned)revents);
    evnexus_stop(ev); /* evnexus_run returns after this batch */
}

int main(void)
{
    evnexus *ev;
    int p[2], rc = evnexus_new(&ev, EVNEXUS_BACKEND_AUTO); /* io_uring, or epoll */
    if (rc < 0 || pipe(p) != 0) return 1;
    rc = evnexus_register_fd(ev, p[0], POLLIN, 0, on_readable, "pipe", NULL, NULL);
    if (rc == 0 && write(p[1], "hello", 5) == 5)
        rc = evnexus_run(ev); /* until a callback calls evnexus_stop */
    if (rc < 0) fprintf(stderr, "evnexus: %s\n", evnexus_strerror(rc));
    evnexus_free(ev); /* ends the watch, while its fd is still open */
    return rc < 0;
}

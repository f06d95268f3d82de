/* The same relay as relay_epoll.c on io_uring (bench/floor/README.md): each direction
 * is a send linked to the next recv into the same buffer, and the loop submits and
 * waits in one io_uring_enter, so the thread sleeps in the kernel right after its
 * sends. A measuring aid, not part of meshbox.
 * Usage: relay_uring LISTEN_PORT UPSTREAM_PORT [FLAGS]; FLAGS 1: SINGLE_ISSUER and
 * DEFER_TASKRUN (completions run when the thread waits), 2: COOP_TASKRUN. */
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#endif

#define BUFSZ 16384
#define MAXC 4096 /* connections in the relay's life */
enum { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3 };
struct side { int from, to; char buf[BUFSZ]; };
static struct side sides[MAXC * 2];
static int nsides;
static struct io_uring ring;

static unsigned long long ud(int op, int idx) { return ((unsigned long long)op << 32) | (unsigned)idx; }

static struct io_uring_sqe *sqe(void) {
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    if (!s) { io_uring_submit(&ring); s = io_uring_get_sqe(&ring); }
    return s;
}

static void arm_recv(int idx) {
    struct io_uring_sqe *s = sqe();
    io_uring_prep_recv(s, sides[idx].from, sides[idx].buf, BUFSZ, 0);
    io_uring_sqe_set_data64(s, ud(OP_RECV, idx));
}

static int upstream(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (void *)&a, sizeof a) < 0) { perror("connect"); exit(1); }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s LISTEN_PORT UPSTREAM_PORT [FLAGS]\n", argv[0]); return 2; }
    int lport = atoi(argv[1]), uport = atoi(argv[2]);
    int flags = argc > 3 ? atoi(argv[3]) : 0;
    unsigned setup = 0;
    if (flags & 1) setup |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    if (flags & 2) setup |= IORING_SETUP_COOP_TASKRUN;
    if (io_uring_queue_init(1024, &ring, setup) < 0) { perror("io_uring_queue_init"); return 1; }
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(lport)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (void *)&a, sizeof a) < 0 || listen(l, 4096) < 0) { perror("listen"); return 1; }
    struct io_uring_sqe *s = sqe();
    io_uring_prep_accept(s, l, NULL, NULL, 0);
    io_uring_sqe_set_data64(s, ud(OP_ACCEPT, 0));
    for (;;) {
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            int op = cqe->user_data >> 32, idx = cqe->user_data & 0xffffffff, res = cqe->res;
            if (op == OP_ACCEPT) {
                if (res >= 0 && nsides + 2 <= MAXC * 2) {
                    setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    int u = upstream(uport);
                    int c2u = nsides++, u2c = nsides++;
                    sides[c2u].from = res; sides[c2u].to = u;
                    sides[u2c].from = u; sides[u2c].to = res;
                    arm_recv(c2u); arm_recv(u2c);
                }
                struct io_uring_sqe *t = sqe();
                io_uring_prep_accept(t, l, NULL, NULL, 0);
                io_uring_sqe_set_data64(t, ud(OP_ACCEPT, 0));
            } else if (op == OP_RECV) {
                if (res <= 0) { close(sides[idx].from); shutdown(sides[idx].to, SHUT_RDWR); continue; }
                /* send what came, then (linked) wait for the next bytes in the same buffer */
                struct io_uring_sqe *t = sqe();
                io_uring_prep_send(t, sides[idx].to, sides[idx].buf, res, MSG_NOSIGNAL | MSG_WAITALL);
                io_uring_sqe_set_data64(t, ud(OP_SEND, idx));
                t->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
                arm_recv(idx);
            }
            /* OP_SEND posts only on failure (CQE_SKIP_SUCCESS), and its linked recv then
             * completes with -ECANCELED, which closes the pair above. */
        }
        io_uring_cq_advance(&ring, seen);
    }
}

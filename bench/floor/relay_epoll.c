/* The floor of a proxy's cost on this machine (bench/floor/README.md): a single-threaded
 * TCP relay on epoll. Each accepted client gets its own upstream connection and bytes
 * are relayed both ways (recv, then send), the system calls a proxy makes per request
 * with none of its work. A measuring aid, not part of meshbox.
 * Usage: relay_epoll LISTEN_PORT UPSTREAM_PORT (both on 127.0.0.1). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXFD 65536
static int peer[MAXFD];
static char buf[65536];

static int upstream(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (void *)&a, sizeof a) < 0) { perror("connect"); exit(1); }
    int one = 1; setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s LISTEN_PORT UPSTREAM_PORT\n", argv[0]); return 2; }
    int lport = atoi(argv[1]), uport = atoi(argv[2]);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(lport)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (void *)&a, sizeof a) < 0 || listen(l, 4096) < 0) { perror("listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                int c = accept(l, NULL, NULL);
                if (c < 0) continue;
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                int u = upstream(uport);
                peer[c] = u; peer[u] = c;
                struct epoll_event e1 = {.events = EPOLLIN, .data.fd = c};
                struct epoll_event e2 = {.events = EPOLLIN, .data.fd = u};
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &e1);
                epoll_ctl(ep, EPOLL_CTL_ADD, u, &e2);
                continue;
            }
            /* Level-triggered readiness: this recv does not block. The send may, on a
             * full buffer, which a 1 KB answer never meets. */
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r <= 0) {
                int p = peer[fd];
                close(fd); close(p);
                continue;
            }
            if (send(peer[fd], buf, r, MSG_NOSIGNAL) != r) {
                int p = peer[fd];
                close(fd); close(p);
            }
        }
    }
}

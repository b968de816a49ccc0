/* overload_gen: an open-loop HTTP/1.1 load generator, one thread, epoll (bench_overload, #15).
 *
 * Why: wrk with a Lua schedule needs one thread per connection (its Lua has no per-connection
 * identity); at 512 connections those threads cost most of the generator's core. This sends
 * the same schedule (wrk2's method, see overload_wrk.py) from one event loop.
 *
 * Usage: overload_gen URL BODY_FILE RATE DURATION_S TIMEOUT_S CONNECTIONS [START_DELAY_S]
 *   URL is http://HOST:PORT/PATH. Prints one line "RESULT {json}" (keys as overload_wrk's Lua
 *   done()) at start + DURATION + TIMEOUT + 1 s, and exits.
 *
 * Schedule: request j (j = 0, 1, ...) is due at start + j / RATE for j <= DURATION * RATE and
 * belongs to connection j % N (its k-th request, k = j / N): connection i is due at
 * start + i/RATE + k*N/RATE. One request outstanding per connection. A request due while its
 * connection is idle leaves on the timer (its lateness is the generator's lag: lag_*); one due
 * while the connection waits leaves as soon as the answer arrives. Latency runs from the due
 * time (no coordinated omission); an answer more than TIMEOUT after its due time is "late".
 *
 * Responses: status line, headers (content-length, retry-after, connection: close,
 * transfer-encoding: chunked — decoded), body by length, by chunks, or until close (no length).
 * A connection the server closes (or a socket error) is reopened; a request outstanding on it
 * is lost (read_errors / write_errors; it stays in scheduled - answered). An idle connection
 * closed by the server is reopened without counting an error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUFSZ 16384
#define MAX_CONN 4096
#define MAX_EVENTS 1024
#define RETRY_NS 10000000LL /* a failed connect is retried after 10 ms */

enum { ST_DOWN, ST_CONNECTING, ST_OPEN };
enum { P_HEAD, P_BODY, P_CLOSE, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_CRLF, P_TRAILER };

typedef struct {
    int fd, state, busy, want_out, phase, status, has_ra, close_after;
    int64_t k_next;          /* this connection's next schedule index to send */
    int64_t due, sent_at;    /* of the outstanding request */
    int64_t remain;          /* body / chunk bytes still to skip */
    int64_t retry_at;
    size_t w_off, blen;
    char *buf;
} conn_t;

static conn_t conns[MAX_CONN];
static int nconn, epfd, n_down, down[MAX_CONN]; /* connections to reopen */
static struct sockaddr_storage addr;
static socklen_t addrlen;
static char *req;
static size_t req_len;
static double rate;
static int64_t start_ns, due_total, timeout_ns;
static int64_t ok, s503, no_ra, late, other, sent, answered;
static int64_t lag_n, lag_over5, lag_max_ns, connect_errors, read_errors, write_errors;
static int64_t statuses[1000];
static int64_t *hist, *shist; /* 2xx latency from due / from send, 0.1 ms buckets */
static int64_t nbuckets;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t due_of(int64_t j) { return start_ns + (int64_t)((double)j * 1e9 / rate); }

static void set_events(conn_t *c, int out) {
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (c->want_out != out) {
        c->want_out = out;
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static void open_conn(conn_t *c, int64_t now);

/* close the socket; a request outstanding on it is lost (the caller counted why) */
static void drop(conn_t *c, int64_t retry_at) {
    close(c->fd);
    c->fd = -1;
    c->state = ST_DOWN;
    c->busy = 0;
    c->blen = 0;
    c->phase = P_HEAD;
    c->retry_at = retry_at;
    down[n_down++] = (int)(c - conns);
}

static void do_write(conn_t *c, int64_t now) {
    while (c->w_off < req_len) {
        ssize_t n = send(c->fd, req + c->w_off, req_len - c->w_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->w_off += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_events(c, 1);
            return;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            write_errors++;
            drop(c, now);
            return;
        }
    }
    if (c->want_out) set_events(c, 0);
}

static void send_req(conn_t *c, int64_t due, int64_t now) {
    c->due = due;
    c->sent_at = now;
    c->busy = 1;
    c->w_off = 0;
    c->k_next++;
    sent++;
    do_write(c, now);
}

/* the connection is open and idle: send its next request if it is already due */
static void send_backlog(conn_t *c, int64_t now) {
    int64_t j = (int64_t)(c - conns) + c->k_next * nconn;
    if (j < due_total) {
        int64_t d = due_of(j);
        if (d <= now) send_req(c, d, now);
    }
}

static void open_conn(conn_t *c, int64_t now) {
    c->fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        connect_errors++;
        c->state = ST_DOWN;
        c->retry_at = now + RETRY_NS;
        down[n_down++] = (int)(c - conns);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->busy = 0;
    c->blen = 0;
    c->phase = P_HEAD;
    c->want_out = 1;
    c->state = ST_CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (connect(c->fd, (struct sockaddr *)&addr, addrlen) < 0 && errno != EINPROGRESS) {
        connect_errors++;
        drop(c, now + RETRY_NS);
        return;
    }
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void record(conn_t *c, int64_t now) {
    int64_t lat = now - c->due;
    answered++;
    if (lat > timeout_ns) {
        late++;
    } else if (c->status >= 200 && c->status < 300) {
        ok++;
        int64_t b = lat / 100000, sb = (now - c->sent_at) / 100000;
        hist[b < 0 ? 0 : b >= nbuckets ? nbuckets - 1 : b]++;
        shist[sb < 0 ? 0 : sb >= nbuckets ? nbuckets - 1 : sb]++;
    } else if (c->status == 503) {
        s503++;
        if (!c->has_ra) no_ra++;
    } else {
        other++;
        statuses[c->status >= 0 && c->status < 1000 ? c->status : 0]++;
    }
}

/* a response is complete: 1 = go on parsing, 0 = the connection was closed */
static int complete(conn_t *c, int64_t now) {
    c->phase = P_HEAD;
    if (c->status >= 100 && c->status < 200) return 1; /* interim: the real answer follows */
    record(c, now);
    c->busy = 0;
    if (c->close_after || c->w_off < req_len) { /* server closes, or answered mid-request */
        drop(c, now);
        return 0;
    }
    send_backlog(c, now);
    return 1;
}

static int header_is(const char *line, size_t len, const char *name, const char **value) {
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':') return 0;
    const char *v = line + n + 1;
    while (v < line + len && (*v == ' ' || *v == '\t')) v++;
    *value = v;
    return 1;
}

static int contains_ci(const char *s, size_t len, const char *word) {
    size_t n = strlen(word);
    for (size_t i = 0; i + n <= len; i++)
        if (strncasecmp(s + i, word, n) == 0) return 1;
    return 0;
}

/* parse the head at buf[0..end): -1 on a malformed status line */
static int parse_head(conn_t *c, const char *h, size_t end) {
    if (end < 12 || memcmp(h, "HTTP/1.", 7) != 0) return -1;
    c->status = atoi(h + 9);
    c->has_ra = 0;
    c->close_after = 0;
    int64_t clen = -1;
    int chunked = 0;
    const char *p = memchr(h, '\n', end);
    while (p && (size_t)(p + 1 - h) < end) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\n', end - (size_t)(line - h));
        if (!eol) break;
        size_t len = (size_t)(eol - line);
        if (len && line[len - 1] == '\r') len--;
        const char *v;
        if (header_is(line, len, "content-length", &v)) clen = strtoll(v, NULL, 10);
        else if (header_is(line, len, "retry-after", &v)) c->has_ra = 1;
        else if (header_is(line, len, "connection", &v))
            c->close_after = contains_ci(v, len - (size_t)(v - line), "close");
        else if (header_is(line, len, "transfer-encoding", &v))
            chunked = contains_ci(v, len - (size_t)(v - line), "chunked");
        p = eol;
    }
    if (chunked) {
        c->phase = P_CHUNK_SIZE;
    } else if (clen >= 0 || c->status < 200 || c->status == 204 || c->status == 304) {
        c->phase = P_BODY;
        c->remain = clen > 0 && c->status >= 200 && c->status != 204 && c->status != 304 ? clen : 0;
    } else {
        c->phase = P_CLOSE; /* no length: the body runs until the server closes */
    }
    return 0;
}

/* consume buf: -1 = protocol error, 0 = the connection was closed, 1 = fine */
static int parse(conn_t *c, int64_t now) {
    size_t pos = 0;
    int rc = 1;
    while (pos < c->blen) {
        char *b = c->buf + pos;
        size_t avail = c->blen - pos;
        if (c->phase == P_HEAD) {
            if (!c->busy) return -1; /* an answer to no request */
            char *e = memmem(b, avail, "\r\n\r\n", 4);
            if (!e) {
                if (avail == BUFSZ) return -1; /* head too large */
                break;
            }
            size_t end = (size_t)(e - b) + 4;
            if (parse_head(c, b, end) < 0) return -1;
            pos += end;
            if (c->phase == P_BODY && c->remain == 0 && !(rc = complete(c, now))) return 0;
        } else if (c->phase == P_BODY || c->phase == P_CHUNK_DATA) {
            size_t take = (int64_t)avail < c->remain ? avail : (size_t)c->remain;
            pos += take;
            c->remain -= (int64_t)take;
            if (c->remain == 0) {
                if (c->phase == P_CHUNK_DATA) c->phase = P_CHUNK_CRLF;
                else if (!(rc = complete(c, now))) return 0;
            }
        } else if (c->phase == P_CLOSE) {
            pos = c->blen; /* skipped; complete at EOF */
        } else if (c->phase == P_CHUNK_CRLF) {
            if (avail < 2) break;
            if (b[0] != '\r' || b[1] != '\n') return -1;
            pos += 2;
            c->phase = P_CHUNK_SIZE;
        } else { /* P_CHUNK_SIZE or P_TRAILER: one line */
            char *e = memmem(b, avail, "\r\n", 2);
            if (!e) {
                if (avail == BUFSZ) return -1;
                break;
            }
            size_t len = (size_t)(e - b);
            pos += len + 2;
            if (c->phase == P_TRAILER) {
                if (len == 0 && !(rc = complete(c, now))) return 0;
            } else {
                char *endp;
                long long size = strtoll(b, &endp, 16);
                if (endp == b || size < 0) return -1;
                c->remain = size;
                c->phase = size == 0 ? P_TRAILER : P_CHUNK_DATA;
            }
        }
    }
    if (pos && pos < c->blen) memmove(c->buf, c->buf + pos, c->blen - pos);
    c->blen -= pos;
    return rc;
}

static void on_readable(conn_t *c, int64_t now) {
    for (;;) {
        size_t space = BUFSZ - c->blen;
        ssize_t n = read(c->fd, c->buf + c->blen, space);
        if (n > 0) {
            c->blen += (size_t)n;
            now = now_ns();
            int rc = parse(c, now);
            if (rc < 0) {
                read_errors++;
                drop(c, now);
                return;
            }
            if (rc == 0 || (size_t)n < space) return; /* the read drained the socket */
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n == 0 && c->busy && c->phase == P_CLOSE) { /* body ran until close */
            c->close_after = 1;
            complete(c, now_ns());
            return;
        }
        if (c->busy || c->blen) read_errors++; /* lost an answer; idle close: just reopen */
        drop(c, now);
        return;
    }
}

static void on_event(conn_t *c, uint32_t events, int64_t now) {
    if (c->state == ST_DOWN) return;
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            connect_errors++;
            drop(c, now + RETRY_NS);
            return;
        }
        c->state = ST_OPEN;
        set_events(c, 0);
        send_backlog(c, now);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        on_readable(c, now);
        if (c->state != ST_OPEN) return;
    }
    if ((events & EPOLLOUT) && c->busy && c->w_off < req_len) do_write(c, now);
}

static int parse_url(const char *url, char *host, size_t hlen, char *port, char *path, size_t plen) {
    if (strncmp(url, "http://", 7) != 0) return -1;
    const char *h = url + 7, *slash = strchr(h, '/');
    size_t hp = slash ? (size_t)(slash - h) : strlen(h);
    snprintf(path, plen, "%s", slash ? slash : "/");
    const char *colon = memchr(h, ':', hp);
    size_t nlen = colon ? (size_t)(colon - h) : hp;
    if (nlen == 0 || nlen >= hlen) return -1;
    memcpy(host, h, nlen);
    host[nlen] = 0;
    if (colon) {
        size_t portlen = hp - nlen - 1;
        if (portlen == 0 || portlen > 5) return -1;
        memcpy(port, colon + 1, portlen);
        port[portlen] = 0;
    } else {
        strcpy(port, "80");
    }
    return 0;
}

static double pct_of(const int64_t *h, double q) {
    int64_t need = (int64_t)ceil(q * (double)ok), seen = 0;
    if (ok == 0) return -1;
    for (int64_t b = 0; b < nbuckets; b++) {
        seen += h[b];
        if (h[b] && seen >= need) return (double)(b + 1) / 10.0;
    }
    return -1;
}

static void print_result(void) {
    printf("RESULT {\"ok\": %lld, \"s503\": %lld, \"no_retry_after\": %lld, \"late\": %lld, "
           "\"other\": %lld, \"scheduled\": %lld, \"sent\": %lld, \"answered\": %lld, "
           "\"p50_ms\": %.1f, \"p99_ms\": %.1f, \"max_ms\": %.1f, \"p99_sent_ms\": %.1f, "
           "\"lag_n\": %lld, \"lag_over5\": %lld, \"lag_max_ms\": %.1f, \"connect_errors\": %lld, "
           "\"read_errors\": %lld, \"write_errors\": %lld, \"statuses\": {",
           (long long)ok, (long long)s503, (long long)no_ra, (long long)late, (long long)other,
           (long long)due_total, (long long)sent, (long long)answered, pct_of(hist, 0.5),
           pct_of(hist, 0.99), pct_of(hist, 1.0), pct_of(shist, 0.99), (long long)lag_n,
           (long long)lag_over5, (double)lag_max_ns / 1e6, (long long)connect_errors,
           (long long)read_errors, (long long)write_errors);
    const char *sep = "";
    for (int s = 0; s < 1000; s++) {
        if (statuses[s]) {
            printf("%s\"%d\": %lld", sep, s, (long long)statuses[s]);
            sep = ", ";
        }
    }
    printf("}}\n");
    fflush(stdout);
}

static int wait_events(struct epoll_event *evs, int64_t wait_ns) {
    static int have_pwait2 = 1;
    if (wait_ns < 0) wait_ns = 0;
    if (have_pwait2) {
        struct timespec ts = {.tv_sec = wait_ns / 1000000000LL, .tv_nsec = wait_ns % 1000000000LL};
        int n = epoll_pwait2(epfd, evs, MAX_EVENTS, &ts, NULL);
        if (n >= 0 || errno != ENOSYS) return n;
        have_pwait2 = 0;
    }
    return epoll_wait(epfd, evs, MAX_EVENTS, (int)((wait_ns + 999999) / 1000000));
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s URL BODY_FILE RATE DURATION_S TIMEOUT_S CONNECTIONS [START_DELAY_S]\n",
                argv[0]);
        return 2;
    }
    char host[256], port[8], path[2048];
    if (parse_url(argv[1], host, sizeof host, port, path, sizeof path) < 0) {
        fprintf(stderr, "bad url (want http://HOST:PORT/PATH): %s\n", argv[1]);
        return 2;
    }
    rate = atof(argv[3]);
    double duration = atof(argv[4]), timeout = atof(argv[5]);
    nconn = atoi(argv[6]);
    double start_delay = argc > 7 ? atof(argv[7]) : 0.5;
    if (!(rate > 0) || duration < 0 || !(timeout > 0) || nconn < 1 || nconn > MAX_CONN) {
        fprintf(stderr, "need RATE > 0, DURATION >= 0, TIMEOUT > 0, 1 <= CONNECTIONS <= %d\n", MAX_CONN);
        return 2;
    }
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        perror(argv[2]);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    long blen = ftell(f);
    fseek(f, 0, SEEK_SET);
    char head[4096];
    int hl = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %ld\r\n\r\n", path, host, port, blen);
    req_len = (size_t)hl + (size_t)blen;
    req = malloc(req_len);
    memcpy(req, head, (size_t)hl);
    if (fread(req + hl, 1, (size_t)blen, f) != (size_t)blen) {
        perror(argv[2]);
        return 2;
    }
    fclose(f);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "%s: %s\n", host, gai_strerror(gai));
        return 2;
    }
    memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    timeout_ns = (int64_t)(timeout * 1e9);
    nbuckets = (int64_t)(timeout * 10000.0) + 2;
    hist = calloc((size_t)nbuckets, sizeof *hist);
    shist = calloc((size_t)nbuckets, sizeof *shist);
    due_total = (int64_t)floor(duration * rate + 1e-9) + 1;
    epfd = epoll_create1(EPOLL_CLOEXEC);

    int64_t now = now_ns();
    for (int i = 0; i < nconn; i++) {
        conns[i].buf = malloc(BUFSZ);
        conns[i].fd = -1;
        open_conn(&conns[i], now);
    }
    start_ns = now_ns() + (int64_t)(start_delay * 1e9);
    int64_t end_ns = start_ns + (int64_t)((duration + timeout + 1.0) * 1e9);
    int64_t j_next = 0; /* next schedule index the timer has not looked at */
    struct epoll_event evs[MAX_EVENTS];

    for (;;) {
        now = now_ns();
        if (now >= end_ns) break;
        int64_t wake = end_ns;
        if (j_next < due_total) {
            int64_t d = due_of(j_next);
            if (d < wake) wake = d;
        }
        if (n_down > 0 && now + RETRY_NS < wake) wake = now + RETRY_NS;
        int n = wait_events(evs, wake - now);
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        now = now_ns();
        for (int e = 0; e < n; e++) on_event(evs[e].data.ptr, evs[e].events, now);
        now = now_ns();
        for (; j_next < due_total; j_next++) { /* requests now due on idle connections */
            int64_t d = due_of(j_next);
            if (d > now) break;
            conn_t *c = &conns[j_next % nconn];
            int64_t k = j_next / nconn;
            if (c->state != ST_OPEN || c->busy || c->k_next > k) continue; /* sent on its answer */
            if (c->k_next == k) { /* idle when due: how late the timer sends it */
                int64_t lag = now - d;
                lag_n++;
                if (lag > 5000000) lag_over5++;
                if (lag > lag_max_ns) lag_max_ns = lag;
            }
            send_req(c, due_of(c->k_next * nconn + (int64_t)(c - conns)), now);
        }
        if (n_down > 0) { /* reopen what is due to be reopened; the rest waits */
            static int todo[MAX_CONN];
            int m = n_down;
            memcpy(todo, down, (size_t)m * sizeof *todo);
            n_down = 0;
            for (int i = 0; i < m; i++) {
                if (conns[todo[i]].retry_at <= now) open_conn(&conns[todo[i]], now);
                else down[n_down++] = todo[i];
            }
        }
    }
    print_result();
    return 0;
}

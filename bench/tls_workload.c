/*
 * tls_workload: probectl's benchmark load. One process, one thread (two with --threads 2): a
 * TLS client and a TLS server (OpenSSL, dynamically linked against the system libssl.so.3, so
 * that uprobes on libssl fire) connected by a non-blocking socketpair. The client does COUNT
 * SSL_write calls of SIZE bytes each; after every write the server SSL_reads until it has all
 * SIZE bytes and checks them. The data is deterministic and printable (so a bpftrace "%r" dump
 * prints it 1:1).
 *
 * The workload times its own loop (handshake and start-up excluded) and prints one JSON line on
 * stdout. Because everything runs on one thread, the loop time is the sum of the time of every
 * SSL_write/SSL_read call: a tracer's added cost per call is (traced - untraced) / calls.
 *
 * With --threads 2 the client and the server run on two threads of the one process (both CPUs
 * busy): after the handshake the socketpair is made blocking, a client thread does the COUNT
 * SSL_writes back to back and a server thread SSL_reads until it has COUNT * SIZE bytes, checking
 * every byte against the same pattern. The loop time is then wall time from both threads'
 * start to both threads' end (calls overlap: ns_per_call is loop_ns / calls, not a call's cost);
 * "client_ns"/"server_ns" are each thread's own loop time.
 *
 * Usage: tls_workload --cert FILE --key FILE --size BYTES --count N
 *                     [--rate BYTES_PER_SECOND] [--wait] [--threads 1|2]
 *   --rate  pace the writes to at most this many bytes per second (0 = as fast as possible)
 *   --threads  1 (default): everything on one thread, as described above; 2: see above
 *   --wait  after the handshake print "ready PID" on stdout and wait for a line on stdin
 *           before starting the loop (for a tracer attaching with --pid)
 *
 * Exit status: 0 on success, 1 on usage/TLS errors, 2 when the received data was wrong.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
#define PERIOD 64 /* the pattern repeats every 64 bytes */

static void die_ssl(const char *what) {
    fprintf(stderr, "tls_workload: %s failed\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static unsigned long long parse_u64(const char *s, const char *name) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s) {
        fprintf(stderr, "tls_workload: bad %s: %s\n", name, s);
        exit(1);
    }
    return v;
}

static uint64_t write_calls, read_calls, write_want, read_want;
static size_t received;      /* bytes of the current message received so far */
static size_t expected_size; /* size of the current message */
static const unsigned char *expected; /* the current message */
static unsigned char *rbuf;
static size_t rbuf_size;
static int bad_data;

/* Server side: SSL_read until `want` more bytes arrived (want == 0: until the socket is empty). */
static void server_read(SSL *server, size_t want_total) {
    while (received < want_total || want_total == 0) {
        int r = SSL_read(server, rbuf, (int)rbuf_size);
        read_calls++;
        if (r > 0) {
            if (received + (size_t)r > expected_size ||
                memcmp(rbuf, expected + received, (size_t)r) != 0)
                bad_data = 1;
            received += (size_t)r;
            continue;
        }
        int e = SSL_get_error(server, r);
        if (e == SSL_ERROR_WANT_READ) {
            read_want++;
            if (want_total == 0)
                return;
            fprintf(stderr, "tls_workload: server would block with %zu/%zu bytes\n", received, want_total);
            exit(1);
        }
        die_ssl("SSL_read");
    }
}

static void handshake(SSL *client, SSL *server) {
    int client_done = 0, server_done = 0;
    for (int rounds = 0; !(client_done && server_done); rounds++) {
        if (rounds > 1000) {
            fprintf(stderr, "tls_workload: handshake does not finish\n");
            exit(1);
        }
        if (!client_done) {
            int r = SSL_do_handshake(client);
            if (r == 1)
                client_done = 1;
            else if (SSL_get_error(client, r) != SSL_ERROR_WANT_READ &&
                     SSL_get_error(client, r) != SSL_ERROR_WANT_WRITE)
                die_ssl("client handshake");
        }
        if (!server_done) {
            int r = SSL_do_handshake(server);
            if (r == 1)
                server_done = 1;
            else if (SSL_get_error(server, r) != SSL_ERROR_WANT_READ &&
                     SSL_get_error(server, r) != SSL_ERROR_WANT_WRITE)
                die_ssl("server handshake");
        }
    }
}

/* ---- Two threads (--threads 2): client thread writes, server thread reads, blocking sockets. */

struct two_threads {
    SSL *client, *server;
    const unsigned char *wbuf; /* the pattern: size + PERIOD bytes */
    unsigned long long size, count, rate;
    pthread_barrier_t start;
    /* Each thread's loop: CLOCK_MONOTONIC at its start and end (read only after the joins). */
    uint64_t client_start, client_end, server_start, server_end;
};

static void pace(uint64_t start, unsigned long long i, unsigned long long size, unsigned long long rate) {
    /* Message i may start at start + i * size / rate. */
    uint64_t due = start + (uint64_t)((double)i * (double)size * 1e9 / (double)rate);
    uint64_t t = now_ns();
    if (t < due) {
        struct timespec d = {(time_t)((due - t) / 1000000000ull), (long)((due - t) % 1000000000ull)};
        nanosleep(&d, NULL);
    }
}

static void *client_thread(void *arg) {
    struct two_threads *t = arg;
    pthread_barrier_wait(&t->start);
    uint64_t start = now_ns();
    for (unsigned long long i = 0; i < t->count; i++) {
        if (t->rate)
            pace(start, i, t->size, t->rate);
        /* Blocking socket, SSL_MODE_AUTO_RETRY (OpenSSL's default): one call writes it all. */
        int r = SSL_write(t->client, t->wbuf + (i % PERIOD), (int)t->size);
        write_calls++;
        if (r <= 0) die_ssl("SSL_write");
        if ((unsigned long long)r != t->size) {
            fprintf(stderr, "tls_workload: short write %d of %llu\n", r, t->size);
            exit(1);
        }
    }
    t->client_start = start;
    t->client_end = now_ns();
    return NULL;
}

static void *server_thread(void *arg) {
    struct two_threads *t = arg;
    pthread_barrier_wait(&t->start);
    uint64_t start = now_ns();
    unsigned long long message = 0; /* the message the next byte belongs to */
    size_t offset = 0;              /* and its offset in that message */
    while (message < t->count) {
        int r = SSL_read(t->server, rbuf, (int)rbuf_size);
        read_calls++;
        if (r <= 0) die_ssl("SSL_read");
        /* A read never spans two writes' records, but check as if it could. */
        size_t done = 0;
        while (done < (size_t)r) {
            if (message >= t->count) {
                bad_data = 1; /* more bytes than were sent */
                break;
            }
            size_t n = (size_t)r - done;
            if (n > t->size - offset)
                n = t->size - offset;
            if (memcmp(rbuf + done, t->wbuf + (message % PERIOD) + offset, n) != 0)
                bad_data = 1;
            done += n;
            offset += n;
            if (offset == t->size) {
                message++;
                offset = 0;
            }
        }
    }
    t->server_start = start;
    t->server_end = now_ns();
    return NULL;
}

/* Returns the loop's wall time: from the first thread's start to the last thread's end (not
   the main thread's clock: with 3 threads on 2 CPUs it may run late after the barrier). */
static uint64_t run_two_threads(struct two_threads *t, int fds[2]) {
    for (int k = 0; k < 2; k++) {
        int flags = fcntl(fds[k], F_GETFL);
        if (flags < 0 || fcntl(fds[k], F_SETFL, flags & ~O_NONBLOCK) != 0) {
            perror("tls_workload: fcntl");
            exit(1);
        }
    }
    if (pthread_barrier_init(&t->start, NULL, 3) != 0) {
        fprintf(stderr, "tls_workload: pthread_barrier_init failed\n");
        exit(1);
    }
    pthread_t client, server;
    if (pthread_create(&client, NULL, client_thread, t) != 0 ||
        pthread_create(&server, NULL, server_thread, t) != 0) {
        fprintf(stderr, "tls_workload: pthread_create failed\n");
        exit(1);
    }
    pthread_barrier_wait(&t->start);
    pthread_join(client, NULL);
    pthread_join(server, NULL);
    pthread_barrier_destroy(&t->start);
    uint64_t start = t->client_start < t->server_start ? t->client_start : t->server_start;
    uint64_t end = t->client_end > t->server_end ? t->client_end : t->server_end;
    return end - start;
}

int main(int argc, char **argv) {
    const char *cert = NULL, *key = NULL;
    unsigned long long size = 0, count = 0, rate = 0, threads = 1;
    int wait_for_go = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--wait")) {
            wait_for_go = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "tls_workload: %s needs a value\n", a);
            return 1;
        }
        if (!strcmp(a, "--cert")) cert = v;
        else if (!strcmp(a, "--key")) key = v;
        else if (!strcmp(a, "--size")) size = parse_u64(v, "size");
        else if (!strcmp(a, "--count")) count = parse_u64(v, "count");
        else if (!strcmp(a, "--rate")) rate = parse_u64(v, "rate");
        else if (!strcmp(a, "--threads")) threads = parse_u64(v, "threads");
        else {
            fprintf(stderr, "tls_workload: unknown option %s\n", a);
            return 1;
        }
        i++;
    }
    if (!cert || !key || size == 0 || size > (1u << 30) || count == 0 || threads < 1 || threads > 2) {
        fprintf(stderr, "usage: tls_workload --cert FILE --key FILE --size BYTES --count N "
                        "[--rate BYTES_PER_SECOND] [--wait] [--threads 1|2]\n");
        return 1;
    }

    /* The message pattern: byte j of message i is ALPHABET[(i + j) % 64]; message i starts at
       offset i % 64 of one buffer of size + 64 bytes. */
    unsigned char *wbuf = malloc(size + PERIOD);
    rbuf_size = size < 16384 ? size : 16384; /* SSL_read returns at most one record anyway */
    rbuf = malloc(rbuf_size);
    if (!wbuf || !rbuf) {
        fprintf(stderr, "tls_workload: out of memory\n");
        return 1;
    }
    for (size_t j = 0; j < size + PERIOD; j++)
        wbuf[j] = (unsigned char)ALPHABET[j % PERIOD];

    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    if (!sctx || !cctx) die_ssl("SSL_CTX_new");
    if (SSL_CTX_use_certificate_chain_file(sctx, cert) != 1) die_ssl("loading the certificate");
    if (SSL_CTX_use_PrivateKey_file(sctx, key, SSL_FILETYPE_PEM) != 1) die_ssl("loading the key");
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    /* No session tickets: nothing but the benchmark's data after the handshake. */
    SSL_CTX_set_num_tickets(sctx, 0);

    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) != 0) {
        perror("tls_workload: socketpair");
        return 1;
    }
    /* Room for a whole message in flight, so a write normally completes in one call. Needs
       root for more than net.core.wmem_max; without it the loop still works, with retries. */
    int sock_buf = (int)(size * 2 + (1 << 20) < (64u << 20) ? size * 2 + (1 << 20) : (64u << 20));
    for (int k = 0; k < 2; k++) {
        if (setsockopt(fds[k], SOL_SOCKET, SO_SNDBUFFORCE, &sock_buf, sizeof sock_buf) != 0)
            setsockopt(fds[k], SOL_SOCKET, SO_SNDBUF, &sock_buf, sizeof sock_buf);
        if (setsockopt(fds[k], SOL_SOCKET, SO_RCVBUFFORCE, &sock_buf, sizeof sock_buf) != 0)
            setsockopt(fds[k], SOL_SOCKET, SO_RCVBUF, &sock_buf, sizeof sock_buf);
    }

    SSL *client = SSL_new(cctx), *server = SSL_new(sctx);
    if (!client || !server) die_ssl("SSL_new");
    SSL_set_fd(client, fds[0]);
    SSL_set_fd(server, fds[1]);
    SSL_set_connect_state(client);
    SSL_set_accept_state(server);
    handshake(client, server);

    if (wait_for_go) {
        printf("ready %d\n", (int)getpid());
        fflush(stdout);
        char line[64];
        if (!fgets(line, sizeof line, stdin)) {
            fprintf(stderr, "tls_workload: no go on stdin\n");
            return 1;
        }
    }

    struct two_threads two = {.client = client, .server = server, .wbuf = wbuf, .size = size,
                              .count = count, .rate = rate};
    uint64_t loop_ns;
    if (threads == 2) {
        loop_ns = run_two_threads(&two, fds);
    } else {
        uint64_t start = now_ns();
        for (unsigned long long i = 0; i < count; i++) {
            if (rate) {
                /* Pace: message i may start at start + i * size / rate. */
                uint64_t due = start + (uint64_t)((double)i * (double)size * 1e9 / (double)rate);
                uint64_t t = now_ns();
                if (t < due) {
                    struct timespec d = {(time_t)((due - t) / 1000000000ull), (long)((due - t) % 1000000000ull)};
                    nanosleep(&d, NULL);
                }
            }
            const unsigned char *msg = wbuf + (i % PERIOD);
            expected = msg;
            expected_size = size;
            received = 0;
            for (;;) {
                int r = SSL_write(client, msg, (int)size);
                write_calls++;
                if (r > 0) {
                    if ((unsigned long long)r != size) {
                        fprintf(stderr, "tls_workload: short write %d of %llu\n", r, size);
                        return 1;
                    }
                    break;
                }
                int e = SSL_get_error(client, r);
                if (e != SSL_ERROR_WANT_WRITE) die_ssl("SSL_write");
                /* The socket is full: let the server take what is there, then retry the write. */
                write_want++;
                server_read(server, 0);
            }
            server_read(server, size);
        }
        loop_ns = now_ns() - start;
    }

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double secs = (double)loop_ns / 1e9;
    uint64_t calls = write_calls + read_calls;
    printf("{\"size\":%llu,\"count\":%llu,\"bytes\":%llu,\"write_calls\":%llu,\"read_calls\":%llu,"
           "\"write_would_block\":%llu,\"read_would_block\":%llu,\"loop_ns\":%llu,"
           "\"ns_per_call\":%.1f,\"calls_per_s\":%.0f,\"mb_per_s\":%.2f,\"rate\":%llu,"
           "\"utime_us\":%lld,\"stime_us\":%lld,\"maxrss_kb\":%ld,\"threads\":%llu,"
           "\"client_ns\":%llu,\"server_ns\":%llu,\"data_ok\":%s}\n",
           size, count, size * count, (unsigned long long)write_calls, (unsigned long long)read_calls,
           (unsigned long long)write_want, (unsigned long long)read_want, (unsigned long long)loop_ns,
           (double)loop_ns / (double)calls, (double)calls / secs, (double)(size * count) / secs / 1e6,
           rate, (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
           (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec, ru.ru_maxrss, threads,
           (unsigned long long)(two.client_end - two.client_start),
           (unsigned long long)(two.server_end - two.server_start),
           bad_data ? "false" : "true");
    fflush(stdout);

    SSL_free(client);
    SSL_free(server);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    free(wbuf);
    free(rbuf);
    return bad_data ? 2 : 0;
}

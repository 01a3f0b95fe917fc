/*
 * ssl_calls: the OpenSSL calls a probe placement must get right, in one process and one thread,
 * dynamically linked against the system libssl.so.3 (whose SSL_write/SSL_read get emulated
 * placements). Two TLS connections over non-blocking socketpairs, A and B:
 *   1. SSL_write(clientA, buf, -1): an error return (-1) that must capture nothing;
 *   2. clientA writes DIR/request; serverA reads it. While serverA is inside SSL_read, its
 *      message callback (on the record header) calls SSL_write(clientB, DIR/nested): a traced
 *      call nested in another;
 *   3. clientA writes DIR/big in one SSL_write (larger than probectl's 16 KiB chunk); serverA
 *      reads it;
 *   4. serverA writes DIR/response; clientA reads it; serverB reads the nested message;
 *   5. clientA shuts down; serverA's SSL_read returns 0 (close_notify): no data.
 * Every received byte is checked against what was sent (exit 2 on a mismatch). DIR/results gets
 * the SSL* handles and the results of the error/close calls, one "name=value" per line.
 *
 * Usage: ssl_calls CERT KEY DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static void die(const char *what) {
    fprintf(stderr, "ssl_calls: %s failed\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static unsigned char *slurp(const char *dir, const char *name, size_t *size) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc(*size + 1);
    if (!data || fread(data, 1, *size, f) != *size) die(path);
    fclose(f);
    return data;
}

static void pair(SSL_CTX *cctx, SSL_CTX *sctx, SSL **client, SSL **server) {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) != 0) die("socketpair");
    int size = 1 << 20;
    for (int k = 0; k < 2; k++) {
        setsockopt(fds[k], SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
        setsockopt(fds[k], SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    }
    *client = SSL_new(cctx);
    *server = SSL_new(sctx);
    if (!*client || !*server) die("SSL_new");
    SSL_set_fd(*client, fds[0]);
    SSL_set_fd(*server, fds[1]);
    SSL_set_connect_state(*client);
    SSL_set_accept_state(*server);
    int client_done = 0, server_done = 0;
    for (int rounds = 0; !(client_done && server_done); rounds++) {
        if (rounds > 1000) die("handshake");
        if (!client_done && SSL_do_handshake(*client) == 1) client_done = 1;
        if (!server_done && SSL_do_handshake(*server) == 1) server_done = 1;
    }
}

static void write_all(SSL *ssl, const unsigned char *data, size_t size) {
    int r = SSL_write(ssl, data, (int)size);
    if (r != (int)size) die("SSL_write");
}

/* SSL_read until `size` bytes came, checking them against `expected`. */
static void read_all(SSL *ssl, const unsigned char *expected, size_t size) {
    static unsigned char buf[65536];
    size_t got = 0;
    for (int rounds = 0; got < size; rounds++) {
        if (rounds > 100000) die("SSL_read (no progress)");
        int r = SSL_read(ssl, buf, sizeof buf);
        if (r > 0) {
            if (got + (size_t)r > size || memcmp(buf, expected + got, (size_t)r) != 0) {
                fprintf(stderr, "ssl_calls: received data differs\n");
                exit(2);
            }
            got += (size_t)r;
        } else if (SSL_get_error(ssl, r) != SSL_ERROR_WANT_READ) {
            die("SSL_read");
        }
    }
}

static SSL *nested_client;
static const unsigned char *nested_data;
static size_t nested_size;
static int server_reading, nested_done;

/* serverA's message callback: on the first record header it reads inside SSL_read, write the
   nested message on connection B. */
static void on_message(int write_p, int version, int content_type, const void *buf, size_t len,
                       SSL *ssl, void *arg) {
    (void)version, (void)buf, (void)len, (void)ssl, (void)arg;
    if (!write_p && content_type == SSL3_RT_HEADER && server_reading && !nested_done) {
        nested_done = 1;
        write_all(nested_client, nested_data, nested_size);
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: ssl_calls CERT KEY DIR\n");
        return 1;
    }
    char results[4096];
    snprintf(results, sizeof results, "%s/results", argv[3]);
    if (!freopen(results, "w", stdout)) die(results);
    size_t request_size, big_size, response_size;
    unsigned char *request = slurp(argv[3], "request", &request_size);
    unsigned char *big = slurp(argv[3], "big", &big_size);
    unsigned char *response = slurp(argv[3], "response", &response_size);
    nested_data = slurp(argv[3], "nested", &nested_size);

    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    if (!sctx || !cctx) die("SSL_CTX_new");
    if (SSL_CTX_use_certificate_chain_file(sctx, argv[1]) != 1) die("certificate");
    if (SSL_CTX_use_PrivateKey_file(sctx, argv[2], SSL_FILETYPE_PEM) != 1) die("key");
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_num_tickets(sctx, 0);
    SSL *client_a, *server_a, *client_b, *server_b;
    pair(cctx, sctx, &client_a, &server_a);
    pair(cctx, sctx, &client_b, &server_b);
    printf("client_a=%p\nserver_a=%p\nclient_b=%p\nserver_b=%p\n", (void *)client_a,
           (void *)server_a, (void *)client_b, (void *)server_b);

    int negative = SSL_write(client_a, request, -1);
    printf("write_negative=%d\n", negative);
    ERR_clear_error();

    nested_client = client_b;
    SSL_set_msg_callback(server_a, on_message);
    write_all(client_a, request, request_size);
    server_reading = 1;
    read_all(server_a, request, request_size);
    server_reading = 0;
    printf("nested=%d\n", nested_done);

    write_all(client_a, big, big_size);
    read_all(server_a, big, big_size);
    write_all(server_a, response, response_size);
    read_all(client_a, response, response_size);
    read_all(server_b, nested_data, nested_size);

    SSL_shutdown(client_a);
    unsigned char byte;
    int at_close = SSL_read(server_a, &byte, 1);
    printf("read_at_close=%d\n", at_close);
    return 0;
}

/*
 * short_conns: many short TLS connections from one process, one after another, as a client
 * that polls a service does. Connection i connects to HOST:PORT, does a TLS 1.2 handshake (no
 * certificate check; resuming the previous session, so that the handshakes cost little and
 * the test's 100,000 connections take a minute or two), sends "GET PATH HTTP/1.0" with the
 * header "X-Conn: i", reads the response to the server's close and ends the connection
 * with SSL_free and close(2), the socket reset (SO_LINGER 0) so that no port waits in
 * TIME_WAIT. What each connection sent and received is appended to LOG, the test's oracle:
 * per connection, u32 index, u32 sent length, the bytes, u32 received length, the bytes
 * (little-endian). OpenSSL is dynamically linked (libssl.so.3), so uprobes on it fire.
 *
 * Usage: short_conns HOST PORT PATH COUNT LOG
 * Exit status: 0 when every connection got a response, 1 otherwise.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int put(FILE *log, const void *bytes, uint32_t length) {
    return fwrite(&length, 4, 1, log) == 1 && fwrite(bytes, 1, length, log) == length;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: short_conns HOST PORT PATH COUNT LOG\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    const char *host = argv[1], *path = argv[3];
    int port = atoi(argv[2]);
    long count = atol(argv[4]);
    FILE *log = fopen(argv[5], "wb");
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || !log)
        return 1;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    SSL_SESSION *session = NULL;
    static char received[1 << 20];
    for (long i = 0; i < count; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
        if (fd < 0 || inet_pton(AF_INET, host, &addr.sin_addr) != 1 ||
            connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
            fprintf(stderr, "short_conns: connection %ld: connect failed\n", i);
            return 1;
        }
        SSL *ssl = SSL_new(ctx);
        if (!ssl || !SSL_set_fd(ssl, fd) || (session && !SSL_set_session(ssl, session)) ||
            SSL_connect(ssl) != 1) {
            fprintf(stderr, "short_conns: connection %ld: handshake failed\n", i);
            return 1;
        }
        char request[512];
        int length =
            snprintf(request, sizeof request, "GET %s HTTP/1.0\r\nX-Conn: %ld\r\n\r\n", path, i);
        if (SSL_write(ssl, request, length) != length) {
            fprintf(stderr, "short_conns: connection %ld: write failed\n", i);
            return 1;
        }
        size_t got = 0;
        for (;;) {
            int n = SSL_read(ssl, received + got, (int)(sizeof received - got));
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        if (got == 0) {
            fprintf(stderr, "short_conns: connection %ld: no response\n", i);
            return 1;
        }
        SSL_SESSION *next = SSL_get1_session(ssl);
        if (next) {
            SSL_SESSION_free(session);
            session = next;
        }
        uint32_t index = (uint32_t)i;
        if (fwrite(&index, 4, 1, log) != 1 || !put(log, request, (uint32_t)length) ||
            !put(log, received, (uint32_t)got))
            return 1;
        struct linger reset = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
        SSL_free(ssl);
        close(fd);
    }
    return fclose(log) == 0 ? 0 : 1;
}

/*
 * churn_client: short processes that leave their TLS connection open when they die, the churn
 * a system-wide tracer sees on a busy host. The parent forks COUNT children one after another;
 * each connects to HOST:PORT, does a TLS handshake (no certificate check), sends
 * "GET PATH HTTP/1.1", reads READ bytes of the response with SSL_read and exits at once with
 * _exit(0): no SSL_shutdown, no SSL_free, no close. OpenSSL is dynamically linked (libssl.so.3),
 * so that uprobes on it fire.
 *
 * Usage: churn_client HOST PORT PATH COUNT READ
 * Exit status: 0 when every child read its bytes, 1 otherwise.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int child(SSL_CTX *ctx, const char *host, int port, const char *path, long want) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (fd < 0 || inet_pton(AF_INET, host, &addr.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        return 1;
    SSL *ssl = SSL_new(ctx);
    if (!ssl || !SSL_set_fd(ssl, fd) || SSL_connect(ssl) != 1)
        return 1;
    char request[512];
    int length = snprintf(request, sizeof request,
                          "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: keep-alive\r\n\r\n", path, host);
    if (SSL_write(ssl, request, length) != length)
        return 1;
    char buffer[16384];
    long got = 0;
    while (got < want) {
        long room = want - got < (long)sizeof buffer ? want - got : (long)sizeof buffer;
        int n = SSL_read(ssl, buffer, (int)room);
        if (n <= 0)
            return 1;
        got += n;
    }
    /* Dies with the connection open: the kernel closes the socket, the library never ends it. */
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: churn_client HOST PORT PATH COUNT READ\n");
        return 1;
    }
    const char *host = argv[1], *path = argv[3];
    int port = atoi(argv[2]);
    long count = atol(argv[4]), want = atol(argv[5]);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return 1;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    long failed = 0;
    for (long i = 0; i < count; i++) {
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid == 0)
            _exit(child(ctx, host, port, path, want));
        int status = 0;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    if (failed) {
        fprintf(stderr, "churn_client: %ld of %ld children failed\n", failed, count);
        return 1;
    }
    return 0;
}

"""Forks N children; each opens a TLS connection to 127.0.0.1:PORT, sends one request, reads
a little of the answer, and exits at once (os._exit): no close(), no SSL_free. The kernel
closes their sockets at exit, which no close(2) tells. The parent reaps each child before
starting the next. Usage: exit_without_close.py PORT N TAG"""
import os
import socket
import ssl
import sys

port, count, tag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
for index in range(count):
    child = os.fork()
    if child == 0:
        tls = context.wrap_socket(socket.create_connection(("127.0.0.1", port)))
        tls.sendall(f"GET /{tag}/{index} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        tls.recv(10)
        os._exit(0)
    os.waitpid(child, 0)
print("done", flush=True)

"""Makes the kernel reuse a pid for a second TLS client: child A opens a TLS connection to
127.0.0.1:PORT, sends "GET /TAG/A", reads a little and exits at once (no close, no SSL_free);
then children are forked with /proc/sys/kernel/ns_last_pid set just below A's pid until one gets
A's pid (B), which does the same with "GET /TAG/B". Both start from the same parent state, so
their SSL* handles are likely equal too: the same (pid, handle) names two connections, one
after the other. Prints "pids A B". Usage: pid_reuse.py PORT TAG (as root)."""
import os
import socket
import ssl
import sys

port, tag = int(sys.argv[1]), sys.argv[2]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE


def client(name):
    tls = context.wrap_socket(socket.create_connection(("127.0.0.1", port)))
    tls.sendall(f"GET /{tag}/{name} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    tls.recv(10)
    os._exit(0)


first = os.fork()
if first == 0:
    client("A")
os.waitpid(first, 0)
for _ in range(5000):
    with open("/proc/sys/kernel/ns_last_pid", "w") as last:
        last.write(str(first - 1))
    child = os.fork()
    if child == 0:
        if os.getpid() == first:
            client("B")
        os._exit(0)
    os.waitpid(child, 0)
    if child == first:
        print(f"pids {first} {child}", flush=True)
        sys.exit(0)
print("no reuse", flush=True)
sys.exit(1)

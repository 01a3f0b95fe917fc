"""A TLS client with exactly known bytes: sends REQUEST_FILE's bytes, reads until the server
closes, writes what it received to OUT_FILE. With --hold, waits for a line on stdin before
connecting (so a tracer can attach first) and before exiting. With --hold-connected, connects
(TCP and TLS handshake) first, prints "connected <local port>", then waits for a line on stdin
before sending (a connection that exists before the tracer starts). With --linger, creates
OUT_FILE.done once OUT_FILE is written and then sleeps until a signal ends it (a long-running
command)."""
import signal
import socket
import ssl
import sys


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    hold = "--hold" in sys.argv
    hold_connected = "--hold-connected" in sys.argv
    host, port, request_file, out_file = args[0], int(args[1]), args[2], args[3]
    request = open(request_file, "rb").read()
    if hold:
        print("ready", flush=True)
        sys.stdin.readline()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port)) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            if hold_connected:
                print("connected", tls.getsockname()[1], flush=True)
                sys.stdin.readline()
            tls.sendall(request)
            received = bytearray()
            while True:
                try:
                    data = tls.recv(65536)
                except (ssl.SSLZeroReturnError, ConnectionResetError):
                    break
                if not data:
                    break
                received += data
    with open(out_file, "wb") as out:
        out.write(received)
    if hold:
        print("done", flush=True)
        sys.stdin.readline()
    if "--linger" in sys.argv:
        open(out_file + ".done", "wb").close()
        while True:
            signal.pause()


if __name__ == "__main__":
    main()

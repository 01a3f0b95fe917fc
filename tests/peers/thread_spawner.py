"""Maps libssl (import ssl) and starts a second thread, then prints "ready". On a line from
stdin, that thread (not the main one, and created before any tracer attached) runs the TLS
client (tls_client.py, with the arguments given here) as a child process; then the program
prints "done STATUS" and exits when stdin closes."""
import os
import ssl  # noqa: F401  (maps libssl before the tracer attaches)
import subprocess
import sys
import threading

client = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tls_client.py")
status = []


def work():
    sys.stdin.readline()
    status.append(subprocess.run([sys.executable, client, *sys.argv[1:]]).returncode)


worker = threading.Thread(target=work)
worker.start()
print("ready", flush=True)
worker.join()
print("done", status[0] if status else "none", flush=True)
sys.stdin.read()

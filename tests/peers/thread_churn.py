"""Starts and joins THREADS short-lived threads, then forks a child that runs the TLS client
(tls_client.py's main) with the remaining arguments. Exits with the child's status.
Usage: thread_churn.py THREADS HOST PORT REQUEST_FILE OUT_FILE"""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tls_client  # noqa: E402


def main():
    count = int(sys.argv[1])
    for _ in range(count):
        thread = threading.Thread(target=lambda: None)
        thread.start()
        thread.join()
    child = os.fork()
    if child == 0:
        sys.argv = [sys.argv[0]] + sys.argv[2:]
        try:
            tls_client.main()
        finally:
            os._exit(0)
    _, status = os.waitpid(child, 0)
    print("child", child, flush=True)
    sys.exit(os.waitstatus_to_exitcode(status))


main()

"""Imports ssl (and so dlopens libssl) only after a delay, then, three seconds later, runs one
TLS exchange like tls_client.py. Run it with LD_LIBRARY_PATH pointing at a private copy of
libssl to load the library from an unusual path. The three seconds between loading and using the
library are longer than probectl needs to attach it on a busy machine (it reports how long it
took): calls made in that window would not be captured.
Usage: late_import.py DELAY_S HOST PORT REQUEST_FILE OUT_FILE"""
import sys
import time

print("started", flush=True)
time.sleep(float(sys.argv[1]))
import os  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tls_client  # noqa: E402  (imports ssl: libssl is mapped now)

time.sleep(3)

sys.argv = [sys.argv[0]] + sys.argv[2:]
tls_client.main()

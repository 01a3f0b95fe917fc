#!/usr/bin/env python3
"""Writes the committed seed corpora of the fuzz targets into fuzz/seeds/<target>/.

Run from anywhere: `fuzz/make_seeds.py` (python3 stdlib only). It rewrites the seeds of the
targets whose inputs have a format of their own, from real traffic shapes:
  http1     call streams (see fuzz/src/lib.rs): the HTTP/1 exchanges of the decoder tests
            (keep-alive, chunked with trailers, pipelining, 100-continue, upgrade, a body to
            the close, gzip, a gap), as a client and as a server sees them;
  http2     call streams of compact frames (see fuzz_targets/http2.rs): RFC 7541's request
            and response blocks in HEADERS, padding, CONTINUATION, trailers, gRPC, RST_STREAM,
            GOAWAY, PUSH_PROMISE, a connection joined mid-stream;
  hpack     header blocks of hpack-test-case stories (pipeline/src/decode/http/testdata);
  pipeline  recordings of ring buffer records, as the pipeline tests build them: connection,
            chunk, close, exit, exec and map records (ChunkHeader and the others, packed as
            probectl-common lays them out) carrying HTTP/1 and HTTP/2 exchanges;
  replay    the pipeline seeds as recording files (start, attach, record, tick and end frames),
            one cut short, one without ticks;
  spec      probes.toml, and each of its groups alone.
The `grpc` and `pcapng` targets read their input with `arbitrary`; their seeds are the 8
largest inputs of a fuzzing run's corpus after `-merge=1` (libFuzzer's minimisation), kept as
they are (this script leaves them alone).
"""
import glob
import gzip
import json
import os
import re
import shutil
import struct

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)
SEEDS = os.path.join(FUZZ, "seeds")


def write(target, name, data):
    path = os.path.join(SEEDS, target, name)
    with open(path, "wb") as handle:
        handle.write(data)


def reset(target):
    shutil.rmtree(os.path.join(SEEDS, target), ignore_errors=True)
    os.makedirs(os.path.join(SEEDS, target))


# ----------------------------------------------------------------------- call streams

READ, CONN2, LOST, UNCAPTURED, CLOSE = 1, 2, 4, 8, 16
# Options byte: format (0 text, 1 hex, 2 JSON), max_body (bit 2 and bit 7), close at end (bit 3),
# free bits 4..6.
JSON_1M_CLOSE = 0x2 | 0x4 | 0x80 | 0x8
TEXT_4K = 0x0 | 0x4
HEX_16 = 0x1 | 0x80


def stream(options, calls):
    out = bytes([options])
    for control, data in calls:
        out += bytes([control]) + struct.pack(">H", len(data)) + data
    return out


def write_calls(data):
    return (0, data)


def read_calls(data):
    return (READ, data)


H1 = {
    "keep-alive-chunked-trailers": [
        (0, b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\nX-Sum: 1\r\n\r\n"),
        (READ, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nxyz"),
        (0, b"GET /g HTTP/1.1\r\nHost: h\r\n\r\n"),
        (READ, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nrest"),
    ],
    "pipelined": [
        (0, b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nHEAD /3 HTTP/1.1\r\nHost: h\r\n\r\n"),
        (READ, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        (READ, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
    ],
    "expect-100-continue": [
        (0, b"PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"),
        (READ, b"HTTP/1.1 100 Continue\r\n\r\n"),
        (0, b"hello"),
        (READ, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
    ],
    "upgrade-websocket": [
        (0, b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
        (READ, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi"),
        (0, b"\x81\x82abcd\x09\x0b"),
    ],
    "body-until-close": [
        (0, b"GET /old HTTP/1.0\r\n\r\n"),
        (READ, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"),
        (READ | CLOSE, b" until the end"),
    ],
    "gzip-and-cut": [
        (0, b"GET /z HTTP/1.1\r\nHost: example\r\nAccept-Encoding: gzip\r\n\r\n"),
        (READ, b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gzip.compress(b"hello hello hello", mtime=0)) + gzip.compress(b"hello hello hello", mtime=0)),
        (0, b"GET /cut HTTP/1.1\r\nHost: example\r\n\r\n"),
    ],
    "gap-and-resync": [
        (0, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"),
        (READ | UNCAPTURED, b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n0123456789"),
        (0 | LOST, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"),
        (READ, b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"),
    ],
    "server-side": [
        (READ, b"POST /api HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"),
        (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"),
        (0, b"0\r\n\r\n"),
        (CONN2 | READ, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
        (CONN2, b"HTTP/1.1 204 No Content\r\n\r\n"),
    ],
}


def http1():
    reset("http1")
    for name, calls in H1.items():
        write("http1", name, stream(JSON_1M_CLOSE, calls))
    write("http1", "keep-alive-text", stream(TEXT_4K, H1["keep-alive-chunked-trailers"]))
    write("http1", "pipelined-hex", stream(HEX_16, H1["pipelined"]))


# ----------------------------------------------------------------------- HTTP/2

DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = range(10)
RAW = 0xFF


def hexbytes(text):
    return bytes.fromhex(text.replace(" ", ""))


def literal(fields):
    """A header block of literal fields without indexing (short names and values)."""
    out = b""
    for name, value in fields:
        out += b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
    return out


def compact(kind, flags, stream_id, payload):
    return bytes([kind, flags, stream_id]) + struct.pack(">H", len(payload)) + payload


def frame(kind, flags, stream_id, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


PREFACE_SETTINGS = 0x10 | 0x20  # the options' free bits: client preface and server SETTINGS


def grpc_message(data):
    return b"\x00" + struct.pack(">I", len(data)) + data


def http2():
    reset("http2")
    options = JSON_1M_CLOSE | PREFACE_SETTINGS
    # The RFC 7541 C.4 requests and C.6 responses, as in the decoder tests.
    client = (compact(HEADERS, 0x5, 1, hexbytes("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))
              + compact(HEADERS, 0x4, 3, hexbytes("8286 84be 5886 a8eb 1064 9cbf"))
              + compact(DATA, 0x9, 3, b"\x02hi\x00\x00"))
    server = (compact(HEADERS, 0x4, 1, hexbytes(
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b "
        "ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3"))
        + compact(DATA, 0x1, 1, b"body")
        + compact(HEADERS, 0x5, 3, hexbytes("4883 640e ffc1 c0bf")))
    write("http2", "rfc7541-requests-responses", stream(options, [(0, client), (READ, server)]))
    # A header block split into HEADERS + CONTINUATION, with priority and padding; trailers.
    block = literal([(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/upload"),
                     (b":authority", b"example.com"), (b"content-type", b"text/plain")])
    headers_payload = b"\x03" + b"\x00\x00\x00\x00" + b"\x10" + block[:20] + b"\x00\x00\x00"
    client = (compact(HEADERS, 0x8 | 0x20, 1, headers_payload)
              + compact(CONT, 0x4, 1, block[20:])
              + compact(DATA, 0x0, 1, b"part one ")
              + compact(HEADERS, 0x5, 1, literal([(b"x-checksum", b"abc")])))
    server = (compact(SETTINGS, 0x1, 0, b"")
              + compact(HEADERS, 0x4, 1, literal([(b":status", b"200"), (b"content-length", b"2")]))
              + compact(DATA, 0x1, 1, b"ok")
              + compact(PING, 0x0, 0, b"12345678")
              + compact(WINDOW, 0x0, 0, struct.pack(">I", 65536)))
    write("http2", "continuation-padding-trailers", stream(options, [(0, client), (READ, server)]))
    # gRPC: unary call with trailers.
    request = literal([(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/helloworld.Greeter/SayHello"),
                       (b":authority", b"localhost:50051"), (b"content-type", b"application/grpc"), (b"te", b"trailers")])
    client = compact(HEADERS, 0x4, 1, request) + compact(DATA, 0x1, 1, grpc_message(b"\x0a\x05world"))
    server = (compact(HEADERS, 0x4, 1, literal([(b":status", b"200"), (b"content-type", b"application/grpc")]))
              + compact(DATA, 0x0, 1, grpc_message(b"\x0a\x0bHello world"))
              + compact(HEADERS, 0x5, 1, literal([(b"grpc-status", b"0"), (b"grpc-message", b"OK%20done")])))
    write("http2", "grpc-unary", stream(options, [(0, client), (READ, server)]))
    # Reset, push promise, GOAWAY; the response split over two reads (a raw cut inside a frame).
    whole = frame(HEADERS, 0x4, 1, literal([(b":status", b"200")])) + frame(DATA, 0x1, 1, b"pushed?")
    client = (compact(HEADERS, 0x5, 1, hexbytes("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))
              + compact(HEADERS, 0x5, 3, literal([(b":method", b"GET"), (b":path", b"/x")]))
              + compact(RST, 0x0, 3, struct.pack(">I", 8)))
    server = (compact(PUSH, 0x4, 1, struct.pack(">I", 2) + literal([(b":method", b"GET"), (b":path", b"/style.css"),
                                                                  (b":scheme", b"https"), (b":authority", b"a")]))
              + compact(RAW, 0, 0, whole[:13]))
    server2 = (compact(RAW, 0, 0, whole[13:])
               + compact(HEADERS, 0x5, 2, literal([(b":status", b"200")]))
               + compact(GOAWAY, 0x0, 0, struct.pack(">II", 1, 0) + b"bye"))
    write("http2", "push-reset-goaway-cut", stream(options, [(0, client), (READ, server), (READ, server2)]))
    # Joined mid-stream: no preface, dynamic table references unknown, a table size update.
    client = (compact(HEADERS, 0x5, 7, hexbytes("3fe11f 82 be 40 05 782d 6e65 77 01 31 be"))
              + compact(DATA, 0x1, 9, b"late data"))
    server = compact(HEADERS, 0x5, 7, hexbytes("88 c0"))
    write("http2", "joined-mid-stream", stream(JSON_1M_CLOSE, [(0, client), (READ, server)]))
    # Text rendering of the first one, with a small max body.
    write("http2", "rfc7541-text", stream(TEXT_4K | PREFACE_SETTINGS, [(0, compact(HEADERS, 0x5, 1, hexbytes("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))),
                                                                          (READ, compact(HEADERS, 0x4, 1, hexbytes("4882 6402")) + compact(DATA, 0x1, 1, b"x" * 40))]))


# ----------------------------------------------------------------------- HPACK

def hpack():
    reset("hpack")
    testdata = os.path.join(ROOT, "pipeline/src/decode/http/testdata/hpack-test-case")
    picks = [("nghttp2", "story_00", 0, 0xFFFF), ("nghttp2", "story_02", 0, 200),
             ("nghttp2-change-table-size", "story_00", 0, 0xFFFF), ("go-hpack", "story_03", 0, 0xFFFF),
             ("python-hpack", "story_24", 0, 1000), ("haskell-http2-naive-huffman", "story_01", 0, 0xFFFF),
             ("swift-nio-hpack-huffman", "story_02", 0, 0xFFFF), ("node-http2-hpack", "story_02", 1, 0xFFFF)]
    for encoder, story, joined, limit in picks:
        with open(os.path.join(testdata, encoder, story + ".json")) as handle:
            cases = json.load(handle)["cases"][:12]
        if joined:
            cases = cases[3:]  # joined after the start: the first blocks' entries are unknown
        blocks = [bytes.fromhex(case["wire"]) for case in cases]
        data = bytes([joined]) + struct.pack(">H", limit) + bytes([len(blocks)])
        for block in blocks:
            data += struct.pack(">H", len(block)) + block
        write("hpack", f"{encoder}-{story}" + ("-joined" if joined else ""), data)


# ----------------------------------------------------------------------- pipeline

CHUNK, CONNECTION, CLOSE_RECORD, EXEC, MAP, EXIT = 1, 2, 3, 4, 5, 6
LAST, READ_FAULT = 1, 2
FD_CLOSED, HANDLE_ENDED = 0, 1
INET, INET6 = 2, 10
PID = 100


def chunk(attach, tid, handle, start_ns, call_len, offset, stream_offset, data, last=True, fd=5, flags=0):
    header = struct.pack("<IIQQQQQQIIIIii16s", CHUNK, flags | (LAST if last else 0), start_ns, start_ns + 1,
                         handle, call_len, offset, stream_offset, PID, tid, attach, len(data), fd, 0, b"curl")
    assert len(header) == 96
    return header + data


def connection(handle, local_port, family=INET, flags=0):
    local = bytes([127, 0, 0, 1]) + bytes(12) if family == INET else bytes(15) + b"\x01"
    record = struct.pack("<IIiHHQQQ16s16sHHI", CONNECTION, PID, 5, family, 1, handle, 4242, 7,
                         local, local, local_port, 443, flags)
    assert len(record) == 80
    return record


def close(handle, cause, position):
    return struct.pack("<IIiIQQQQ", CLOSE_RECORD, PID, 5 if cause == FD_CLOSED else -1, cause, handle, 99,
                       position[0], position[1])


def process(kind, pid):
    return struct.pack("<IIQ", kind, pid, 99)


RECORDINGS = []  # (name, options, records) of every pipeline seed, for the replay seeds


def recording(options, records, name=None):
    RECORDINGS.append((name, options, records))
    out = bytes([options])
    for record in records:
        out += struct.pack(">H", len(record)) + record
    return out


# The recording file (pipeline/src/capture/recording.rs): magic, format version, then frames
# `kind: u8, length: u32 LE, payload`; start, attach and end payloads are JSON.
MAGIC = b"probectl-recording\n"
START_FRAME, ATTACH_FRAME, RECORD_FRAME, TICK_FRAME, END_FRAME = 1, 2, 3, 4, 5


def recording_file(records, max_capture=1 << 20, ticks=True, end=True):
    def frame(kind, payload):
        return bytes([kind]) + struct.pack("<I", len(payload)) + payload

    def attach(function, direction):
        return {"plugin": "openssl", "library": "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                "function": function, "direction": direction}

    out = MAGIC + struct.pack("<I", 1)
    out += frame(START_FRAME, json.dumps({"probectl": "0.1.0", "clock_offset": 1_700_000_000_000_000_000,
                                          "max_capture_bytes": max_capture, "kernel": "6.1.0"}).encode())
    out += frame(ATTACH_FRAME, json.dumps([0, [attach("SSL_write", "write"), attach("SSL_read", "read")]]).encode())
    for index, record in enumerate(records):
        out += frame(RECORD_FRAME, record)
        if ticks:
            out += frame(TICK_FRAME, struct.pack("<Q", (index + 1) * 100_000_000))
    if end:
        out += frame(END_FRAME, json.dumps({
            "open_positions": [[[PID, 0xabc], [10, 20]]], "kernel": {"chunks_lost": 1}, "probes_attached": 2,
            "attach_failures": 0, "swept": {}, "command_code": 0, "command_signal": None,
            "memory": {"peak_rss_kib": 150000}}).encode())
    return out


def replay():
    reset("replay")
    # Options byte: bits 0-1 the format (JSON, text, hex, pcapng), bit 2 --decode http.
    formats = {0: 0, 1: 1, 2: 4, 3: 3}  # the pipeline seed's writer -> the replay's options
    for name, options, records in RECORDINGS:
        write("replay", name, bytes([formats[options & 3]]) + recording_file(records, 64 if options & 4 else 1 << 20))
    name, options, records = RECORDINGS[0]
    write("replay", name + "-cut-short", bytes([0]) + recording_file(records, end=False)[:-7])
    write("replay", name + "-hex-no-ticks", bytes([2]) + recording_file(records, ticks=False))


def pipeline():
    reset("pipeline")
    request = b"GET /a.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 6\r\n\r\nhello\n"
    curl = [connection(0xabc, 40000), chunk(0, 7, 0xabc, 10, len(request), 0, 0, request),
            chunk(1, 7, 0xabc, 20, len(response), 0, 0, response),
            close(0xabc, FD_CLOSED, [len(request), len(response)])]
    for options, name in [(0, "json"), (1, "text"), (2, "http"), (3, "pcapng")]:
        write("pipeline", f"curl-{name}", recording(options, curl, f"curl-{name}"))
    # A call whose fd comes after it (a buffering library), another connection meanwhile.
    write("pipeline", "fd-after-the-call", recording(2, name="fd-after-the-call", records=[
        chunk(0, 7, 0xabc, 10, len(request), 0, 0, request, fd=-1),
        chunk(1, 8, 0xdef, 15, 2, 0, 0, b"hi"),
        connection(0xabc, 40000),
        chunk(1, 7, 0xabc, 20, len(response), 0, 0, response),
        chunk(0, 9, 0x123, 30, 4, 0, 0, b"POST", fd=-1)]))
    # A call cut in chunks, its middle one lost; a call over the capture limit; a read fault.
    write("pipeline", "chunks-lost-and-truncated", recording(4, name="chunks-lost-and-truncated", records=[
        connection(0xabc, 40000, family=INET6),
        chunk(1, 7, 0xabc, 10, 30, 0, 50, b"0123456789", last=False),
        chunk(1, 7, 0xabc, 10, 30, 20, 50, b"abcdefghij"),
        chunk(0, 7, 0xabc, 40, 100, 0, 0, b"x" * 64),
        chunk(0, 7, 0xabc, 50, 8, 0, 100, b"", flags=READ_FAULT),
        close(0xabc, FD_CLOSED, [200, 400])]))
    # Memory BIOs: one handle, two connections (the lifecycle function ends the first); exit.
    write("pipeline", "handle-ended-exit-exec-map", recording(0, name="handle-ended-exit-exec-map", records=[
        chunk(1, 7, 0xabc, 10, 3, 0, 0, b"GET"), chunk(0, 7, 0xabc, 20, 2, 0, 0, b"OK"),
        close(0xabc, HANDLE_ENDED, [2, 3]), chunk(1, 7, 0xabc, 30, 4, 0, 0, b"POST"),
        process(EXEC, 7), process(MAP, 8), chunk(0, 7, 0xdef, 40, 4, 0, 0, b"POST"),
        process(EXIT, PID), chunk(0, 7, 0xabc, 50, 2, 0, 0, b"OK"),
        chunk(0, 7, 0xabc, 60, 5, 0, 0, b"again")]))
    # Per-direction handles on one fd (a record layer), and an unknown attach id.
    write("pipeline", "per-direction-handles", recording(0, name="per-direction-handles", records=[
        chunk(0, 7, 0xa, 10, 3, 0, 0, b"GET", fd=-1), connection(0xa, 40000, flags=1),
        connection(0xb, 40000, flags=1), chunk(1, 7, 0xb, 20, 2, 0, 0, b"OK"),
        chunk(0, 7, 0xa, 30, 4, 0, 3, b" /x\n"), chunk(9, 7, 0xa, 35, 1, 0, 7, b"?"),
        close(0xb, FD_CLOSED, [0, 2])]))
    # HTTP/2 through the pipeline to the decoder.
    client = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0, b"")
              + frame(HEADERS, 0x5, 1, hexbytes("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")))
    server = (frame(SETTINGS, 0, 0, b"") + frame(HEADERS, 0x4, 1, hexbytes("4882 6402"))
              + frame(DATA, 0x1, 1, b"hello\n"))
    write("pipeline", "http2-curl", recording(2, name="http2-curl", records=[
        connection(0xabc, 40000), chunk(0, 7, 0xabc, 10, len(client), 0, 0, client),
        chunk(1, 7, 0xabc, 20, len(server), 0, 0, server), close(0xabc, FD_CLOSED, [len(client), len(server)])]))


# ----------------------------------------------------------------------- spec

def spec():
    reset("spec")
    with open(os.path.join(ROOT, "probes.toml"), "rb") as handle:
        text = handle.read()
    write("spec", "probes.toml", text)
    groups = re.split(rb"(?m)^(?=\[\[group\]\]$)", text)
    for group in groups[1:]:
        name = re.search(rb'name = "([^"]+)"', group).group(1).decode()
        write("spec", f"group-{name}.toml", group)


def main():
    http1()
    http2()
    hpack()
    pipeline()
    replay()
    spec()
    for target in sorted(os.listdir(SEEDS)):
        files = glob.glob(os.path.join(SEEDS, target, "*"))
        print(f"{target}: {len(files)} seeds, {sum(os.path.getsize(f) for f in files)} bytes")


if __name__ == "__main__":
    main()

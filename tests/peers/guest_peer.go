// The TLS peer and checker of scripts/kernels' arm64 guest (scripts/kernels-arm64), built with
// Debian's Go for GOARCH=arm64 (no cgo: a static executable, nothing else to copy into the
// guest). Plain crypto/tls over TCP, no HTTP library, so that what each side sent and received
// is recorded byte for byte: those records are the oracle a capture is compared with.
//
//	guest_peer server PORT DIR      serves TLS on 127.0.0.1:PORT with a certificate it makes;
//	                                per connection N (1, 2, ...) reads a request head (up to
//	                                "\r\n\r\n"), answers with a fixed response, and writes
//	                                DIR/N.in (what it received) and DIR/N.out (what it sent);
//	                                writes DIR/ready once listening
//	guest_peer client PORT PREFIX   sends a request, reads the response to EOF; writes
//	                                PREFIX.sent and PREFIX.recv
//	guest_peer compare EVENTS DIRECTION FILE [LIBRARY]
//	                                joins the data of probectl's `--format json` events of that
//	                                direction, in order, and compares it with FILE's bytes;
//	                                with LIBRARY, each of those events must also come from that
//	                                file (its "library"); prints "compare DIRECTION FILE: ok N
//	                                bytes" or a FAIL line (exit 1)
package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "guest_peer:", err)
		os.Exit(1)
	}
}

// response is the server's answer: a head and a body of several TLS records (20,000 bytes).
func response() []byte {
	body := make([]byte, 20000)
	for i := range body {
		body[i] = "abcdefghijklmnopqrstuvwxyz0123456789\n"[i%37]
	}
	head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(body))
	return append([]byte(head), body...)
}

func certificate() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	template := x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, &template, &template, &key.PublicKey, key)
	must(err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func server(port, dir string) {
	config := &tls.Config{Certificates: []tls.Certificate{certificate()}}
	listener, err := tls.Listen("tcp", "127.0.0.1:"+port, config)
	must(err)
	must(os.WriteFile(filepath.Join(dir, "ready"), nil, 0o644))
	for n := 1; ; n++ {
		conn, err := listener.Accept()
		must(err)
		reader := bufio.NewReader(conn)
		var received []byte
		for !bytes.HasSuffix(received, []byte("\r\n\r\n")) {
			b, err := reader.ReadByte()
			if err != nil {
				break
			}
			received = append(received, b)
		}
		sent := response()
		_, err = conn.Write(sent)
		conn.Close()
		if err != nil {
			sent = nil
		}
		must(os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d.in", n)), received, 0o644))
		must(os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d.out", n)), sent, 0o644))
	}
}

func client(port, prefix string) {
	conn, err := tls.Dial("tcp", "127.0.0.1:"+port, &tls.Config{InsecureSkipVerify: true})
	must(err)
	request := []byte("GET /go-client HTTP/1.1\r\nHost: 127.0.0.1:" + port + "\r\nUser-Agent: guest_peer\r\n\r\n")
	_, err = conn.Write(request)
	must(err)
	received, err := io.ReadAll(conn)
	must(err)
	must(os.WriteFile(prefix+".sent", request, 0o644))
	must(os.WriteFile(prefix+".recv", received, 0o644))
}

func compare(events, direction, file, library string) {
	text, err := os.ReadFile(events)
	must(err)
	var joined []byte
	var elsewhere []string
	for _, line := range strings.Split(string(text), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var event struct {
			Direction string `json:"direction"`
			Data      string `json:"data_b64"`
			Library   string `json:"library"`
		}
		must(json.Unmarshal([]byte(line), &event))
		if event.Direction != direction {
			continue
		}
		if library != "" && event.Library != library {
			elsewhere = append(elsewhere, event.Library)
		}
		data, err := base64.StdEncoding.DecodeString(event.Data)
		must(err)
		joined = append(joined, data...)
	}
	want, err := os.ReadFile(file)
	must(err)
	if len(want) == 0 || !bytes.Equal(joined, want) {
		fmt.Printf("compare %s %s: FAIL captured %d bytes, the peer's record has %d\n", direction, file, len(joined), len(want))
		os.Exit(1)
	}
	if len(elsewhere) > 0 {
		fmt.Printf("compare %s %s: FAIL %d events from %s, not %s\n", direction, file, len(elsewhere), strings.Join(elsewhere, ", "), library)
		os.Exit(1)
	}
	fmt.Printf("compare %s %s: ok %d bytes\n", direction, file, len(want))
}

func main() {
	args := os.Args[1:]
	switch {
	case len(args) == 3 && args[0] == "server":
		server(args[1], args[2])
	case len(args) == 3 && args[0] == "client":
		client(args[1], args[2])
	case len(args) == 4 && args[0] == "compare":
		compare(args[1], args[2], args[3], "")
	case len(args) == 5 && args[0] == "compare":
		compare(args[1], args[2], args[3], args[4])
	default:
		fmt.Fprintln(os.Stderr, "usage: guest_peer server PORT DIR | client PORT PREFIX | compare EVENTS DIRECTION FILE [LIBRARY]")
		os.Exit(2)
	}
}

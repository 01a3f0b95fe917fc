// A Go TLS client for tests/keylog.rs, built by the test with Debian's Go: connects to
// 127.0.0.1:PORT with crypto/tls, writing its own key log with KeyLogWriter (the oracle),
// sends an HTTP/1.0 request and reads the answer to its end. With ADDRESS_FILE, it writes
// its connection's local address there ("127.0.0.1:PORT"), as the socket told it.
//
//	go_keylog PORT KEYLOG_FILE VERSION [ADDRESS_FILE]    VERSION: 1.2 or 1.3
package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"os"
)

func main() {
	port, keylogPath, version := os.Args[1], os.Args[2], os.Args[3]
	keylog, err := os.OpenFile(keylogPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer keylog.Close()
	tlsVersion := uint16(tls.VersionTLS13)
	if version == "1.2" {
		tlsVersion = tls.VersionTLS12
	}
	config := &tls.Config{
		InsecureSkipVerify: true,
		KeyLogWriter:       keylog,
		MinVersion:         tlsVersion,
		MaxVersion:         tlsVersion,
	}
	conn, err := tls.Dial("tcp", "127.0.0.1:"+port, config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	if len(os.Args) > 4 {
		if err := os.WriteFile(os.Args[4], []byte(conn.LocalAddr().String()), 0600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if _, err := conn.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := io.Copy(io.Discard, conn); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// A Go TLS server for tests/keylog.rs, built by the test with Debian's Go: listens on
// 127.0.0.1:PORT with crypto/tls (no KeyLogWriter: its clients' key logs are the oracle),
// and answers each connection's request with a short HTTP/1.0 response.
//
//	go_keylog_server PORT CERT KEY
package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
)

func main() {
	port, certPath, keyPath := os.Args[1], os.Args[2], os.Args[3]
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	listener, err := tls.Listen("tcp", "127.0.0.1:"+port, &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		conn, err := listener.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			defer conn.Close()
			if _, err := http.ReadRequest(bufio.NewReader(conn)); err != nil {
				return
			}
			conn.Write([]byte("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
		}()
	}
}

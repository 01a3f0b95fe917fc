// A Go HTTPS peer for tests/go.rs, built by the test with Debian's Go. HTTP/1.1 only (TLSNextProto
// set to an empty map on both sides), so the plaintext is the HTTP/1.1 bytes themselves.
//
//	go_https server PORT CERT KEY RESPONSE_FILE   answers every request with RESPONSE_FILE's bytes
//	                                              and records each request body in REQUEST_LOG (env)
//	go_https client PORT POST_FILE OUT_FILE       POSTs POST_FILE to /upload, writes the response body
//	                                              (with GO_HTTPS_WAIT_STDIN set: after a line on stdin)
//	go_https parallel PORT N OUT_FILE             GETs /item/0../item/N-1 from N goroutines over at most
//	                                              5 connections with GOMAXPROCS=2; writes "i local-address"
//	                                              per request (the server answers /item/i with itemBody(i))
//	go_https h2 PORT NAME OUT_FILE                GETs /item/NAME over HTTP/2 (the server started with
//	                                              GO_HTTPS_HTTP2=1 offers it), writes the body
//	go_https blocked PORT N OUT_FILE              opens N TLS connections at once (so that the server
//	                                              has N goroutines blocked in Read), waits a second,
//	                                              then sends "GET /item/i" (Connection: close) on
//	                                              connection i and reads the response to EOF; writes
//	                                              "i local-address request-b64 response-b64" per line
//	go_https deep PORT OUT_FILE                   GETs /deep on a tls.Conn of its own, reading 1000
//	                                              bytes at a time with a deep recursion (stack growth)
//	                                              before each Read; writes all it read to OUT_FILE and
//	                                              prints its length and sha256
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
		ForceAttemptHTTP2: false,
	}}
}

// recurse grows the goroutine's stack: each frame holds a 512-byte array, so depth 2000 needs
// about 1 MiB, far beyond the goroutine's initial 8 KiB: the runtime copies the stack (and every
// return address in it) several times.
func recurse(depth int) int {
	var pad [512]byte
	pad[depth%512] = byte(depth)
	if depth == 0 {
		return int(pad[0])
	}
	return recurse(depth-1) + int(pad[depth%512])
}

// itemBody is the server's answer to /item/NAME: 24 KiB or more, more than one TLS record.
func itemBody(name string) []byte {
	return []byte(strings.Repeat("item "+name+";", 3000))
}

func main() {
	switch os.Args[1] {
	case "server":
		response, err := os.ReadFile(os.Args[5])
		must(err)
		handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if item := strings.TrimPrefix(r.URL.Path, "/item/"); item != r.URL.Path {
				body := itemBody(item)
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				w.Write(body)
				return
			}
			body, err := io.ReadAll(r.Body)
			must(err)
			if log := os.Getenv("REQUEST_LOG"); log != "" {
				f, err := os.OpenFile(log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0600)
				must(err)
				f.Write(body)
				f.Close()
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(response)))
			w.Write(response)
		})
		server := &http.Server{
			Addr:         "127.0.0.1:" + os.Args[2],
			Handler:      handler,
			TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		}
		if os.Getenv("GO_HTTPS_HTTP2") != "" {
			// Go's default: HTTP/2 when the client offers it.
			server.TLSNextProto = nil
		}
		must(server.ListenAndServeTLS(os.Args[3], os.Args[4]))
	case "client":
		if os.Getenv("GO_HTTPS_WAIT_STDIN") != "" {
			// Held until told (a line on stdin): a system-wide trace attaches first.
			_, err := bufio.NewReader(os.Stdin).ReadString('\n')
			must(err)
		}
		post, err := os.ReadFile(os.Args[3])
		must(err)
		response, err := client().Post("https://127.0.0.1:"+os.Args[2]+"/upload",
			"application/octet-stream", bytes.NewReader(post))
		must(err)
		body, err := io.ReadAll(response.Body)
		must(err)
		response.Body.Close()
		must(os.WriteFile(os.Args[4], body, 0600))
	case "parallel":
		runtime.GOMAXPROCS(2)
		count, err := strconv.Atoi(os.Args[3])
		must(err)
		transport := client().Transport.(*http.Transport)
		transport.MaxConnsPerHost = 5
		shared := &http.Client{Transport: transport}
		lines := make(chan string, count)
		for i := 0; i < count; i++ {
			go func(i int) {
				var local string
				trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
					local = info.Conn.LocalAddr().String()
				}}
				request, err := http.NewRequest("GET", fmt.Sprintf("https://127.0.0.1:%s/item/%d", os.Args[2], i), nil)
				must(err)
				request = request.WithContext(httptrace.WithClientTrace(request.Context(), trace))
				response, err := shared.Do(request)
				must(err)
				body, err := io.ReadAll(response.Body)
				must(err)
				response.Body.Close()
				if !bytes.Equal(body, itemBody(strconv.Itoa(i))) {
					must(fmt.Errorf("item %d: wrong body", i))
				}
				lines <- fmt.Sprintf("%d %s", i, local)
			}(i)
		}
		var listing []byte
		for i := 0; i < count; i++ {
			listing = append(listing, (<-lines + "\n")...)
		}
		must(os.WriteFile(os.Args[4], listing, 0600))
	case "blocked":
		count, err := strconv.Atoi(os.Args[3])
		must(err)
		config := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
		conns := make([]*tls.Conn, count)
		for i := range conns {
			conn, err := tls.Dial("tcp", "127.0.0.1:"+os.Args[2], config)
			must(err)
			must(conn.Handshake())
			conns[i] = conn
		}
		// Every server goroutine of these connections is now blocked in Read.
		time.Sleep(time.Second)
		lines := make(chan string, count)
		for i, conn := range conns {
			go func(i int, conn *tls.Conn) {
				request := fmt.Sprintf("GET /item/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", i)
				_, err := conn.Write([]byte(request))
				must(err)
				response, err := io.ReadAll(conn)
				must(err)
				lines <- fmt.Sprintf("%d %s %s %s", i, conn.LocalAddr(),
					base64.StdEncoding.EncodeToString([]byte(request)),
					base64.StdEncoding.EncodeToString(response))
				conn.Close()
			}(i, conn)
		}
		var listing []byte
		for range conns {
			listing = append(listing, (<-lines + "\n")...)
		}
		must(os.WriteFile(os.Args[4], listing, 0600))
	case "h2":
		// Go's default HTTP/2 client (ALPN h2).
		transport := &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			ForceAttemptHTTP2: true,
		}
		response, err := (&http.Client{Transport: transport}).Get("https://127.0.0.1:" + os.Args[2] + "/item/" + os.Args[3])
		must(err)
		if response.ProtoMajor != 2 {
			must(fmt.Errorf("not HTTP/2: %s", response.Proto))
		}
		body, err := io.ReadAll(response.Body)
		must(err)
		must(os.WriteFile(os.Args[4], body, 0600))
	case "deep":
		// A tls.Conn of its own on a fresh goroutine (8 KiB stack): the handshake runs inside
		// the first Write, deep enough to grow the stack while the traced call is in flight.
		done := make(chan []byte)
		go func() {
			raw, err := net.Dial("tcp", "127.0.0.1:"+os.Args[2])
			must(err)
			conn := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			_, err = conn.Write([]byte("GET /deep HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"))
			must(err)
			var received []byte
			buffer := make([]byte, 1000)
			for i := 0; ; i++ {
				recurse(2000)
				if i%16 == 0 {
					// The collector shrinks stacks it finds mostly unused: a stack copy
					// while the next Read is blocked.
					runtime.GC()
				}
				n, err := conn.Read(buffer)
				received = append(received, buffer[:n]...)
				if err == io.EOF {
					break
				}
				must(err)
			}
			conn.Close()
			done <- received
		}()
		received := <-done
		must(os.WriteFile(os.Args[3], received, 0600))
		fmt.Printf("%d %x\n", len(received), sha256.Sum256(received))
	}
}

package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"
)

// poster sends JSON POSTs to one URL over keep-alive HTTP/1.1 connections
// with as little client CPU as it can: the request is one formatted write,
// and the response is read only for its status and length. On two shared
// cores, net/http's client costs about as much as the server being
// measured; this one leaves that CPU to the server, the way a load
// generator on another machine would.
//
// It handles what the relay and Echo answer (Content-Length bodies); a
// chunked or unlengthed response is an error.
type poster struct {
	addr, path, host string
	idle             chan *pconn
}

type pconn struct {
	c   net.Conn
	r   *bufio.Reader
	buf []byte
}

// errUnlengthed: a response without Content-Length (the connection can
// not be reused).
var errUnlengthed = errors.New("response without Content-Length")

func newPoster(rawURL string, maxIdle int) (*poster, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("bench: only http:// targets, not %q", u.Scheme)
	}
	return &poster{addr: u.Host, host: u.Host, path: u.RequestURI(), idle: make(chan *pconn, maxIdle)}, nil
}

// post sends body and returns the response status.
func (p *poster) post(body []byte) (int, error) {
	pc, err := p.get()
	if err != nil {
		return 0, err
	}
	pc.buf = append(pc.buf[:0], "POST "...)
	pc.buf = append(pc.buf, p.path...)
	pc.buf = append(pc.buf, " HTTP/1.1\r\nHost: "...)
	pc.buf = append(pc.buf, p.host...)
	pc.buf = append(pc.buf, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	pc.buf = strconv.AppendInt(pc.buf, int64(len(body)), 10)
	pc.buf = append(pc.buf, "\r\n\r\n"...)
	pc.buf = append(pc.buf, body...)
	_ = pc.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := pc.c.Write(pc.buf); err != nil {
		pc.c.Close()
		return 0, err
	}
	status, reuse, err := readResponse(pc.r)
	if err != nil || !reuse {
		pc.c.Close()
		return status, err
	}
	p.put(pc)
	return status, nil
}

// accept posts body and fails unless the answer is 200.
func (p *poster) accept(body []byte) error {
	status, err := p.post(body)
	if err == nil && status != 200 {
		err = fmt.Errorf("status %d", status)
	}
	return err
}

func (p *poster) get() (*pconn, error) {
	select {
	case pc := <-p.idle:
		return pc, nil
	default:
	}
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		return nil, err
	}
	return &pconn{c: c, r: bufio.NewReaderSize(c, 4096)}, nil
}

func (p *poster) put(pc *pconn) {
	select {
	case p.idle <- pc:
	default:
		pc.c.Close()
	}
}

// close closes the idle connections.
func (p *poster) close() {
	for {
		select {
		case pc := <-p.idle:
			pc.c.Close()
		default:
			return
		}
	}
}

// readResponse reads one response: its status, and whether the connection
// can carry the next request.
func readResponse(r *bufio.Reader) (status int, reuse bool, err error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	if status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	length, reuse := -1, true
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return status, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return status, false, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Connection")) && bytes.EqualFold(value, []byte("close")):
			reuse = false
		}
	}
	if length < 0 && (status == 204 || status == 304) {
		length = 0
	}
	if length < 0 {
		return status, false, errUnlengthed
	}
	if _, err := r.Discard(length); err != nil {
		return status, false, err
	}
	return status, reuse, nil
}

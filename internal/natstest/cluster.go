package natstest

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is a JetStream cluster of in-process nats-servers owned by a
// test; nodes can be stopped and restarted on the same ports and stores.
type Cluster struct {
	t      testing.TB
	mu     sync.Mutex
	nodes  []*server.Server
	opts   []*server.Options
	routes []*url.URL
}

// StartCluster starts n nodes on loopback and waits until JetStream has a
// meta leader. It is shut down when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	var routeURLs []string
	clientPorts, routePorts := make([]int, n), make([]int, n)
	for i := range n {
		clientPorts[i], routePorts[i] = freePort(t), freePort(t)
		routeURLs = append(routeURLs, fmt.Sprintf("nats://127.0.0.1:%d", routePorts[i]))
	}
	c.routes = server.RoutesFromStr(strings.Join(routeURLs, ","))
	for i := range n {
		c.opts = append(c.opts, &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Tags:       jwt.TagList{fmt.Sprintf("node:n%d", i+1)}, // a stream can be placed on one node (Placement.Tags)
			Host:       "127.0.0.1",
			Port:       clientPorts[i],
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoSigs:     true,
			NoLog:      true,
			Cluster:    server.ClusterOpts{Name: "sengo-test", Host: "127.0.0.1", Port: routePorts[i]},
			Routes:     c.routes,
		})
		c.nodes = append(c.nodes, nil)
	}
	for i := range n {
		c.Start(i)
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.Stop(i)
		}
	})
	c.waitJetStream()
	return c
}

// URL lists every node, for nats.Connect.
func (c *Cluster) URL() string {
	var urls []string
	for _, o := range c.opts {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	return strings.Join(urls, ",")
}

// Start (re)starts node i.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes[i] != nil {
		return
	}
	opts := *c.opts[i]
	var s *server.Server
	var err error
	// A port picked as free can be taken for a moment by another test's
	// outgoing connection (same ephemeral range): try again, several times.
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err = server.NewServer(&opts)
		if err == nil {
			s.Start()
			if s.ReadyForConnections(5 * time.Second) {
				break
			}
			s.Shutdown()
			err = fmt.Errorf("node %d not ready", i)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("natstest: start node %d: %v", i, err)
		}
		time.Sleep(50 * time.Millisecond) // retry pacing for the port
	}
	c.nodes[i] = s
}

// Stop shuts node i down (a node failure).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.nodes[i]; s != nil {
		s.Shutdown()
		s.WaitForShutdown()
		c.nodes[i] = nil
	}
}

func (c *Cluster) waitJetStream() {
	c.t.Helper()
	nc, err := nats.Connect(c.URL())
	if err != nil {
		c.t.Fatalf("natstest: connect to cluster: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("natstest: cluster JetStream not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling interval
	}
}

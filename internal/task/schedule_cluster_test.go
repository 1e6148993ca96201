package task

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/testutil"
)

// freePort is a TCP port nobody listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startCluster starts a 3-node JetStream cluster in-process and returns
// its servers.
func startCluster(t *testing.T) []*server.Server {
	t.Helper()
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	var servers []*server.Server
	for i, p := range ports {
		ns, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
			NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "sched", Host: "127.0.0.1", Port: p},
			Routes:  routes,
		})
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("cluster node not ready")
		}
		servers = append(servers, ns)
	}
	return servers
}

// TestSchedulesOnACluster: on three nodes (compose's layout) Provision
// makes SCHEDULES with three replicas, and a schedule ticks there: the
// server's scheduler on a replicated stream, with one message per subject
// and tick TTLs. It keeps ticking when the node that leads the stream (and
// so fires its schedules) is lost: a new leader takes the schedule over.
func TestSchedulesOnACluster(t *testing.T) {
	t.Parallel()
	servers := startCluster(t)
	var urls []string
	for _, ns := range servers {
		urls = append(urls, ns.ClientURL())
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultProvisionConfig()
	cfg.Replicas = 3
	testutil.Eventually(t, 30*time.Second, func() error { // until the cluster has a meta leader
		_, err := Provision(t.Context(), js, cfg)
		return err
	})
	id := NewID()
	msg := nats.NewMsg(ScheduleDefSubject(id))
	msg.Data = []byte(`{}`)
	msg.Header.Set("Nats-Schedule", "@every 1s")
	msg.Header.Set("Nats-Schedule-Target", ScheduleFireSubject(id))
	msg.Header.Set("Nats-Schedule-TTL", ScheduleTickTTL.String())
	if _, err := js.PublishMsg(t.Context(), msg, jetstream.WithExpectLastSequencePerSubject(0)); err != nil {
		t.Fatalf("publish a schedule = %v", err)
	}
	s, err := js.Stream(t.Context(), ScheduleStream)
	if err != nil {
		t.Fatal(err)
	}
	if r := s.CachedInfo().Config.Replicas; r != 3 {
		t.Errorf("replicas = %d, want 3", r)
	}
	// ticks waits for n more ticks of the schedule.
	ticks := func(n int) {
		t.Helper()
		var seqs []uint64
		testutil.Eventually(t, 30*time.Second, func() error {
			m, err := s.GetLastMsgForSubject(t.Context(), ScheduleFireSubject(id))
			if err != nil {
				return err
			}
			if len(seqs) == 0 || seqs[len(seqs)-1] != m.Sequence {
				seqs = append(seqs, m.Sequence)
			}
			if m.Header.Get("Nats-Scheduler") != ScheduleDefSubject(id) || m.Header.Get("Nats-TTL") == "" {
				return fmt.Errorf("tick headers %v", m.Header)
			}
			if len(seqs) < n+1 { // the first seen may be a tick from before
				return fmt.Errorf("ticks %v", seqs)
			}
			return nil
		})
	}
	ticks(3)

	info, err := s.Info(t.Context())
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatalf("stream info = %+v, %v; want its cluster leader", info, err)
	}
	leader := info.Cluster.Leader
	for _, ns := range servers {
		if ns.Name() == leader {
			ns.Shutdown()
			ns.WaitForShutdown()
		}
	}
	testutil.Eventually(t, 30*time.Second, func() error { // a new leader, elected among the two left
		info, err := s.Info(t.Context())
		if err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" || info.Cluster.Leader == leader {
			return fmt.Errorf("leader %+v", info.Cluster)
		}
		return nil
	})
	ticks(3)

	info, err = s.Info(t.Context(), jetstream.WithSubjectFilter(ScheduleFireSubject(id)))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[ScheduleFireSubject(id)]; n != 1 {
		t.Errorf("ticks kept = %d, want 1 (each replaces the one before)", n)
	}
}

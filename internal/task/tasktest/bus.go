package tasktest

import (
	"context"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/task"
)

// NewBus starts an embedded JetStream server, provisions the task
// streams, buckets and registry as `scalelab up` does (without users: the
// caller connects with every right), and returns a connection and the
// function that stops it all. It is for Example functions, which have no
// *testing.T: it exits the program on failure.
func NewBus() (*nats.Conn, func()) {
	dir, err := os.MkdirTemp("", "scalelab-bus")
	if err != nil {
		log.Fatal(err)
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		log.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		log.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		log.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := task.Provision(ctx, js, task.DefaultProvisionConfig()); err != nil {
		log.Fatal(err)
	}
	return nc, func() {
		nc.Close()
		ns.Shutdown()
		ns.WaitForShutdown()
		_ = os.RemoveAll(dir)
	}
}

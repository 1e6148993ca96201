// Command scalelab runs the scalelab platform: any one role
// (gateway, worker, balancer, cachesvc, dbsvc) or all of them in one process
// on an embedded NATS server (scalelab up). Run `scalelab help` for usage.
// The commands live in package cli; main only adds signals and the exit
// code.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/scalelab/scalelab/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "scalelab:", err)
	if errors.Is(err, cli.ErrUsage) {
		os.Exit(2)
	}
	os.Exit(1)
}

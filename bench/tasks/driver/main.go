// Command driver is the load driver of bench/tasks/run.sh.
//
//	driver run    submit N no-op tasks to scalelab's POST /longtask (C at a
//	              time) and time each one from submit to its record
//	              "succeeded", watched on the KV bucket "tasks" over NATS
//	driver natscsv turn a `nats bench --csv` file into one result line
//	driver report  print the Markdown table of medians from the result lines
//	driver freeport print a free TCP port on 127.0.0.1
//
// Every measuring subcommand appends one JSON line (a result) to -out, so
// run.sh can interleave systems and rounds and report at the end.
//
// It is part of the bench/tasks module, not the root one, so the product's
// go.mod stays clean; what it measures the same way as asynqbench (pacing,
// latency percentiles, CPU and syscall costs, the result file) is in
// bench/tasks/internal/measure.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: driver run|natscsv|report|freeport [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runLoad(os.Args[2:])
	case "natscsv":
		err = natsCSV(os.Args[2:])
	case "report":
		err = report(os.Args[2:], os.Stdout)
	case "freeport":
		err = freePort()
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "driver:", err)
		os.Exit(1)
	}
}

// freePort prints a port the kernel just gave out and took back. Another
// process could take it before the caller binds it; on a bench machine
// that is rare enough.
func freePort() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return errors.New("not a TCP address")
	}
	fmt.Println(addr.Port)
	return nil
}

package cli_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/scalelab/scalelab/cli"
)

// Run is the whole program, as main calls it: the command line without the
// program's name, the environment, and the three streams. A test or
// another program runs a command the same way, with its own streams.
func ExampleRun() {
	var out strings.Builder
	err := cli.Run(context.Background(), []string{"help"}, os.Getenv, strings.NewReader(""), &out, io.Discard)
	fmt.Println(err)
	first, _, _ := strings.Cut(out.String(), "\n")
	fmt.Println(first)
	// Output:
	// <nil>
	// scalelab — load balancing, caching and async processing on NATS
}

// A user is added with its password on stdin, as `scalelab users add`
// reads it from a pipe; a bad name is a usage error (exit 2) before
// anything connects.
func ExampleRun_usersAdd() {
	stdin := bufio.NewReader(strings.NewReader("correct horse battery\n"))
	err := cli.Run(context.Background(), []string{"users", "add", "not a name"}, func(string) string { return "" }, stdin, io.Discard, io.Discard)
	fmt.Println(err != nil && strings.HasPrefix(err.Error(), cli.ErrUsage.Error()))
	// Output:
	// true
}

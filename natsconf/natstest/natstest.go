package natstest

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/natsconf"
)

// Start starts a secured embedded server on a random port with a temp
// store, stopped at the end of the test, and returns it with the random
// password of every role.
func Start(t testing.TB) (*server.Server, map[natsconf.Role]string) {
	t.Helper()
	pw, err := natsconf.RandomPasswords()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsconf.StartEmbedded(natsconf.Embedded{Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir(), Passwords: pw}, testutil.QuietLog())
	if err != nil {
		t.Fatalf("start the embedded NATS server: %v", err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns, pw
}

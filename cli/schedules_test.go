package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
)

// scheduleCLI runs `scalelab schedules args...` against p and returns its
// output.
func scheduleCLI(t *testing.T, p *upRun, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	full := append([]string{"schedules", args[0], "--url", p.base}, args[1:]...)
	if err := run(t.Context(), full, env(map[string]string{"SCALELAB_TOKEN": p.token}), &stdout, &stderr); err != nil {
		t.Fatalf("scalelab %v = %v\nstderr: %s", full, err, stderr.String())
	}
	return stdout.String()
}

// tickRun is a task that a schedule's tick made.
type tickRun struct {
	seq     uint64
	state   task.State
	created time.Time
}

// tickRuns reads, as admin, the tasks that schedule id's ticks made,
// by tick (from the record's request id, schedule.<id>.<seq>).
func tickRuns(t *testing.T, p *upRun, id string) []tickRun {
	t.Helper()
	nc, err := nats.Connect(p.nats, nats.UserInfo(p.admin["SCALELAB_NATS_USER"], p.admin["SCALELAB_NATS_PASSWORD"]))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(t.Context(), task.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []tickRun
	for k := range keys.Keys() {
		e, err := kv.Get(t.Context(), k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var rec task.Record
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		if rest, ok := strings.CutPrefix(rec.RequestID, "schedule."+id+"."); ok {
			seq, _ := strconv.ParseUint(rest, 10, 64)
			out = append(out, tickRun{seq, rec.State, rec.CreatedAt})
		}
	}
	slices.SortFunc(out, func(a, b tickRun) int { return a.created.Compare(b.created) })
	return out
}

// TestUpSchedules: `scalelab schedules add|ls|rm` through the balancer of
// a real `up` (every role on its least-privilege NATS user), ticks that
// the workers run, a schedule that outlives a restart on the same data
// directory, and what becomes of the ticks missed while it was down: the
// server fires a schedule at most once for the whole gap (it skips ahead),
// it does not replay every missed tick.
func TestUpSchedules(t *testing.T) {
	dir := t.TempDir()
	p := startUp(t, dir)
	out := scheduleCLI(t, p, "add", "--every", "1s", `{"task":"noop"}`)
	id, _, _ := strings.Cut(out, "\t")
	if !task.ValidID(id) || !strings.Contains(out, "@every 1s") {
		t.Fatalf("schedules add printed %q, want the id and the spec", out)
	}
	if ls := scheduleCLI(t, p, "ls"); !strings.Contains(ls, id) || !strings.Contains(ls, `{"task":"noop"}`) {
		t.Fatalf("schedules ls = %q, want %s", ls, id)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		var done int
		for _, r := range tickRuns(t, p, id) {
			if r.state == task.Succeeded {
				done++
			}
		}
		if done < 2 {
			return fmt.Errorf("%d ticks ran", done)
		}
		return nil
	})
	p.stop(t)
	stopped := time.Now()

	// Down for a while: the restart itself takes a few seconds (the
	// server, the database seed); make it at least 4 ticks' worth.
	<-time.After(4*time.Second - time.Since(stopped))
	p = startUp(t, dir)
	up := time.Now()
	if ls := scheduleCLI(t, p, "ls"); !strings.Contains(ls, id) {
		t.Fatalf("schedules ls after the restart = %q, want %s still there", ls, id)
	}
	// The tasks of the ticks after the restart.
	var after []tickRun
	testutil.Eventually(t, 30*time.Second, func() error {
		after = after[:0]
		for _, r := range tickRuns(t, p, id) {
			if r.created.After(stopped) {
				after = append(after, r)
			}
		}
		if len(after) < 3 {
			return fmt.Errorf("%d tick tasks after the restart, want 3", len(after))
		}
		return nil
	})
	gap := up.Sub(stopped)
	// The ticks after the restart come one a second: none made in a burst
	// for the missed ones. Count those of the first second after the
	// first one after the restart.
	first := after[0].created
	var burst int
	for _, r := range after {
		if r.created.Sub(first) < 900*time.Millisecond {
			burst++
		}
	}
	t.Logf("down %v (%d ticks missed); after the restart %d tick tasks, %d within 0.9 s of the first (%v after up)", gap.Round(time.Millisecond), int(gap/time.Second), len(after), burst, first.Sub(up).Round(time.Millisecond))
	for _, r := range after {
		t.Logf("tick seq %d: task created %v after the stop", r.seq, r.created.Sub(stopped).Round(time.Millisecond))
	}
	if burst > 2 {
		t.Errorf("%d tick tasks within 0.9 s after the restart, want at most 2 (one catch-up, one on time): missed ticks replayed", burst)
	}
	scheduleCLI(t, p, "rm", id)
	if ls := scheduleCLI(t, p, "ls"); strings.Contains(ls, id) {
		t.Errorf("schedules ls after rm = %q, want %s gone", ls, id)
	}
	p.stop(t)
}

// TestSchedulesUsage: what `scalelab schedules` refuses before any
// request (exit 2).
func TestSchedulesUsage(t *testing.T) {
	t.Parallel()
	tok := env(map[string]string{"SCALELAB_TOKEN": "t"})
	for _, tc := range []struct {
		name   string
		args   []string
		getenv func(string) string
	}{
		{"no subcommand", []string{"schedules"}, tok},
		{"unknown subcommand", []string{"schedules", "edit"}, tok},
		{"no token", []string{"schedules", "ls"}, env(nil)},
		{"bad url", []string{"schedules", "ls", "--url", "localhost:8000"}, tok},
		{"neither cron nor every", []string{"schedules", "add", `{"task":"noop"}`}, tok},
		{"both cron and every", []string{"schedules", "add", "--cron", "@hourly", "--every", "1m", `{"task":"noop"}`}, tok},
		{"no task", []string{"schedules", "add", "--every", "1m"}, tok},
		{"task not JSON", []string{"schedules", "add", "--every", "1m", "noop"}, tok},
		{"rm without id", []string{"schedules", "rm"}, tok},
		{"ls with arguments", []string{"schedules", "ls", "x"}, tok},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), tc.args, tc.getenv, &stdout, &stderr); !errors.Is(err, ErrUsage) {
			t.Errorf("%s: %v = %v, want a usage error", tc.name, tc.args, err)
		}
	}
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"schedules", "--help"}, env(nil), &stdout, &stderr); err != nil || !strings.Contains(stdout.String(), "schedules add") {
		t.Errorf("schedules --help = %v, %q", err, stdout.String())
	}
}

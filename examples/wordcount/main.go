// Command wordcount is a complete scalelab worker: it serves the task type
// "wordcount", which counts the words, lines and characters of a text and
// names its most frequent words. It is the example of the worker SDK
// (`go doc ./worker`): a handler, the JSON Schema the gateway checks
// payloads against, progress, and a handler that stops when its task is
// cancelled or times out.
//
// Run it next to `scalelab up`, with the worker user's password that up
// prints:
//
//	SCALELAB_NATS_PASSWORD=... go run ./examples/wordcount
//
// then submit a task:
//
//	curl -s -X POST -H "Authorization: Bearer $TOKEN" \
//	  -d '{"task":"wordcount","text":"the quick brown fox\njumps over the lazy dog"}' \
//	  http://127.0.0.1:8000/longtask
//
// Environment: SCALELAB_NATS_URL (default nats://127.0.0.1:4222),
// SCALELAB_NATS_USER (default worker) and SCALELAB_NATS_PASSWORD.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "wordcount:", err)
		os.Exit(1)
	}
}

// TaskType is the task type this worker serves.
const TaskType = "wordcount"

// Queue is the queue of wordcount tasks: one of their own, so that only
// workers that serve the type pull them.
const Queue = "text"

// Schema is the JSON Schema of a wordcount payload: the gateway refuses a
// submission it does not accept with a 400, before it is queued.
const Schema = `{
  "type": "object",
  "properties": {
    "text": {"type": "string", "maxLength": 60000},
    "top": {"type": "integer", "minimum": 1, "maximum": 100}
  },
  "required": ["text"]
}`

// Payload is a wordcount task's payload: the members of its POST
// /longtask body besides "task".
type Payload struct {
	Text string `json:"text"`
	// Top is how many of the most frequent words the result names; 0 is 5.
	Top int `json:"top,omitempty"`
}

// Result is what a wordcount task returns: the task record's "result".
type Result struct {
	Words int         `json:"words"`
	Lines int         `json:"lines"`
	Chars int         `json:"chars"`
	Top   []WordCount `json:"top"`
}

// WordCount is a word and how many times the text has it.
type WordCount struct {
	Word  string `json:"word"`
	Count int    `json:"count"`
}

// run connects to NATS as getenv says, serves wordcount tasks until ctx
// ends, and drains.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("wordcount", flag.ContinueOnError)
	fs.SetOutput(stdout)
	concurrency := fs.Int("concurrency", 4, "tasks run at once")
	id := fs.String("id", "", "worker id in task records and the registry (default: host name and a random suffix)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	url, user := or(getenv("SCALELAB_NATS_URL"), nats.DefaultURL), or(getenv("SCALELAB_NATS_USER"), "worker")
	nc, err := nats.Connect(url, nats.Name("wordcount"),
		nats.UserInfo(user, getenv("SCALELAB_NATS_PASSWORD")),
		// scalelab's NATS users receive replies under their own prefix
		// only (natsconf: no user reads another's replies).
		nats.CustomInboxPrefix("_INBOX."+user))
	if err != nil {
		return fmt.Errorf("connect to %s as %s: %w", url, user, err)
	}
	defer func() { _ = nc.Drain() }()

	log := slog.New(slog.NewTextHandler(stdout, nil))
	w := worker.New(nc, worker.Config{ID: *id, Concurrency: *concurrency, Logger: log})
	worker.HandleJSON(w, TaskType, count,
		worker.WithSchema(json.RawMessage(Schema)), worker.WithQueue(Queue),
		worker.WithDescription("counts the words, lines and characters of text and names its most frequent words"))
	fmt.Fprintf(stdout, "wordcount: serving task type %q on queue %q, NATS %s as %s\n", TaskType, Queue, url, user)
	return w.Run(ctx)
}

// progressEvery is how many lines count reads between progress reports
// and checks of ctx.
const progressEvery = 1000

// count is the wordcount handler. It reports progress as it reads the
// lines, and gives up when ctx ends (the task was cancelled, timed out or
// the worker is stopping): a task that returns ctx's error is retried.
func count(ctx context.Context, t *worker.Task, p Payload) (any, error) {
	top := p.Top
	if top <= 0 {
		top = 5
	}
	total := max(1, strings.Count(p.Text, "\n")+1)
	res := Result{Chars: utf8.RuneCountInString(p.Text)}
	freq := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(p.Text))
	sc.Buffer(make([]byte, 0, 64<<10), len(p.Text)+1)
	for sc.Scan() {
		res.Lines++
		for _, w := range strings.FieldsFunc(sc.Text(), notWordRune) {
			res.Words++
			freq[strings.ToLower(w)]++
		}
		if res.Lines%progressEvery == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			t.Progress(100*res.Lines/total, fmt.Sprintf("%d of %d lines", res.Lines, total))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, worker.Permanent(err) // no retry reads it otherwise
	}
	for w, n := range freq {
		res.Top = append(res.Top, WordCount{Word: w, Count: n})
	}
	slices.SortFunc(res.Top, func(a, b WordCount) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.Word, b.Word)
	})
	res.Top = res.Top[:min(top, len(res.Top))]
	t.Progress(100, "counted")
	return res, nil
}

// notWordRune reports whether r separates words: anything but letters,
// digits and apostrophes.
func notWordRune(r rune) bool {
	return !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '\''
}

// or is v, or def when v is empty.
func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

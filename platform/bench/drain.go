package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// post builds a POST of a JSON body to path with the target's token.
func (t *target) post(path, body string) vegeta.Target {
	return vegeta.Target{Method: http.MethodPost, URL: t.url + path, Body: []byte(body),
		Header: http.Header{"Authorization": {"Bearer " + t.token}, "Content-Type": {"application/json"}}}
}

// drainClients is how many requests drain keeps in flight, to submit and
// then to wait: enough that the clients are not what is measured.
const drainClients = 16

// taskTimes is what drain reads of a finished task's record.
type taskTimes struct {
	State      string     `json:"state"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

// drain queues n tasks as fast as it can, then waits for every one to
// finish. Its throughput is the drain rate: tasks finished per second from
// the first submission to the last finish, by the records' own clocks; its
// latency is each task's time from submission to finish (queueing
// included).
func (e *env) drain(t *target, n int, body string) (Result, error) {
	hc := &http.Client{Timeout: 30 * time.Second}
	do := func(req vegeta.Target) ([]byte, int, error) {
		r, err := req.Request()
		if err != nil {
			return nil, 0, err
		}
		res, err := hc.Do(r.WithContext(e.ctx))
		if err != nil {
			return nil, 0, err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		return b, res.StatusCode, err
	}
	ids := make([]string, n)
	recs := make([]taskTimes, n)
	errs := make([]error, n)
	parallel(n, func(i int) {
		b, code, err := do(t.post("/longtask", body))
		var sub struct {
			TaskID string `json:"task_id"`
		}
		if err == nil && (code != http.StatusAccepted || json.Unmarshal(b, &sub) != nil || sub.TaskID == "") {
			err = fmt.Errorf("POST /longtask = %d %s", code, bytes.TrimSpace(b))
		}
		ids[i], errs[i] = sub.TaskID, err
	})
	bar := newBar(e.opts.Progress, fmt.Sprintf("drain %d tasks", n), time.Duration(n)*time.Millisecond)
	var done sync.Mutex
	finished := 0
	parallel(n, func(i int) {
		if errs[i] != nil {
			return
		}
		// A long poll per task; a task not final after 20 s is counted
		// as an error, not waited for forever.
		b, code, err := do(t.get("/tasks/" + ids[i] + "?wait=20s"))
		if err == nil && (code != http.StatusOK || json.Unmarshal(b, &recs[i]) != nil) {
			err = fmt.Errorf("GET /tasks/%s = %d %s", ids[i], code, bytes.TrimSpace(b))
		}
		if err == nil && recs[i].State != "succeeded" {
			err = fmt.Errorf("task %s ended %s, want succeeded", ids[i], recs[i].State)
		}
		errs[i] = err
		done.Lock()
		finished++
		bar.set(time.Duration(finished) * time.Millisecond)
		done.Unlock()
	})
	bar.finish()

	tl := newTally("", time.Second, time.Time{})
	var first, last time.Time
	for i := range n {
		if errs[i] != nil {
			tl.add(time.Now(), 0, 0, errs[i].Error(), "", "")
			continue
		}
		rec := recs[i]
		if first.IsZero() || rec.CreatedAt.Before(first) {
			first = rec.CreatedAt
		}
		if rec.FinishedAt.After(last) {
			last = *rec.FinishedAt
		}
		tl.add(rec.CreatedAt, rec.FinishedAt.Sub(rec.CreatedAt), http.StatusOK, "", "", "")
	}
	res := tl.result()
	res.Timeline, res.TimelineStep = nil, 0
	res.Connections = drainClients
	if span := last.Sub(first).Seconds(); span > 0 {
		res.Seconds = math.Round(span*1000) / 1000
		res.Throughput = math.Round(float64(res.OK)/span*10) / 10
	}
	res.metric("tasks", float64(n))
	res.metric("drain_seconds", res.Seconds)
	if e.ctx.Err() != nil {
		return res, e.ctx.Err()
	}
	return res, nil
}

// parallel runs fn(0..n-1) on drainClients goroutines.
func parallel(n int, fn func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(n, drainClients) {
		wg.Go(func() {
			for i := range next {
				fn(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

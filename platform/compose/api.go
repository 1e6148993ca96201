package compose

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/scalelab/scalelab/internal/task"
)

// Get sends an authenticated GET through the balancer.
func (st *Stack) Get(ctx context.Context, path string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, st.Base+path, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+st.Token)
	return st.Do(req)
}

// Do sends req with the stack's client and reads the whole answer.
func (st *Stack) Do(req *http.Request) (*http.Response, []byte, error) {
	res, err := st.Client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s %s: %w", req.Method, req.URL.Path, err)
	}
	return res, body, nil
}

// Submit posts a task and returns its id; anything but a 202 is an error.
func (st *Stack) Submit(ctx context.Context, body, idempotencyKey string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, st.Base+"/longtask", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+st.Token)
	req.Header.Set("Content-Type", "application/json")
	if idempotencyKey != "" {
		req.Header.Set("Idempotency-Key", idempotencyKey)
	}
	res, b, err := st.Do(req)
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("POST /longtask = %d %s", res.StatusCode, bytes.TrimSpace(b))
	}
	var got struct {
		TaskID string `json:"task_id"`
	}
	if err := json.Unmarshal(b, &got); err != nil || got.TaskID == "" {
		return "", fmt.Errorf("POST /longtask answer %q: no task_id (%v)", b, err)
	}
	return got.TaskID, nil
}

// Task reads a task record through the balancer.
func (st *Stack) Task(ctx context.Context, id string) (*task.Record, error) {
	res, body, err := st.Get(ctx, "/tasks/"+id)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /tasks/%s = %d %s", id, res.StatusCode, bytes.TrimSpace(body))
	}
	var rec task.Record
	if err := json.Unmarshal(body, &rec); err != nil {
		return nil, fmt.Errorf("decode task %s: %w", id, err)
	}
	return &rec, nil
}

// RunTask submits body and waits up to 30 s for the task to succeed; a
// task that ends otherwise is an error at once.
func (st *Stack) RunTask(ctx context.Context, body string) (*task.Record, error) {
	id, err := st.Submit(ctx, body, "")
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec, err := st.Task(ctx, id)
		switch {
		case err != nil:
		case rec.State == task.Succeeded:
			return rec, nil
		case rec.State.Terminal():
			return nil, fmt.Errorf("task %s ended %s: %s", id, rec.State, rec.Error)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("task %s not done after 30s (last error: %v)", id, err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// BalancerStatus is the part of GET /-/balancer the callers read.
type BalancerStatus struct {
	Backends []struct {
		URL   string `json:"url"`
		State string `json:"state"`
	} `json:"backends"`
}

// State returns the state of the gateway at url, or "absent".
func (s BalancerStatus) State(url string) string {
	for _, b := range s.Backends {
		if b.URL == url {
			return b.State
		}
	}
	return "absent"
}

// BalancerStatus reads the balancer's GET /-/balancer on its admin listener.
func (st *Stack) BalancerStatus(ctx context.Context) (BalancerStatus, error) {
	var s BalancerStatus
	if err := st.getJSON(ctx, st.Admin+"/-/balancer", &s); err != nil {
		return s, err
	}
	return s, nil
}

// JSZ is the part of nats1's /jsz the callers read. Leaders and configs are
// the cluster's; replica details are only right on a leader, so they are
// not read here.
type JSZ struct {
	Meta struct {
		Leader string `json:"leader"`
		Size   int    `json:"cluster_size"`
	} `json:"meta_cluster"`
	Accounts []struct {
		Streams []JSZStream `json:"stream_detail"`
	} `json:"account_details"`
}

// JSZStream is one stream in /jsz.
type JSZStream struct {
	Name   string `json:"name"`
	Config struct {
		Replicas int `json:"num_replicas"`
	} `json:"config"`
	State struct {
		Msgs uint64 `json:"messages"`
	} `json:"state"`
	Cluster struct {
		Leader string `json:"leader"`
	} `json:"cluster"`
}

// Streams returns every stream of every account.
func (j JSZ) Streams() []JSZStream {
	var all []JSZStream
	for _, a := range j.Accounts {
		all = append(all, a.Streams...)
	}
	return all
}

// Stream returns the stream name, if listed.
func (j JSZ) Stream(name string) (JSZStream, bool) {
	for _, s := range j.Streams() {
		if s.Name == name {
			return s, true
		}
	}
	return JSZStream{}, false
}

// JSZ reads nats1's /jsz with accounts, streams and configs.
func (st *Stack) JSZ(ctx context.Context) (JSZ, error) {
	var j JSZ
	err := st.getJSON(ctx, st.Monitor+"/jsz?accounts=true&streams=true&config=true", &j)
	return j, err
}

// getJSON GETs url (no token: the admin listener's and the monitoring's
// reads take none) and decodes its 200 answer into v.
func (st *Stack) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, body, err := st.Do(req)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s = %d %s", req.URL.Path, res.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode %s: %w", req.URL.Path, err)
	}
	return nil
}

// JSONPart drops what compose prints before a command's own JSON output
// (compose v1 announces the container it creates on the same stream).
func JSONPart(out string) []byte {
	if i := strings.IndexByte(out, '{'); i >= 0 {
		return []byte(out[i:])
	}
	return []byte(out)
}

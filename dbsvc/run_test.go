package dbsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/wire"
)

func TestRunServesNATS(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	ctx := t.Context()

	t.Run("data", func(t *testing.T) {
		raw, err := db.client.Data(ctx, "req-data")
		if err != nil {
			t.Fatalf("Data() = %v, want nil error", err)
		}
		var rep Report
		if err := json.Unmarshal(raw, &rep); err != nil {
			t.Fatalf("json.Unmarshal(Data()) = %v; body %s", err, raw)
		}
		if rep.Message != ReportMessage {
			t.Errorf("Data().Message = %q, want %q", rep.Message, ReportMessage)
		}
		if rep.RowsScanned != testSeedRows {
			t.Errorf("Data().RowsScanned = %d, want %d", rep.RowsScanned, testSeedRows)
		}
		if len(rep.Regions) != 8 {
			t.Errorf("len(Data().Regions) = %d, want 8", len(rep.Regions))
		}
		if len(rep.TopItems) != TopItemsLimit {
			t.Errorf("len(Data().TopItems) = %d, want %d", len(rep.TopItems), TopItemsLimit)
		}
		var sum int64
		for _, r := range rep.Regions {
			sum += r.Sales
		}
		if sum != rep.RowsScanned {
			t.Errorf("sum of Data().Regions[].Sales = %d, want RowsScanned %d", sum, rep.RowsScanned)
		}
		for i := 1; i < len(rep.TopItems); i++ {
			if rep.TopItems[i].RevenueCents > rep.TopItems[i-1].RevenueCents {
				t.Errorf("Data().TopItems not sorted by revenue: %+v", rep.TopItems)
				break
			}
		}
		if rep.GeneratedAt.IsZero() || rep.QueryMS <= 0 {
			t.Errorf("Data() GeneratedAt = %v, QueryMS = %v, want both set", rep.GeneratedAt, rep.QueryMS)
		}
	})

	t.Run("item", func(t *testing.T) {
		got, err := db.client.Item(ctx, "req-item", 42)
		if err != nil {
			t.Fatalf("Item(42) = %v, want nil error", err)
		}
		if got.ID != 42 || !strings.HasSuffix(got.Name, " 0042") || got.PriceCents <= 0 || got.UpdatedAt.IsZero() {
			t.Errorf("Item(42) = %+v, want item 42 named \"... 0042\" with a price and a time", got)
		}
	})

	itemErrors := []struct {
		name string
		id   int64
		want apperr.Code
	}{
		{"unknown", 999_999, apperr.NotFound},
		{"zero", 0, apperr.Invalid},
		{"negative", -3, apperr.Invalid},
	}
	for _, tt := range itemErrors {
		t.Run("item "+tt.name, func(t *testing.T) {
			_, err := db.client.Item(ctx, "", tt.id)
			if got := codeOf(err); got != tt.want {
				t.Errorf("Item(%d) error = %v, want code %s", tt.id, err, tt.want)
			}
			if got, want := errors.Is(err, ErrNotFound), tt.want == apperr.NotFound; got != want {
				t.Errorf("errors.Is(Item(%d) error, ErrNotFound) = %v, want %v", tt.id, got, want)
			}
		})
	}

	badBodies := []struct {
		name, subject, body string
	}{
		{"get empty", wire.DBItemGet, ""},
		{"get not json", wire.DBItemGet, "id=1"},
		{"get id as string", wire.DBItemGet, `{"id":"1"}`},
		{"get unknown field", wire.DBItemGet, `{"id":1,"x":2}`},
		{"get trailing data", wire.DBItemGet, `{"id":1} {"id":2}`},
		{"update empty name", wire.DBItemUpdate, `{"id":1,"name":"","price_cents":1,"stock":1}`},
		{"update negative price", wire.DBItemUpdate, `{"id":1,"name":"x","price_cents":-1,"stock":1}`},
		{"update negative stock", wire.DBItemUpdate, `{"id":1,"name":"x","price_cents":1,"stock":-1}`},
		{"update long name", wire.DBItemUpdate, `{"id":1,"name":"` + strings.Repeat("n", MaxNameLen+1) + `","price_cents":1,"stock":1}`},
		{"update no id", wire.DBItemUpdate, `{"name":"x","price_cents":1,"stock":1}`},
	}
	for _, tt := range badBodies {
		t.Run("bad body "+tt.name, func(t *testing.T) {
			msg, err := nc.RequestWithContext(ctx, tt.subject, []byte(tt.body))
			if err != nil {
				t.Fatalf("Request(%s) = %v", tt.subject, err)
			}
			if got := msg.Header.Get(micro.ErrorCodeHeader); got != string(apperr.Invalid) {
				t.Errorf("Request(%s, %q) error code = %q (%q), want %q", tt.subject, tt.body, got,
					msg.Header.Get(micro.ErrorHeader), apperr.Invalid)
			}
		})
	}

	t.Run("update", func(t *testing.T) {
		u := ItemUpdate{Name: "Renamed", PriceCents: 1234, Stock: 7}
		before := time.Now().Add(-time.Second)
		got, err := db.client.UpdateItem(ctx, "req-update", 7, u)
		if err != nil {
			t.Fatalf("UpdateItem(7) = %v, want nil error", err)
		}
		// Seeded at version 1; the update makes it 2.
		want := Item{ID: 7, Name: u.Name, PriceCents: u.PriceCents, Stock: u.Stock, Version: 2, UpdatedAt: got.UpdatedAt}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("UpdateItem(7) mismatch (-want +got):\n%s", diff)
		}
		if got.UpdatedAt.Before(before) {
			t.Errorf("UpdateItem(7).UpdatedAt = %v, want after %v", got.UpdatedAt, before)
		}
		read, err := db.client.Item(ctx, "", 7)
		if err != nil {
			t.Fatalf("Item(7) = %v, want nil error", err)
		}
		if diff := cmp.Diff(got, read); diff != "" {
			t.Errorf("Item(7) after update mismatch (-want +got):\n%s", diff)
		}
	})

	t.Run("update unknown", func(t *testing.T) {
		_, err := db.client.UpdateItem(ctx, "", 999_999, ItemUpdate{Name: "x"})
		if got := codeOf(err); got != apperr.NotFound || !errors.Is(err, ErrNotFound) {
			t.Errorf("UpdateItem(999999) error = %v, want not_found matching ErrNotFound", err)
		}
	})
}

func TestRunListsItems(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	ctx := t.Context()

	for _, limit := range []int{0, 7, MaxListLimit} {
		t.Run(fmt.Sprintf("walk limit %d", limit), func(t *testing.T) {
			pageSize := limit
			if limit == 0 {
				pageSize = DefaultListLimit
			}
			before := db.queries.Load()
			ids := walkItems(t, pageSize, func(afterID int64) (ItemPage, error) {
				return db.client.ListItems(ctx, "req-list", afterID, limit)
			})
			if diff := cmp.Diff(seededIDs(), ids); diff != "" {
				t.Errorf("ids listed with limit %d mismatch (-want +got):\n%s", limit, diff)
			}
			if got, want := db.queries.Load()-before, int64(SeedItems/pageSize+1); got != want {
				t.Errorf("queries counted for %d pages = %d, want %d", want, got, want)
			}
		})
	}

	t.Run("empty page", func(t *testing.T) {
		msg, err := nc.RequestWithContext(ctx, wire.DBItemList, []byte(fmt.Sprintf(`{"after_id":%d}`, SeedItems)))
		if err != nil {
			t.Fatalf("Request(%s) = %v", wire.DBItemList, err)
		}
		if got, want := string(msg.Data), `{"items":[]}`; got != want {
			t.Errorf("Request(%s) past the end = %s, want %s", wire.DBItemList, got, want)
		}
	})

	listErrors := []struct {
		name    string
		afterID int64
		limit   int
	}{
		{"negative after_id", -1, 0},
		{"negative limit", 0, -1},
		{"limit over max", 0, MaxListLimit + 1},
	}
	for _, tt := range listErrors {
		t.Run("list "+tt.name, func(t *testing.T) {
			_, err := db.client.ListItems(ctx, "", tt.afterID, tt.limit)
			if got := codeOf(err); got != apperr.Invalid {
				t.Errorf("ListItems(%d, %d) error = %v, want code %s", tt.afterID, tt.limit, err, apperr.Invalid)
			}
		})
	}

	badBodies := []struct {
		name, body string
	}{
		{"empty", ""},
		{"not json", "limit=1"},
		{"limit zero", `{"limit":0}`},
		{"limit over max", `{"limit":101}`},
		{"limit as string", `{"limit":"5"}`},
		{"limit fraction", `{"limit":1.5}`},
		{"after_id negative", `{"after_id":-5}`},
		{"unknown field", `{"after_id":1,"cursor":2}`},
		{"trailing data", `{} {}`},
	}
	for _, tt := range badBodies {
		t.Run("bad body "+tt.name, func(t *testing.T) {
			msg, err := nc.RequestWithContext(ctx, wire.DBItemList, []byte(tt.body))
			if err != nil {
				t.Fatalf("Request(%s) = %v", wire.DBItemList, err)
			}
			if got := msg.Header.Get(micro.ErrorCodeHeader); got != string(apperr.Invalid) {
				t.Errorf("Request(%s, %q) error code = %q (%q), want %q", wire.DBItemList, tt.body, got,
					msg.Header.Get(micro.ErrorHeader), apperr.Invalid)
			}
		})
	}
}

func TestRunDeletesItem(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	ctx := t.Context()
	httpClient := &http.Client{Timeout: 10 * time.Second}

	before := db.queries.Load()
	if err := db.client.DeleteItem(ctx, "req-delete", 5); err != nil {
		t.Fatalf("DeleteItem(5) = %v, want nil error", err)
	}
	if got := db.queries.Load() - before; got != 1 {
		t.Errorf("queries counted for one delete = %d, want 1", got)
	}
	_, err := db.client.Item(ctx, "", 5)
	if got := codeOf(err); got != apperr.NotFound || !errors.Is(err, ErrNotFound) {
		t.Errorf("Item(5) after delete = %v, want not_found matching ErrNotFound", err)
	}
	err = db.client.DeleteItem(ctx, "", 5)
	if got := codeOf(err); got != apperr.NotFound || !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteItem(5) = %v, want not_found matching ErrNotFound", err)
	}
	page, err := db.client.ListItems(ctx, "", 4, 1)
	if err != nil {
		t.Fatalf("ListItems(4, 1) = %v, want nil error", err)
	}
	if len(page.Items) != 1 || page.Items[0].ID != 6 {
		t.Errorf("ListItems(4, 1) after deleting 5 = %+v, want item 6", page.Items)
	}

	t.Run("reply", func(t *testing.T) {
		msg, err := nc.RequestWithContext(ctx, wire.DBItemDelete, []byte(`{"id":6}`))
		if err != nil {
			t.Fatalf("Request(%s) = %v", wire.DBItemDelete, err)
		}
		if got, want := string(msg.Data), `{"id":6,"deleted":true}`; got != want {
			t.Errorf("Request(%s) = %s (error %q), want %s", wire.DBItemDelete, got, msg.Header.Get(micro.ErrorHeader), want)
		}
	})

	deleteErrors := []struct {
		name string
		id   int64
		want apperr.Code
	}{
		{"unknown", 999_999, apperr.NotFound},
		{"zero", 0, apperr.Invalid},
		{"negative", -3, apperr.Invalid},
	}
	for _, tt := range deleteErrors {
		t.Run("delete "+tt.name, func(t *testing.T) {
			err := db.client.DeleteItem(ctx, "", tt.id)
			if got := codeOf(err); got != tt.want {
				t.Errorf("DeleteItem(%d) error = %v, want code %s", tt.id, err, tt.want)
			}
			if got, want := errors.Is(err, ErrNotFound), tt.want == apperr.NotFound; got != want {
				t.Errorf("errors.Is(DeleteItem(%d) error, ErrNotFound) = %v, want %v", tt.id, got, want)
			}
		})
	}

	badBodies := []struct {
		name, body string
	}{
		{"empty", ""},
		{"id as string", `{"id":"1"}`},
		{"unknown field", `{"id":1,"x":2}`},
		{"trailing data", `{"id":1} {"id":2}`},
		{"no id", `{}`},
	}
	for _, tt := range badBodies {
		t.Run("bad body "+tt.name, func(t *testing.T) {
			msg, err := nc.RequestWithContext(ctx, wire.DBItemDelete, []byte(tt.body))
			if err != nil {
				t.Fatalf("Request(%s) = %v", wire.DBItemDelete, err)
			}
			if got := msg.Header.Get(micro.ErrorCodeHeader); got != string(apperr.Invalid) {
				t.Errorf("Request(%s, %q) error code = %q (%q), want %q", wire.DBItemDelete, tt.body, got,
					msg.Header.Get(micro.ErrorHeader), apperr.Invalid)
			}
		})
	}

	// Item 1 is still there: the bad bodies deleted nothing.
	if _, err := db.client.Item(ctx, "", 1); err != nil {
		t.Errorf("Item(1) after bad deletes = %v, want nil error", err)
	}
	// Deletes that reached the store: 5, 5 again, 6 and 999999. Invalid
	// requests never do.
	metrics, err := getBody(ctx, httpClient, db.url+"/metrics")
	if err != nil {
		t.Fatalf("GET /metrics = %v", err)
	}
	for _, want := range []string{
		`scalelab_db_queries_total{query="item_delete"} 4`,
		`scalelab_db_query_seconds_count{query="item_delete"} 4`,
		`scalelab_db_queries_total{query="item_list"} 1`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("GET /metrics does not contain %q", want)
		}
	}
}

func TestRunCountsQueries(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	ctx := t.Context()
	httpClient := &http.Client{Timeout: 10 * time.Second}

	// Concurrent reports over NATS and HTTP; under -race this also shows
	// that the store is shared safely.
	const n = 4
	before := db.queries.Load()
	var wg sync.WaitGroup
	errs := make([]error, 2*n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = db.client.Data(ctx, "")
		})
		wg.Go(func() {
			errs[n+i] = getOK(ctx, httpClient, db.url+"/db")
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("report #%d = %v, want nil error", i, err)
		}
	}
	if _, err := db.client.Item(ctx, "", 1); err != nil {
		t.Fatalf("Item(1) = %v, want nil error", err)
	}
	if got, want := db.queries.Load()-before, int64(2*n+1); got != want {
		t.Errorf("queries counted = %d, want %d", got, want)
	}
	metrics, err := getBody(ctx, httpClient, db.url+"/metrics")
	if err != nil {
		t.Fatalf("GET /metrics = %v", err)
	}
	for _, want := range []string{
		`scalelab_db_queries_total{query="data"} 8`,
		`scalelab_db_query_seconds_count{query="data"} 8`,
		`scalelab_db_queries_total{query="item_update"} 0`,
		`scalelab_db_queries_total{query="item_list"} 0`,
		`scalelab_db_queries_total{query="item_delete"} 0`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("GET /metrics does not contain %q", want)
		}
	}
}

// getOK gets url and returns an error unless the status is 200.
func getOK(ctx context.Context, c *http.Client, url string) error {
	_, err := getBody(ctx, c, url)
	return err
}

// getBody gets url and returns its body, or an error unless the status is 200.
func getBody(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: status %d, body %s", url, resp.StatusCode, body)
	}
	return string(body), nil
}

func TestRunRestartKeepsData(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	dir := t.TempDir()
	ctx := t.Context()

	first := startDB(t, nc, dir, testSeedRows)
	want, err := first.client.UpdateItem(ctx, "", 3, ItemUpdate{Name: "Kept", PriceCents: 99, Stock: 1})
	if err != nil {
		t.Fatalf("UpdateItem(3) = %v, want nil error", err)
	}
	if err := first.Stop(); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}

	// A different --seed-rows must not matter: the database exists.
	second := startDB(t, nc, dir, 2*testSeedRows)
	raw, err := second.client.Data(ctx, "")
	if err != nil {
		t.Fatalf("Data() after restart = %v, want nil error", err)
	}
	var rep Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("json.Unmarshal(Data()) = %v", err)
	}
	if rep.RowsScanned != testSeedRows {
		t.Errorf("Data().RowsScanned after restart = %d, want %d (not re-seeded)", rep.RowsScanned, testSeedRows)
	}
	got, err := second.client.Item(ctx, "", 3)
	if err != nil {
		t.Fatalf("Item(3) after restart = %v, want nil error", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Item(3) after restart mismatch (-want +got):\n%s", diff)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	if err := db.Stop(); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	if nc.IsClosed() || nc.IsDraining() {
		t.Errorf("nc closed or draining after Run returned; the caller owns it")
	}
	// The service is gone: nobody answers.
	_, err := db.client.Data(t.Context(), "")
	if got := codeOf(err); got != apperr.Unavailable || !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("Data() after stop = %v, want unavailable (no responders)", err)
	}
}

func TestRunFailsAtStart(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	t.Cleanup(func() { busy.Close() })
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatalf("os.WriteFile() = %v", err)
	}

	tests := []struct {
		name string
		edit func(*Config)
		nc   *nats.Conn
		want string
	}{
		{"invalid config", func(c *Config) { c.SeedRows = -1 }, nc, "--seed-rows must be >= 0"},
		{"port in use", func(c *Config) { c.Addr = busy.Addr().String() }, nc, "listen on"},
		{"no nats", func(*Config) {}, nil, "NATS connection is required"},
		{"data dir is a file", func(c *Config) { c.DataDir = filepath.Join(file, "data") }, nc, "create data dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Addr = "127.0.0.1:0"
			cfg.DataDir = t.TempDir()
			cfg.SeedRows = 10
			tt.edit(&cfg)
			err := Run(t.Context(), cfg, tt.nc, testLogger(t))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestRunCancelledBeforeStart(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.SeedRows = 10
	if err := Run(ctx, cfg, nc, testLogger(t)); err != nil {
		t.Errorf("Run(cancelled ctx) = %v, want nil", err)
	}
}

func TestServiceRefusesAfterClose(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	st := openTestStore(t, t.TempDir())
	svc := newService(st, testLogger(t))
	msvc, err := svc.register(nc)
	if err != nil {
		t.Fatalf("register() = %v", err)
	}
	t.Cleanup(func() { _ = msvc.Stop() })
	client := NewClient(nc)
	if _, err := client.Item(t.Context(), "", 1); err != nil {
		t.Fatalf("Item(1) before close = %v, want nil error", err)
	}
	// close without Stop: the subscription still delivers, as it does while
	// Stop's drain is in progress.
	svc.close()
	_, err = client.Item(t.Context(), "", 1)
	if got := codeOf(err); got != apperr.Unavailable {
		t.Errorf("Item(1) after close = %v, want code %s", err, apperr.Unavailable)
	}
}

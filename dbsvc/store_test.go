package dbsvc

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/scalelab/scalelab/internal/apperr"
)

// openTestStore opens a store seeded with testSeedRows in dir and closes it
// when the test ends.
func openTestStore(t *testing.T, dir string) *store {
	t.Helper()
	return openStoreRows(t, dir, testSeedRows, testLogger(t))
}

func openStoreRows(t testing.TB, dir string, rows int, log *slog.Logger) *store {
	t.Helper()
	st, err := openStore(t.Context(), storeConfig{
		Path:         filepath.Join(dir, DBFile),
		SeedRows:     rows,
		QueryTimeout: time.Minute,
		MaxOpenConns: 4,
	}, log)
	if err != nil {
		t.Fatalf("openStore() = %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return st
}

// volatile are the report fields that differ between runs of the query.
var volatile = cmpopts.IgnoreFields(Report{}, "GeneratedAt", "QueryMS")

func TestStoreSeedsOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := openTestStore(t, dir)
	if !first.seeded {
		t.Fatalf("first openStore().seeded = false, want true")
	}
	want, err := first.Report(t.Context())
	if err != nil {
		t.Fatalf("Report() = %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}

	second := openStoreRows(t, dir, 3*testSeedRows, testLogger(t))
	if second.seeded {
		t.Errorf("second openStore().seeded = true, want false")
	}
	got, err := second.Report(t.Context())
	if err != nil {
		t.Fatalf("Report() after reopen = %v", err)
	}
	if diff := cmp.Diff(want, got, volatile); diff != "" {
		t.Errorf("Report() after reopen mismatch (-want +got):\n%s", diff)
	}
	var items int64
	if err := second.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM items`).Scan(&items); err != nil {
		t.Fatalf("count items: %v", err)
	}
	if items != SeedItems {
		t.Errorf("items after reopen = %d, want %d", items, SeedItems)
	}
}

func TestStoreSeedIsDeterministic(t *testing.T) {
	t.Parallel()
	a := openTestStore(t, t.TempDir())
	b := openTestStore(t, t.TempDir())
	ra, err := a.Report(t.Context())
	if err != nil {
		t.Fatalf("Report() = %v", err)
	}
	rb, err := b.Report(t.Context())
	if err != nil {
		t.Fatalf("Report() = %v", err)
	}
	if diff := cmp.Diff(ra, rb, volatile); diff != "" {
		t.Errorf("Report() of two new databases differ (-a +b):\n%s", diff)
	}
	ia, err := a.Item(t.Context(), 500)
	if err != nil {
		t.Fatalf("Item(500) = %v", err)
	}
	ib, err := b.Item(t.Context(), 500)
	if err != nil {
		t.Fatalf("Item(500) = %v", err)
	}
	if diff := cmp.Diff(ia, ib); diff != "" {
		t.Errorf("Item(500) of two new databases differ (-a +b):\n%s", diff)
	}
}

func TestStoreReport(t *testing.T) {
	t.Parallel()
	st := openTestStore(t, t.TempDir())
	rep, err := st.Report(t.Context())
	if err != nil {
		t.Fatalf("Report() = %v", err)
	}
	// Cross-check the one-statement report against plain queries.
	var rows, revenue int64
	if err := st.db.QueryRowContext(t.Context(), `SELECT COUNT(*), SUM(amount_cents) FROM sales`).Scan(&rows, &revenue); err != nil {
		t.Fatalf("sum sales: %v", err)
	}
	var gotRevenue int64
	for _, r := range rep.Regions {
		gotRevenue += r.RevenueCents
		if r.Sales > 0 && r.AvgCents != float64(r.RevenueCents)/float64(r.Sales) {
			t.Errorf("region %s AvgCents = %v, want %v", r.Region, r.AvgCents, float64(r.RevenueCents)/float64(r.Sales))
		}
	}
	if rep.RowsScanned != rows || gotRevenue != revenue {
		t.Errorf("Report() rows, revenue = %d, %d, want %d, %d", rep.RowsScanned, gotRevenue, rows, revenue)
	}
	var topID, topRevenue int64
	if err := st.db.QueryRowContext(t.Context(),
		`SELECT item_id, SUM(amount_cents) AS r FROM sales GROUP BY item_id ORDER BY r DESC, item_id LIMIT 1`,
	).Scan(&topID, &topRevenue); err != nil {
		t.Fatalf("top item: %v", err)
	}
	if len(rep.TopItems) == 0 || rep.TopItems[0].ItemID != topID || rep.TopItems[0].RevenueCents != topRevenue {
		t.Errorf("Report().TopItems[0] = %+v, want item %d with revenue %d", rep.TopItems, topID, topRevenue)
	}
	if !slices.IsSortedFunc(rep.Regions, func(a, b RegionTotal) int { return int(b.RevenueCents - a.RevenueCents) }) {
		t.Errorf("Report().Regions not sorted by revenue: %+v", rep.Regions)
	}
}

func TestStoreEmptySales(t *testing.T) {
	t.Parallel()
	st := openStoreRows(t, t.TempDir(), 0, testLogger(t))
	rep, err := st.Report(t.Context())
	if err != nil {
		t.Fatalf("Report() = %v", err)
	}
	want := Report{Message: ReportMessage, Regions: []RegionTotal{}, TopItems: []ItemTotal{}}
	if diff := cmp.Diff(want, rep, volatile); diff != "" {
		t.Errorf("Report() of an empty table mismatch (-want +got):\n%s", diff)
	}
}

func TestStoreItemNotFound(t *testing.T) {
	t.Parallel()
	st := openTestStore(t, t.TempDir())
	if _, err := st.Item(t.Context(), SeedItems+1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Item(%d) = %v, want ErrNotFound", SeedItems+1, err)
	}
	if _, err := st.UpdateItem(t.Context(), SeedItems+1, ItemUpdate{Name: "x"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateItem(%d) = %v, want ErrNotFound", SeedItems+1, err)
	}
}

func TestStoreQueryTimeout(t *testing.T) {
	t.Parallel()
	st := openTestStore(t, t.TempDir())
	st.timeout = time.Nanosecond
	_, err := st.Report(t.Context())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Report() with a 1ns timeout = %v, want context.DeadlineExceeded", err)
	}
	if got := codeOf(publicError(err)); got != apperr.Unavailable {
		t.Errorf("publicError(%v) code = %q, want %q", err, got, apperr.Unavailable)
	}
}

// BenchmarkReport measures the data report on the default seed (300,000
// sales). Seeding is timed once and reported as seed_ms:
//
//	go test -run '^$' -bench Report -benchtime 20x ./dbsvc/
func BenchmarkReport(b *testing.B) {
	start := time.Now()
	st := openStoreRows(b, b.TempDir(), DefaultConfig().SeedRows, slog.New(slog.DiscardHandler))
	seed := time.Since(start)
	var ms []float64
	for b.Loop() {
		rep, err := st.Report(b.Context())
		if err != nil {
			b.Fatalf("Report() = %v", err)
		}
		ms = append(ms, rep.QueryMS)
	}
	slices.Sort(ms)
	b.ReportMetric(float64(seed.Milliseconds()), "seed_ms")
	b.ReportMetric(ms[len(ms)/2], "median_ms")
	b.ReportMetric(ms[0], "min_ms")
}

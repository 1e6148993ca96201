package dbsvc

import (
	"context"
	"errors"
	"fmt"
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

func TestStoreListItems(t *testing.T) {
	t.Parallel()
	st := openTestStore(t, t.TempDir())
	for _, limit := range []int{1, 7, DefaultListLimit, MaxListLimit} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			before := st.Queries()
			ids := walkItems(t, limit, func(afterID int64) (ItemPage, error) {
				return st.ListItems(t.Context(), afterID, limit)
			})
			if diff := cmp.Diff(seededIDs(), ids); diff != "" {
				t.Errorf("ids listed with limit %d mismatch (-want +got):\n%s", limit, diff)
			}
			// SeedItems/limit full pages, then a short or empty last one.
			pages := int64(SeedItems/limit + 1)
			if got := st.Queries() - before; got != pages {
				t.Errorf("Queries() grew by %d for %d pages, want %d", got, pages, pages)
			}
		})
	}

	t.Run("past the end", func(t *testing.T) {
		page, err := st.ListItems(t.Context(), SeedItems, MaxListLimit)
		if err != nil {
			t.Fatalf("ListItems(%d) = %v", SeedItems, err)
		}
		if page.Items == nil || len(page.Items) != 0 || page.NextAfterID != 0 {
			t.Errorf("ListItems(%d) = %+v, want an empty, non-nil page with no next", SeedItems, page)
		}
	})

	t.Run("same items as Item", func(t *testing.T) {
		page, err := st.ListItems(t.Context(), 41, 1)
		if err != nil {
			t.Fatalf("ListItems(41, 1) = %v", err)
		}
		it, err := st.Item(t.Context(), 42)
		if err != nil {
			t.Fatalf("Item(42) = %v", err)
		}
		if diff := cmp.Diff(ItemPage{Items: []Item{it}, NextAfterID: 42}, page); diff != "" {
			t.Errorf("ListItems(41, 1) mismatch (-want +got):\n%s", diff)
		}
	})
}

// walkItems lists every item, one page of limit items at a time, through
// list, and returns the ids in the order they came. It checks that ids
// ascend and that NextAfterID is set exactly on full pages.
func walkItems(t *testing.T, limit int, list func(afterID int64) (ItemPage, error)) []int64 {
	t.Helper()
	var ids []int64
	var after int64
	for range SeedItems + 2 { // a bound, in case NextAfterID never ends
		page, err := list(after)
		if err != nil {
			t.Fatalf("list after %d = %v", after, err)
		}
		for _, it := range page.Items {
			if len(ids) > 0 && it.ID <= ids[len(ids)-1] {
				t.Fatalf("list after %d: id %d after %d, want ascending ids", after, it.ID, ids[len(ids)-1])
			}
			ids = append(ids, it.ID)
		}
		var wantNext int64
		if len(page.Items) == limit {
			wantNext = page.Items[limit-1].ID
		}
		if page.NextAfterID != wantNext {
			t.Fatalf("list after %d: NextAfterID = %d with %d items, want %d", after, page.NextAfterID, len(page.Items), wantNext)
		}
		if page.NextAfterID == 0 {
			return ids
		}
		after = page.NextAfterID
	}
	t.Fatalf("list with limit %d did not end after %d pages", limit, SeedItems+2)
	return nil
}

// seededIDs returns the ids of the items of a new database: 1..SeedItems.
func seededIDs() []int64 {
	ids := make([]int64, SeedItems)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	return ids
}

func TestStoreDeleteItem(t *testing.T) {
	t.Parallel()
	st := openTestStore(t, t.TempDir())
	ctx := t.Context()
	// Item 1 sells the most (see seedSalesSQL), so its sales must go too.
	const id = 1
	var sales int64
	if err := st.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sales WHERE item_id = ?1`, id).Scan(&sales); err != nil {
		t.Fatalf("count sales: %v", err)
	}
	if sales == 0 {
		t.Fatalf("item %d has no sales; the test needs one that has", id)
	}

	before := st.Queries()
	if err := st.DeleteItem(ctx, id); err != nil {
		t.Fatalf("DeleteItem(%d) = %v", id, err)
	}
	if got := st.Queries() - before; got != 1 {
		t.Errorf("Queries() grew by %d for one DeleteItem, want 1", got)
	}
	if err := st.DeleteItem(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteItem(%d) = %v, want ErrNotFound", id, err)
	}
	if err := st.DeleteItem(ctx, SeedItems+1); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteItem(%d) = %v, want ErrNotFound", SeedItems+1, err)
	}
	if _, err := st.Item(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Item(%d) after delete = %v, want ErrNotFound", id, err)
	}
	page, err := st.ListItems(ctx, 0, 1)
	if err != nil {
		t.Fatalf("ListItems(0, 1) = %v", err)
	}
	if len(page.Items) != 1 || page.Items[0].ID != id+1 {
		t.Errorf("ListItems(0, 1) after delete = %+v, want item %d", page.Items, id+1)
	}
	rep, err := st.Report(ctx)
	if err != nil {
		t.Fatalf("Report() = %v", err)
	}
	if want := testSeedRows - sales; rep.RowsScanned != want {
		t.Errorf("Report().RowsScanned after delete = %d, want %d", rep.RowsScanned, want)
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

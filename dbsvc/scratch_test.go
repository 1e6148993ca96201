package dbsvc

import (
	"sync"
	"testing"
)

func TestScratchRace(t *testing.T) {
	nc := startNATS(t)
	st := openStoreRows(t, t.TempDir(), 10, testLogger(t))
	svc := newService(st, 4, testLogger(t))
	msvc, err := svc.register(nc)
	if err != nil {
		t.Fatal(err)
	}
	defer msvc.Stop()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { _, _ = nc.Request(SubjectItemGet, []byte("bad"), 5e9) })
	}
	wg.Wait()
}

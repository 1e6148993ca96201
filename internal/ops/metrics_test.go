package ops

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

func TestMetricConstructors(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	NewCounter(reg, "t_counter_total", "A counter.").Inc()
	NewCounterVec(reg, "t_vec_total", "A counter vec.", "a", "b").WithLabelValues("x", "y").Inc()
	NewGauge(reg, "t_gauge", "A gauge.").Set(2)
	NewHistogram(reg, "t_seconds", "A histogram.", []float64{1, 2}).Observe(1)
	NewHistogramVec(reg, "t_vec_seconds", "A histogram vec.", []float64{1}, "c").WithLabelValues("z").Observe(3)

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	type family struct {
		Help    string
		Labels  []string
		Buckets int
	}
	got := map[string]family{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		f := family{Help: mf.GetHelp(), Buckets: len(m.GetHistogram().GetBucket())}
		for _, l := range m.GetLabel() {
			f.Labels = append(f.Labels, l.GetName())
		}
		got[mf.GetName()] = f
	}
	want := map[string]family{
		"t_counter_total": {Help: "A counter."},
		"t_vec_total":     {Help: "A counter vec.", Labels: []string{"a", "b"}},
		"t_gauge":         {Help: "A gauge."},
		"t_seconds":       {Help: "A histogram.", Buckets: 2},
		"t_vec_seconds":   {Help: "A histogram vec.", Labels: []string{"c"}, Buckets: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("registered families mismatch (-want +got):\n%s", diff)
	}
}

func TestMetricConstructorPanicsOnDuplicate(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	NewCounter(reg, "t_twice_total", "Once.")
	defer func() {
		if recover() == nil {
			t.Error("NewCounter() with a name already registered did not panic")
		}
	}()
	NewCounter(reg, "t_twice_total", "Twice.")
}

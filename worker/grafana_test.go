package worker

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// descRegistry is a prometheus.Registerer that only records the series
// registered on it (name → label names), from their descriptions: every
// series, including vectors that have no child yet (which a Gather would
// leave out).
type descRegistry struct{ series map[string][]string }

var (
	descName   = regexp.MustCompile(`fqName: "([^"]+)"`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

func (d *descRegistry) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		s := desc.String()
		m := descName.FindStringSubmatch(s)
		if m == nil {
			continue
		}
		var labels []string
		if l := descLabels.FindStringSubmatch(s); l != nil && l[1] != "" {
			labels = strings.Split(l[1], ",")
		}
		d.series[m[1]] = labels
	}
	return nil
}

func (d *descRegistry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}

func (d *descRegistry) Unregister(prometheus.Collector) bool { return true }

// The parts of a PromQL expression the check reads: a series with its
// matchers, and the labels of a by (...) clause.
var (
	seriesRef = regexp.MustCompile(`\b(scalelab_[a-z0-9_]+)(\{[^}]*\})?`)
	matcher   = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	byClause  = regexp.MustCompile(`\bby \(([^)]*)\)`)
	// labelValues is a template variable's query: label_values(series, label).
	labelValues = regexp.MustCompile(`label_values\((scalelab_[a-z0-9_]+),\s*([a-z_]+)\)`)
)

// targetLabels are the labels Prometheus adds to every scraped series,
// and le of histogram buckets.
var targetLabels = []string{"instance", "job", "le"}

// TestGrafanaDashboardUsesRealSeries: every series the Grafana dashboard
// in docs/grafana queries is one the worker registers (a histogram's
// _bucket, _sum and _count included), with the labels its matchers,
// by clauses and template variables name; so the dashboard cannot rot as
// the metrics change. It also checks the dashboard is importable: a
// ${DS_PROMETHEUS} input that every panel uses.
func TestGrafanaDashboardUsesRealSeries(t *testing.T) {
	t.Parallel()
	reg := &descRegistry{series: map[string][]string{}}
	newMetrics(reg)
	if len(reg.series) == 0 {
		t.Fatal("newMetrics registered no series")
	}
	labelsOf := func(name string) ([]string, bool) {
		if l, ok := reg.series[name]; ok {
			return l, true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok {
				if l, ok := reg.series[base]; ok {
					return l, true
				}
			}
		}
		return nil, false
	}

	raw, err := os.ReadFile("../docs/grafana/scalelab-tasks.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Inputs []struct {
			Name     string `json:"name"`
			Type     string `json:"type"`
			PluginID string `json:"pluginId"`
		} `json:"__inputs"`
		SchemaVersion int `json:"schemaVersion"`
		Panels        []struct {
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("docs/grafana/scalelab-tasks.json is not JSON: %v", err)
	}
	if len(dash.Inputs) != 1 || dash.Inputs[0].Name != "DS_PROMETHEUS" || dash.Inputs[0].PluginID != "prometheus" || dash.SchemaVersion < 36 {
		t.Errorf("dashboard inputs %+v, schemaVersion %d; want one DS_PROMETHEUS prometheus input, schemaVersion ≥ 36", dash.Inputs, dash.SchemaVersion)
	}

	used := map[string]bool{}
	exprs := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != "${DS_PROMETHEUS}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %q, %d targets; want ${DS_PROMETHEUS} and a query", p.Title, p.Datasource.UID, len(p.Targets))
		}
		for _, tg := range p.Targets {
			exprs++
			refs := seriesRef.FindAllStringSubmatch(tg.Expr, -1)
			if len(refs) == 0 {
				t.Errorf("panel %q: %q queries no scalelab series", p.Title, tg.Expr)
			}
			var exprLabels []string
			for _, ref := range refs {
				labels, ok := labelsOf(ref[1])
				if !ok {
					t.Errorf("panel %q: series %s is not registered by the worker", p.Title, ref[1])
					continue
				}
				used[ref[1]] = true
				exprLabels = append(exprLabels, labels...)
				for _, m := range matcher.FindAllStringSubmatch(ref[2], -1) {
					if !slices.Contains(labels, m[1]) {
						t.Errorf("panel %q: %s has no label %q (it has %v)", p.Title, ref[1], m[1], labels)
					}
				}
			}
			for _, by := range byClause.FindAllStringSubmatch(tg.Expr, -1) {
				for l := range strings.SplitSeq(by[1], ",") {
					if l = strings.TrimSpace(l); !slices.Contains(exprLabels, l) && !slices.Contains(targetLabels, l) {
						t.Errorf("panel %q: by (%s): no series of %q has the label %q", p.Title, by[1], tg.Expr, l)
					}
				}
			}
		}
	}
	for _, v := range dash.Templating.List {
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("template variable %s: %q is not label_values(<scalelab series>, <label>)", v.Name, v.Definition)
			continue
		}
		if labels, ok := labelsOf(m[1]); !ok || !slices.Contains(labels, m[2]) {
			t.Errorf("template variable %s: %s has no label %s (registered: %v)", v.Name, m[1], m[2], ok)
		}
	}
	// The series an operator alerts on are all on the dashboard.
	for _, want := range []string{
		"scalelab_worker_queue_depth", "scalelab_worker_queue_in_flight", "scalelab_worker_queue_oldest_age_seconds",
		"scalelab_worker_queue_paused", "scalelab_worker_tasks_total", "scalelab_worker_dead_tasks", "scalelab_worker_tasks_running",
	} {
		if !used[want] {
			t.Errorf("the dashboard has no panel on %s", want)
		}
	}
	t.Logf("%d queries over %d series", exprs, len(used))
}

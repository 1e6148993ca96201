package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Report is a scenario's raw results: report.json, which compare reads,
// and the source of report.md and its charts.
type Report struct {
	Scenario string    `json:"scenario"`
	Title    string    `json:"title"`
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Machine  Machine   `json:"machine"`
	// Options are the bench's options, as given.
	Options map[string]string `json:"options"`
	Results []Result          `json:"results"`
	// Findings are what the results show, in sentences with the ratios.
	Findings []string `json:"findings"`
	// Charts are the PNG files written next to the report.
	Charts []Chart `json:"charts"`
	// Soak is a soak run's samples and verdicts (scalelab bench soak).
	Soak *Soak `json:"soak,omitempty"`
	// Chaos is a chaos run's counts (scalelab chaos).
	Chaos *Chaos `json:"chaos,omitempty"`

	specs []chartSpec // the charts to draw, asked for by the scenario
}

// Chart is one PNG chart of a report.
type Chart struct {
	File  string `json:"file"`
	Title string `json:"title"`
}

// Machine says where a report was measured.
type Machine struct {
	Host      string `json:"host"`
	OS        string `json:"os"`
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go"`
	// LoadAvg is /proc/loadavg at the start: other work skews figures.
	LoadAvg string `json:"loadavg,omitempty"`
}

func thisMachine() Machine {
	m := Machine{Host: hostname(), OS: runtime.GOOS + "/" + runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return m
}

// result returns the run named name, or false.
func (r *Report) result(name string) (Result, bool) {
	for _, x := range r.Results {
		if x.Name == name {
			return x, true
		}
	}
	return Result{}, false
}

// finding adds a sentence to the findings.
func (r *Report) finding(format string, args ...any) {
	r.Findings = append(r.Findings, fmt.Sprintf(format, args...))
}

// write writes report.json, the charts and report.md to dir.
func (r *Report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	charts, err := writeCharts(r, dir)
	if err != nil {
		return err
	}
	r.Charts = charts
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	var md strings.Builder
	r.markdown(&md)
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(md.String()), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// ReadReport reads a report.json.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("bench: %s is not a report.json: %w", path, err)
	}
	if r.Scenario == "" {
		return nil, fmt.Errorf("bench: %s is not a report.json: no scenario", path)
	}
	return &r, nil
}

// markdown writes the report as Markdown: findings, charts, the table of
// results, and the exact configuration.
func (r *Report) markdown(w io.Writer) {
	fmt.Fprintf(w, "# scalelab bench %s: %s\n\n", r.Scenario, r.Title)
	fmt.Fprintf(w, "Measured %s on %s (%s, %d CPUs, %s, load average %s at the start); %.0f s in all.\n\n",
		r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Machine.Host, r.Machine.OS, r.Machine.CPUs, r.Machine.GoVersion,
		r.Machine.LoadAvg, r.Seconds)
	if len(r.Findings) > 0 {
		fmt.Fprintf(w, "## Findings\n\n")
		for _, f := range r.Findings {
			fmt.Fprintf(w, "- %s\n", f)
		}
		fmt.Fprintln(w)
	}
	for _, c := range r.Charts {
		fmt.Fprintf(w, "![%s](%s)\n\n", c.Title, c.File)
	}
	if r.Soak != nil {
		r.Soak.markdown(w)
	}
	if r.Chaos != nil {
		r.Chaos.markdown(w)
	}
	if len(r.Results) > 0 { // a chaos run has its own tables
		fmt.Fprintf(w, "## Results\n\nLatency percentiles are from an HDR histogram of every request, in ms. req/s counts 2xx answers.\n\n")
		fmt.Fprintf(w, "| run | load | req/s | p50 | p90 | p99 | p99.9 | max | requests | errors | hit ratio | per gateway |\n")
		fmt.Fprintf(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	}
	for _, x := range r.Results {
		load := fmt.Sprintf("%d conns", x.Connections)
		if x.Rate > 0 {
			load = fmt.Sprintf("%d/s", x.Rate)
		}
		hit := "–"
		if x.HitRatio != nil {
			hit = fmt.Sprintf("%.3f", *x.HitRatio)
		}
		fmt.Fprintf(w, "| %s | %s | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %d | %d | %s | %s |\n",
			x.Name, load, x.Throughput, x.Latency.P50, x.Latency.P90, x.Latency.P99, x.Latency.P999, x.Latency.Max,
			x.Requests, x.Errors, hit, shares(x))
	}
	if len(r.Results) > 0 {
		fmt.Fprintln(w)
	}
	var extra []string
	for _, x := range r.Results {
		for _, k := range slices.Sorted(maps.Keys(x.Metrics)) {
			extra = append(extra, fmt.Sprintf("| %s | %s | %g |", x.Name, k, x.Metrics[k]))
		}
	}
	if len(extra) > 0 {
		fmt.Fprintf(w, "| run | figure | value |\n|---|---|--:|\n%s\n\n", strings.Join(extra, "\n"))
	}
	var errs []string
	for _, x := range r.Results {
		if len(x.ErrorSamples) > 0 {
			errs = append(errs, fmt.Sprintf("- %s: %s", x.Name, strings.Join(x.ErrorSamples, "; ")))
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(w, "Errors seen:\n\n%s\n\n", strings.Join(errs, "\n"))
	}
	fmt.Fprintf(w, "## Configuration\n\n")
	fmt.Fprintf(w, "Options: `%s`\n\n", formatMap(r.Options))
	for _, x := range r.Results {
		fmt.Fprintf(w, "- %s: `%s`\n", x.Name, formatMap(x.Config))
	}
	fmt.Fprintf(w, "\nRaw results: `report.json` (compare two runs with `scalelab bench compare a/report.json b/report.json`).\n")
}

// shares formats a run's per-gateway distribution, e.g. "gw1 50.1% · gw2 49.9%".
func shares(x Result) string {
	if len(x.Gateways) == 0 {
		return "–"
	}
	s := x.Share()
	var parts []string
	for _, g := range slices.Sorted(maps.Keys(s)) {
		parts = append(parts, fmt.Sprintf("%s %.1f%%", g, 100*s[g]))
	}
	return strings.Join(parts, " · ")
}

func formatMap(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, " ")
}

// Compare writes, as Markdown, each run of a and b side by side with the
// ratio b/a of throughput and p99: what changed between two runs of one
// scenario (another machine, a code change, a setting).
func Compare(w io.Writer, a, b *Report) error {
	if a.Scenario != b.Scenario {
		return fmt.Errorf("bench: cannot compare scenario %q with %q", a.Scenario, b.Scenario)
	}
	fmt.Fprintf(w, "# %s: A = %s (%s), B = %s (%s)\n\n", a.Scenario,
		a.Started.UTC().Format(time.DateTime), a.Machine.Host, b.Started.UTC().Format(time.DateTime), b.Machine.Host)
	fmt.Fprintf(w, "| run | req/s A | req/s B | B/A | p99 A | p99 B | B/A | errors A | errors B |\n")
	fmt.Fprintf(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	matched := 0
	for _, x := range a.Results {
		y, ok := b.result(x.Name)
		if !ok {
			fmt.Fprintf(w, "| %s | %.1f | – | – | %.2f | – | – | %d | – |\n", x.Name, x.Throughput, x.Latency.P99, x.Errors)
			continue
		}
		matched++
		fmt.Fprintf(w, "| %s | %.1f | %.1f | %s | %.2f | %.2f | %s | %d | %d |\n", x.Name, x.Throughput, y.Throughput,
			ratio(y.Throughput, x.Throughput), x.Latency.P99, y.Latency.P99, ratio(y.Latency.P99, x.Latency.P99), x.Errors, y.Errors)
	}
	for _, y := range b.Results {
		if _, ok := a.result(y.Name); !ok {
			fmt.Fprintf(w, "| %s | – | %.1f | – | – | %.2f | – | – | %d |\n", y.Name, y.Throughput, y.Latency.P99, y.Errors)
		}
	}
	if matched == 0 {
		return errors.New("bench: the two reports have no run in common")
	}
	return nil
}

// ratio formats n/d as "1.23×", or "–" when d is zero.
func ratio(n, d float64) string {
	switch {
	case d == 0:
		return "–"
	case n/d < 0.1:
		return fmt.Sprintf("%.3f×", n/d)
	case n/d >= 100:
		return fmt.Sprintf("%.0f×", n/d)
	}
	return fmt.Sprintf("%.2f×", n/d)
}

package bench

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// chartSpec is a chart a scenario asks for; it is drawn from the results
// when the report is written.
type chartSpec struct {
	file, title string
	draw        func(*plot.Plot) error
}

// series is one named row of values, one per category.
type series struct {
	name   string
	values []float64
}

// bars is a grouped bar chart: one group per category, one bar per series,
// each bar labelled with its value (so a 15 next to a 19,000 is still read).
func bars(ylabel string, categories []string, rows []series, format string) func(*plot.Plot) error {
	return func(p *plot.Plot) error {
		p.Y.Label.Text = ylabel
		p.NominalX(categories...)
		p.Legend.Top, p.Legend.Left = true, true
		p.Legend.XOffs = vg.Points(8)
		width := vg.Points(min(40, 300/float64(max(1, len(rows)*len(categories)))))
		for i, s := range rows {
			b, err := plotter.NewBarChart(plotter.Values(s.values), width)
			if err != nil {
				return err
			}
			b.Color, b.LineStyle.Width = plotutil.Color(i), 0
			b.Offset = width * vg.Length(float64(i)-float64(len(rows)-1)/2)
			p.Add(b)
			if len(rows) > 1 {
				p.Legend.Add(s.name, b)
			}
			var l plotter.XYLabels
			for j, v := range s.values {
				l.XYs = append(l.XYs, plotter.XY{X: float64(j), Y: v}) // moved over its bar by Offset below
				l.Labels = append(l.Labels, fmt.Sprintf(format, v))
			}
			labels, err := plotter.NewLabels(l)
			if err != nil {
				return err
			}
			for j := range labels.TextStyle {
				labels.TextStyle[j].XAlign = -0.5
				labels.TextStyle[j].YAlign = 0
				labels.TextStyle[j].Font.Size = vg.Points(7)
			}
			labels.Offset = vg.Point{X: b.Offset, Y: 2}
			p.Add(labels)
		}
		p.Y.Min = 0
		p.Y.Max *= 1.35 // room for the labels and legend
		p.X.Min, p.X.Max = -0.75, float64(len(categories))-0.25
		return nil
	}
}

// lines is a line chart of series over x.
func lines(xlabel, ylabel string, x []float64, rows []series) func(*plot.Plot) error {
	return func(p *plot.Plot) error {
		p.X.Label.Text, p.Y.Label.Text = xlabel, ylabel
		p.Legend.Top = true
		p.Add(plotter.NewGrid())
		for i, s := range rows {
			xys := make(plotter.XYs, len(s.values))
			for j, v := range s.values {
				xys[j] = plotter.XY{X: x[j], Y: v}
			}
			l, pts, err := plotter.NewLinePoints(xys)
			if err != nil {
				return err
			}
			l.Color, pts.Color = plotutil.Color(i), plotutil.Color(i)
			l.Width = vg.Points(1.5)
			p.Add(l, pts)
			p.Legend.Add(s.name, l, pts)
		}
		p.Y.Min = 0
		p.Y.Max *= 1.3 // room for the legend
		return nil
	}
}

// mark is a vertical line at x with a label: an event on a timeline.
type mark struct {
	x     float64
	label string
}

// marked draws the chart draw draws, then a dashed vertical line for each
// mark across its whole height, labelled at the top.
func marked(draw func(*plot.Plot) error, marks []mark) func(*plot.Plot) error {
	return func(p *plot.Plot) error {
		if err := draw(p); err != nil {
			return err
		}
		top := p.Y.Max
		var l plotter.XYLabels
		for _, m := range marks {
			line, err := plotter.NewLine(plotter.XYs{{X: m.x, Y: p.Y.Min}, {X: m.x, Y: top}})
			if err != nil {
				return err
			}
			line.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
			line.Color = color.Gray{Y: 110}
			p.Add(line)
			l.XYs = append(l.XYs, plotter.XY{X: m.x, Y: top})
			l.Labels = append(l.Labels, m.label)
		}
		labels, err := plotter.NewLabels(l)
		if err != nil {
			return err
		}
		for j := range labels.TextStyle {
			labels.TextStyle[j].Rotation = -math.Pi / 2
			labels.TextStyle[j].Font.Size = vg.Points(6)
			labels.TextStyle[j].XAlign = 0.2
		}
		p.Add(labels)
		return nil
	}
}

// chart asks for a chart in the report.
func (r *Report) chart(file, title string, draw func(*plot.Plot) error) {
	r.specs = append(r.specs, chartSpec{file: file, title: title, draw: draw})
}

// writeCharts draws every chart the scenario asked for, as PNG in dir.
func writeCharts(r *Report, dir string) ([]Chart, error) {
	var out []Chart
	for _, c := range r.specs {
		p := plot.New()
		p.Title.Text = c.title
		if err := c.draw(p); err != nil {
			return nil, fmt.Errorf("bench: chart %s: %w", c.file, err)
		}
		if err := p.Save(9*vg.Inch, 4.5*vg.Inch, filepath.Join(dir, c.file)); err != nil {
			return nil, fmt.Errorf("bench: chart %s: %w", c.file, err)
		}
		out = append(out, Chart{File: c.file, Title: c.title})
	}
	return out, nil
}

package loadgen

import (
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
	"strings"
)

// series is one polyline of a panel.
type series struct {
	name   string
	color  string
	dashed bool
	x, y   []float64
}

const (
	plotW      = 900
	panelH     = 260
	marginL    = 80
	marginR    = 170
	marginT    = 70
	panelGap   = 70
	plotInnerW = plotW - marginL - marginR
)

// chart is the layout WriteSVG and WritePNG both draw: sizes, texts, and
// each panel's scales and ticks, so the two formats cannot drift apart.
type chart struct {
	width, height int
	title, sub    string
	panels        []chartPanel
}

// chartPanel is one panel: its top edge, label, series and axis ranges.
type chartPanel struct {
	top            int
	label          string
	series         []series
	xmax, ymax     float64
	xticks, yticks []float64
}

// Legend entries sit right of the plot area: a short line, then the name.
const (
	legendX0   = plotW - marginR + 15
	legendX1   = plotW - marginR + 40
	legendText = plotW - marginR + 46
	xLabel     = "seconds into the phase"
)

func (p *chartPanel) px(x float64) float64 { return marginL + x/p.xmax*plotInnerW }
func (p *chartPanel) py(y float64) float64 { return float64(p.top+panelH) - y/p.ymax*panelH }

// legendY is the text baseline of legend entry i; its line is 4 px above.
func (p *chartPanel) legendY(i int) int { return p.top + 14 + 18*i }

// layout lays out the report's timelines: latency percentiles of each call
// (top) and throughput (bottom) over each phase's time, the floor dashed.
func (r *Report) layout() *chart {
	var lat, thr []series
	add := func(p *Phase, dashed bool) {
		if p == nil {
			return
		}
		var x, p50, p90, p99, ops []float64
		for _, pt := range p.Timeline {
			x = append(x, pt.TSec)
			p50 = append(p50, float64(pt.P50US)/1000)
			p90 = append(p90, float64(pt.P90US)/1000)
			p99 = append(p99, float64(pt.P99US)/1000)
			ops = append(ops, pt.OpsPerSec)
		}
		lat = append(lat,
			series{p.Name + " p50", "#1f77b4", dashed, x, p50},
			series{p.Name + " p90", "#2ca02c", dashed, x, p90},
			series{p.Name + " p99", "#d62728", dashed, x, p99})
		thr = append(thr, series{p.Name + " ops/s", map[bool]string{false: "#9467bd", true: "#7f7f7f"}[dashed], dashed, x, ops})
	}
	add(r.Floor, true)
	add(r.Idem, false)
	c := r.Config
	ch := &chart{
		width:  plotW,
		height: marginT + 2*panelH + panelGap + 50,
		title:  fmt.Sprintf("idemctl bench %s, %s", r.Target, r.StartedAt.Format("2006-01-02 15:04 UTC")),
		sub:    fmt.Sprintf("op %s, mix %s, batch %d, concurrency %d, conns %d", c.Op, c.Mix, max(1, c.Batch), c.Concurrency, c.Conns),
	}
	if c.Rate > 0 {
		ch.sub += fmt.Sprintf(", open loop %.0f calls/s", c.Rate)
	}
	ch.panels = []chartPanel{
		newPanel(marginT, "latency per call (ms)", lat),
		newPanel(marginT+panelH+panelGap, "throughput (ops/s)", thr),
	}
	return ch
}

func newPanel(top int, label string, ss []series) chartPanel {
	p := chartPanel{top: top, label: label, series: ss}
	for _, s := range ss {
		for i := range s.x {
			p.xmax = math.Max(p.xmax, s.x[i])
			p.ymax = math.Max(p.ymax, s.y[i])
		}
	}
	if p.xmax == 0 {
		p.xmax = 1
	}
	p.ymax = niceCeil(p.ymax)
	// five steps up the y axis; x ticks at round steps (time axes end
	// wherever the phase ended)
	for i := 0; i <= 5; i++ {
		p.yticks = append(p.yticks, p.ymax*float64(i)/5)
	}
	step := niceStep(p.xmax / 5)
	for x := 0.0; x <= p.xmax*1.0001; x += step {
		p.xticks = append(p.xticks, x)
	}
	return p
}

// WriteSVG draws the report's timelines: latency percentiles of each call
// (top) and throughput (bottom) over each phase's time, the floor dashed.
func (r *Report) WriteSVG(w io.Writer) error {
	ch := r.layout()
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", ch.width, ch.height, ch.width, ch.height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14">%s</text>`+"\n", marginL, html.EscapeString(ch.title))
	fmt.Fprintf(&b, `<text x="%d" y="38">%s</text>`+"\n", marginL, html.EscapeString(ch.sub))
	for i := range ch.panels {
		svgPanel(&b, &ch.panels[i])
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", marginL+plotInnerW/2, ch.height-10, xLabel)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func svgPanel(b *strings.Builder, p *chartPanel) {
	top := p.top
	fmt.Fprintf(b, `<text x="%d" y="%d">%s</text>`+"\n", marginL, top-8, html.EscapeString(p.label))
	for _, y := range p.yticks {
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", marginL, p.py(y), marginL+plotInnerW, p.py(y))
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginL-6, p.py(y)+4, tick(y))
	}
	for _, x := range p.xticks {
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", p.px(x), top+panelH+16, tick(x))
	}
	fmt.Fprintf(b, `<polyline points="%d,%d %d,%d %d,%d" fill="none" stroke="black"/>`+"\n", marginL, top, marginL, top+panelH, marginL+plotInnerW, top+panelH)
	for i, s := range p.series {
		var pts []string
		for j := range s.x {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", p.px(s.x[j]), p.py(s.y[j])))
		}
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6,4"`
		}
		fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"%s/>`+"\n", strings.Join(pts, " "), s.color, dash)
		ly := p.legendY(i)
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", legendX0, ly-4, legendX1, ly-4, s.color, dash)
		fmt.Fprintf(b, `<text x="%d" y="%d">%s</text>`+"\n", legendText, ly, html.EscapeString(s.name))
	}
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// niceStep rounds up to 1, 2, 2.5 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func tick(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.0f", v)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

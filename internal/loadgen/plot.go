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

// WriteSVG draws the report's timelines: latency percentiles of each call
// (top) and throughput (bottom) over each phase's time, the floor dashed.
func (r *Report) WriteSVG(w io.Writer) error {
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
	var b strings.Builder
	height := marginT + 2*panelH + panelGap + 50
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", plotW, height, plotW, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	c := r.Config
	title := fmt.Sprintf("idemctl bench %s, %s", r.Target, r.StartedAt.Format("2006-01-02 15:04 UTC"))
	sub := fmt.Sprintf("op %s, mix %s, batch %d, concurrency %d, conns %d", c.Op, c.Mix, max(1, c.Batch), c.Concurrency, c.Conns)
	if c.Rate > 0 {
		sub += fmt.Sprintf(", open loop %.0f calls/s", c.Rate)
	}
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14">%s</text>`+"\n", marginL, html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="%d" y="38">%s</text>`+"\n", marginL, html.EscapeString(sub))
	panel(&b, marginT, "latency per call (ms)", lat)
	panel(&b, marginT+panelH+panelGap, "throughput (ops/s)", thr)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">seconds into the phase</text>`+"\n", marginL+plotInnerW/2, height-10)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func panel(b *strings.Builder, top int, label string, ss []series) {
	xmax, ymax := 0.0, 0.0
	for _, s := range ss {
		for i := range s.x {
			xmax = math.Max(xmax, s.x[i])
			ymax = math.Max(ymax, s.y[i])
		}
	}
	if xmax == 0 {
		xmax = 1
	}
	ymax = niceCeil(ymax)
	px := func(x float64) float64 { return marginL + x/xmax*plotInnerW }
	py := func(y float64) float64 { return float64(top+panelH) - y/ymax*panelH }
	fmt.Fprintf(b, `<text x="%d" y="%d">%s</text>`+"\n", marginL, top-8, html.EscapeString(label))
	// axes and grid: five steps on each axis
	for i := 0; i <= 5; i++ {
		y := ymax * float64(i) / 5
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", marginL, py(y), marginL+plotInnerW, py(y))
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginL-6, py(y)+4, tick(y))
	}
	// x ticks at round steps (time axes end wherever the phase ended)
	step := niceStep(xmax / 5)
	for x := 0.0; x <= xmax*1.0001; x += step {
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px(x), top+panelH+16, tick(x))
	}
	fmt.Fprintf(b, `<polyline points="%d,%d %d,%d %d,%d" fill="none" stroke="black"/>`+"\n", marginL, top, marginL, top+panelH, marginL+plotInnerW, top+panelH)
	for i, s := range ss {
		var pts []string
		for j := range s.x {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.x[j]), py(s.y[j])))
		}
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6,4"`
		}
		fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"%s/>`+"\n", strings.Join(pts, " "), s.color, dash)
		ly := top + 14 + 18*i
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", plotW-marginR+15, ly-4, plotW-marginR+40, ly-4, s.color, dash)
		fmt.Fprintf(b, `<text x="%d" y="%d">%s</text>`+"\n", plotW-marginR+46, ly, html.EscapeString(s.name))
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

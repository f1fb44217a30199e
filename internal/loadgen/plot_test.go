package loadgen

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"os"
	"testing"
	"time"
)

// chartReport is a report with floor and idem timelines, built without a
// server so the chart's input is fixed.
func chartReport() *Report {
	phase := func(name string, scale int64) *Phase {
		p := &Phase{Name: name}
		for i := 1; i <= 20; i++ {
			v := int64(i%7+1) * scale
			p.Timeline = append(p.Timeline, Point{
				TSec: float64(i) * 0.25, OpsPerSec: float64(9000+300*(i%5)) / float64(scale/100),
				P50US: v, P90US: 2 * v, P99US: 4 * v,
			})
		}
		return p
	}
	return &Report{
		Target: "127.0.0.1:50091", StartedAt: time.Date(2026, 11, 27, 11, 30, 0, 0, time.UTC),
		Config: ReportConfig{Op: OpReserve, Mix: Mix{New: 100}, Batch: 1, Concurrency: 50, Conns: 1},
		Floor:  phase("floor", 100), Idem: phase("idem", 300),
	}
}

// TestSVGUnchanged pins the SVG to testdata/chart.svg, written before the
// layout was shared with the PNG, so the refactor cannot change it.
func TestSVGUnchanged(t *testing.T) {
	want, err := os.ReadFile("testdata/chart.svg")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := chartReport().WriteSVG(&got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("WriteSVG() differs from testdata/chart.svg:\ngot:\n%s", got.String())
	}
}

func TestWritePNG(t *testing.T) {
	var buf bytes.Buffer
	if err := chartReport().WritePNG(&buf); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("WritePNG() is not a PNG: %v", err)
	}
	ch := chartReport().layout()
	if got, want := img.Bounds(), image.Rect(0, 0, ch.width, ch.height); got != want {
		t.Fatalf("PNG bounds = %v, want %v", got, want)
	}
	for _, p := range ch.panels {
		area := image.Rect(marginL+1, p.top, marginL+plotInnerW+1, p.top+panelH)
		legend := image.Rect(legendX0, p.top, plotW, p.top+panelH)
		for _, s := range p.series {
			t.Run(s.name, func(t *testing.T) {
				col, err := hexColor(s.color)
				if err != nil {
					t.Fatal(err)
				}
				if got := countColor(img, area, col); got < 20 {
					t.Errorf("plot area of %q has %d pixels of %s, want at least 20", p.label, got, s.color)
				}
				if got := countColor(img, legend, col); got < 20 {
					t.Errorf("legend of %q has %d pixels of %s, want at least 20", p.label, got, s.color)
				}
			})
		}
		// tick labels left of the y axis
		black := color.RGBA{0, 0, 0, 0xff}
		if got := countColor(img, image.Rect(0, p.top-5, marginL-2, p.top+panelH+5), black); got < 30 {
			t.Errorf("y tick labels of %q: %d black pixels, want at least 30", p.label, got)
		}
		if got := countColor(img, image.Rect(marginL-20, p.top+panelH+4, marginL+plotInnerW+20, p.top+panelH+20), black); got < 30 {
			t.Errorf("x tick labels of %q: %d black pixels, want at least 30", p.label, got)
		}
	}
}

func countColor(img image.Image, r image.Rectangle, want color.RGBA) int {
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if color.RGBAModel.Convert(img.At(x, y)) == want {
				n++
			}
		}
	}
	return n
}

func TestLine(t *testing.T) {
	red := color.RGBA{0xff, 0, 0, 0xff}
	for _, tc := range []struct {
		name           string
		x0, y0, x1, y1 float64
		width          int
		dash           *dash
		want           int
	}{
		{"horizontal", 2, 5, 21, 5, 2, nil, 40},
		{"vertical", 5, 2, 5, 21, 2, nil, 40},
		{"diagonal", 2, 2, 21, 21, 2, nil, 40},
		{"shallow", 0, 0, 29, 10, 2, nil, 60},
		{"backwards", 21, 9, 2, 3, 1, nil, 20},
		{"one point", 4, 4, 4, 4, 2, nil, 2},
		{"dashed 6 on 4 off", 0, 5, 29, 5, 1, &dash{on: 6, off: 4}, 18},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &canvas{img: image.NewRGBA(image.Rect(0, 0, 40, 40))}
			c.line(tc.x0, tc.y0, tc.x1, tc.y1, red, tc.width, tc.dash)
			if got := countColor(c.img, c.img.Bounds(), red); got != tc.want {
				t.Errorf("line(%v,%v→%v,%v, width %d) set %d pixels, want %d", tc.x0, tc.y0, tc.x1, tc.y1, tc.width, got, tc.want)
			}
			// both ends are drawn
			for _, p := range []image.Point{{int(tc.x0), int(tc.y0)}, {int(tc.x1), int(tc.y1)}} {
				if got := c.img.RGBAAt(p.X, p.Y); tc.dash == nil && got != red {
					t.Errorf("end %v = %v, want %v", p, got, red)
				}
			}
		})
	}
}

func TestHexColor(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    color.RGBA
		wantErr bool
	}{
		{"#1f77b4", color.RGBA{0x1f, 0x77, 0xb4, 0xff}, false},
		{"#ddd", color.RGBA{0xdd, 0xdd, 0xdd, 0xff}, false},
		{"#12345", color.RGBA{}, true},
		{"#gggggg", color.RGBA{}, true},
		{"", color.RGBA{}, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := hexColor(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("hexColor(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

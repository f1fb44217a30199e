package loadgen

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// WritePNG draws the same chart as WriteSVG into a bitmap and encodes it as
// PNG, so a chart can be made without an SVG renderer.
func (r *Report) WritePNG(w io.Writer) error {
	ch := r.layout()
	c := &canvas{img: image.NewRGBA(image.Rect(0, 0, ch.width, ch.height))}
	draw.Draw(c.img, c.img.Bounds(), image.White, image.Point{}, draw.Src)
	black := color.RGBA{0, 0, 0, 0xff}
	// basicfont has one size; the title is overstruck to set it apart.
	c.text(marginL, 20, ch.title, anchorStart, black)
	c.text(marginL+1, 20, ch.title, anchorStart, black)
	c.text(marginL, 38, ch.sub, anchorStart, black)
	for i := range ch.panels {
		if err := c.panel(&ch.panels[i]); err != nil {
			return err
		}
	}
	c.text(marginL+plotInnerW/2, ch.height-10, xLabel, anchorMiddle, black)
	if err := png.Encode(w, c.img); err != nil {
		return fmt.Errorf("idem: encoding the PNG chart: %w", err)
	}
	return nil
}

type anchor int

const (
	anchorStart anchor = iota
	anchorMiddle
	anchorEnd
)

// canvas draws lines and text onto an RGBA image without antialiasing, so
// every series keeps its exact colour.
type canvas struct {
	img *image.RGBA
}

func (c *canvas) panel(p *chartPanel) error {
	black := color.RGBA{0, 0, 0, 0xff}
	grid, err := hexColor("#ddd")
	if err != nil {
		return err
	}
	top := p.top
	c.text(marginL, top-8, p.label, anchorStart, black)
	for _, y := range p.yticks {
		c.line(marginL, p.py(y), marginL+plotInnerW, p.py(y), grid, 1, nil)
		c.text(marginL-6, int(math.Round(p.py(y)))+4, tick(y), anchorEnd, black)
	}
	for _, x := range p.xticks {
		c.text(int(math.Round(p.px(x))), top+panelH+16, tick(x), anchorMiddle, black)
	}
	c.line(marginL, float64(top), marginL, float64(top+panelH), black, 1, nil)
	c.line(marginL, float64(top+panelH), marginL+plotInnerW, float64(top+panelH), black, 1, nil)
	for i, s := range p.series {
		col, err := hexColor(s.color)
		if err != nil {
			return err
		}
		var d *dash
		if s.dashed {
			d = &dash{on: 6, off: 4}
		}
		for j := 1; j < len(s.x); j++ {
			c.line(p.px(s.x[j-1]), p.py(s.y[j-1]), p.px(s.x[j]), p.py(s.y[j]), col, 2, d)
		}
		if len(s.x) == 1 {
			c.line(p.px(s.x[0]), p.py(s.y[0]), p.px(s.x[0]), p.py(s.y[0]), col, 2, d)
		}
		ly := p.legendY(i)
		if d != nil {
			d.pos = 0
		}
		c.line(legendX0, float64(ly-4), legendX1, float64(ly-4), col, 2, d)
		c.text(legendText, ly, s.name, anchorStart, black)
	}
	return nil
}

// dash is a stroke pattern whose position carries over from one segment of
// a polyline to the next, as an SVG stroke-dasharray does.
type dash struct {
	on, off, pos float64
}

// line draws from (x0,y0) to (x1,y1) with Bresenham's algorithm, width
// pixels thick across the line's major axis.
func (c *canvas) line(fx0, fy0, fx1, fy1 float64, col color.RGBA, width int, d *dash) {
	x0, y0 := int(math.Round(fx0)), int(math.Round(fy0))
	x1, y1 := int(math.Round(fx1)), int(math.Round(fy1))
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	steep := -dy > dx
	// length of one step along the line, to advance the dash pattern
	step := 1.0
	if n := max(dx, -dy); n > 0 {
		step = math.Hypot(float64(dx), float64(dy)) / float64(n)
	}
	e := dx + dy
	for {
		if d == nil || math.Mod(d.pos, d.on+d.off) < d.on {
			for k := range width {
				off := k - (width-1)/2
				if steep {
					c.img.SetRGBA(x0+off, y0, col)
				} else {
					c.img.SetRGBA(x0, y0+off, col)
				}
			}
		}
		if x0 == x1 && y0 == y1 {
			return
		}
		if d != nil {
			d.pos += step
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

// text draws s with its baseline at y, anchored at x as SVG's text-anchor.
func (c *canvas) text(x, y int, s string, a anchor, col color.RGBA) {
	face := basicfont.Face7x13
	d := &font.Drawer{Dst: c.img, Src: image.NewUniform(col), Face: face}
	switch w := d.MeasureString(s).Round(); a {
	case anchorMiddle:
		x -= w / 2
	case anchorEnd:
		x -= w
	}
	d.Dot = fixed.P(x, y)
	d.DrawString(s)
}

// hexColor parses #rgb and #rrggbb.
func hexColor(s string) (color.RGBA, error) {
	h := s
	if len(h) > 0 && h[0] == '#' {
		h = h[1:]
	}
	if len(h) == 3 {
		h = string([]byte{h[0], h[0], h[1], h[1], h[2], h[2]})
	}
	v, err := strconv.ParseUint(h, 16, 32)
	if err != nil || len(h) != 6 {
		return color.RGBA{}, fmt.Errorf("idem: chart colour %q is not #rgb or #rrggbb", s)
	}
	return color.RGBA{uint8(v >> 16), uint8(v >> 8), uint8(v), 0xff}, nil
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}

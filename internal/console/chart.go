package console

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// chartView is the throughput chart, drawn as SVG by the overview's
// template from numbers only (names are escaped by the template).
type chartView struct {
	Width, Height int
	Left, Bottom  int // plot area offsets
	Lines         []chartLine
	YTicks        []chartTick
	XTicks        []chartTick
	Empty         bool
}

type chartLine struct {
	Name, Color, Points string
	Last                string
}

type chartTick struct {
	Pos   int
	Label string
}

var palette = []string{"#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"}

// buildChart plots each agent's deliveries per second over the sampled
// history.
func buildChart(points []ratePoint, agents []string) chartView {
	c := chartView{Width: 720, Height: 200, Left: 48, Bottom: 24}
	plotW, plotH := c.Width-c.Left-8, c.Height-c.Bottom-8
	for len(points) > 0 && len(points[0].Rates) == 0 {
		points = points[1:] // the first sample has no rate yet
	}
	if len(points) < 2 {
		c.Empty = true
		return c
	}
	maxRate := 0.0
	for _, p := range points {
		for _, r := range p.Rates {
			maxRate = math.Max(maxRate, r)
		}
	}
	top := niceCeil(maxRate)
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		c.YTicks = append(c.YTicks, chartTick{Pos: 8 + plotH - int(float64(plotH)*float64(i)/4), Label: strconv.FormatFloat(v, 'f', -1, 64)})
	}
	t0, t1 := points[0].At, points[len(points)-1].At
	span := t1.Sub(t0).Seconds()
	if span <= 0 {
		span = 1
	}
	x := func(i int) float64 { return float64(c.Left) + float64(plotW)*points[i].At.Sub(t0).Seconds()/span }
	for _, i := range []int{0, len(points) / 2, len(points) - 1} {
		ago := t1.Sub(points[i].At).Round(time.Second)
		if span < 10 {
			ago = t1.Sub(points[i].At).Round(100 * time.Millisecond)
		}
		label := "now"
		if ago > 0 {
			label = "-" + ago.String()
		}
		c.XTicks = append(c.XTicks, chartTick{Pos: int(x(i)), Label: label})
	}
	for k, a := range agents {
		var b strings.Builder
		last, n := -1.0, 0
		for i, p := range points {
			r, ok := p.Rates[a]
			if !ok {
				continue
			}
			y := 8 + float64(plotH) - float64(plotH)*r/top
			fmt.Fprintf(&b, "%.1f,%.1f ", x(i), y)
			last, n = r, n+1
		}
		if n < 2 {
			continue // one point draws no line
		}
		c.Lines = append(c.Lines, chartLine{Name: a, Color: palette[k%len(palette)], Points: strings.TrimSpace(b.String()),
			Last: strconv.FormatFloat(last, 'f', 1, 64) + "/s"})
	}
	if len(c.Lines) == 0 {
		c.Empty = true
	}
	return c
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (at least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
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

package web

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// Chart geometry (SVG user units; the SVG scales to the page width).
const (
	chartW, chartH   = 900, 260
	padL, padR       = 56, 16
	padT, padB       = 16, 36
	plotW, plotH     = chartW - padL - padR, chartH - padT - padB
	activeSpan       = 24 * time.Hour
	activeStep       = 15 * time.Minute
	detectionsWindow = 48 * time.Hour
)

type tick struct {
	Pos   float64
	Label string
}

type bar struct {
	X, Y, W, H float64
	Title      string
}

// chart is an SVG line or bar chart, laid out here so that the template
// only draws.
type chart struct {
	Title, Unit   string
	W, H          int
	Left, Top     int
	Right, Bottom int
	Line          string // polyline points
	Area          string // polygon under the line
	Bars          []bar
	YTicks        []tick
	XTicks        []tick
	Max, Last     int
	Empty         bool
	CX, CY        int // the plot's centre
}

// niceMax rounds m up to 1, 2 or 5 times a power of ten (at least 4), so
// the axis has round ticks.
func niceMax(m int) int {
	if m < 4 {
		return 4
	}
	p := 1
	for p*10 <= m {
		p *= 10
	}
	for _, f := range []int{1, 2, 5, 10} {
		if f*p >= m {
			return f * p
		}
	}
	return 10 * p
}

func newChart(title, unit string, pts []domain.Count) chart {
	c := chart{Title: title, Unit: unit, W: chartW, H: chartH, Left: padL, Top: padT, Right: chartW - padR, Bottom: chartH - padB,
		CX: padL + plotW/2, CY: padT + plotH/2}
	maxV := 0
	for _, p := range pts {
		maxV = max(maxV, p.Value)
	}
	c.Max = maxV
	if len(pts) > 0 {
		c.Last = pts[len(pts)-1].Value
	}
	c.Empty = maxV == 0
	top := niceMax(maxV)
	for i := 0; i <= 4; i++ {
		v := top * i / 4
		c.YTicks = append(c.YTicks, tick{Pos: float64(padT) + float64(plotH)*(1-float64(v)/float64(top)), Label: thousands(strconv.Itoa(v))})
	}
	y := func(v int) float64 { return float64(padT) + float64(plotH)*(1-float64(v)/float64(top)) }
	n := len(pts)
	if n == 0 {
		return c
	}
	// X ticks every 6 hours (labels in UTC).
	x := func(i int) float64 {
		if n == 1 {
			return float64(padL)
		}
		return float64(padL) + float64(plotW)*float64(i)/float64(n-1)
	}
	for i, p := range pts {
		if p.At.Minute() == 0 && p.At.Hour()%6 == 0 {
			c.XTicks = append(c.XTicks, tick{Pos: x(i), Label: p.At.UTC().Format("Jan 2 15:04")})
		}
	}
	return withSeries(c, pts, x, y)
}

func withSeries(c chart, pts []domain.Count, x func(int) float64, y func(int) float64) chart {
	var b strings.Builder
	for i, p := range pts {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", x(i), y(p.Value))
	}
	c.Line = b.String()
	c.Area = fmt.Sprintf("%.1f,%d %s %.1f,%d", x(0), c.Bottom, c.Line, x(len(pts)-1), c.Bottom)
	return c
}

func newBarChart(title, unit string, pts []domain.Count) chart {
	c := newChart(title, unit, nil)
	maxV := 0
	for _, p := range pts {
		maxV = max(maxV, p.Value)
	}
	c.Max, c.Empty = maxV, maxV == 0
	if len(pts) > 0 {
		c.Last = pts[len(pts)-1].Value
	}
	top := niceMax(maxV)
	c.YTicks = nil
	for i := 0; i <= 4; i++ {
		v := top * i / 4
		c.YTicks = append(c.YTicks, tick{Pos: float64(padT) + float64(plotH)*(1-float64(v)/float64(top)), Label: thousands(strconv.Itoa(v))})
	}
	if len(pts) == 0 {
		return c
	}
	slot := float64(plotW) / float64(len(pts))
	for i, p := range pts {
		h := float64(plotH) * float64(p.Value) / float64(top)
		c.Bars = append(c.Bars, bar{X: float64(padL) + slot*float64(i) + slot*0.1, Y: float64(padT+plotH) - h, W: slot * 0.8, H: h,
			Title: fmt.Sprintf("%s: %d", p.At.UTC().Format("Jan 2 15:00"), p.Value)})
		if p.At.Hour()%6 == 0 {
			c.XTicks = append(c.XTicks, tick{Pos: float64(padL) + slot*float64(i), Label: p.At.UTC().Format("Jan 2 15:04")})
		}
	}
	return c
}

type chartsData struct {
	Active, Detections chart
}

func (s *Server) charts(w http.ResponseWriter, r *http.Request, sess *session) {
	// The charts show the whole ISP: operators only, like the audit log.
	if err := sess.caller.May(rtbhv1.AuditService_ListAudit_FullMethodName); err != nil {
		s.failErr(w, r, sess, err)
		return
	}
	if s.hist == nil {
		s.fail(w, r, sess, http.StatusServiceUnavailable, "no history store configured")
		return
	}
	now := time.Now().UTC()
	to := now.Truncate(activeStep)
	active, err := s.hist.ActiveHistory(r.Context(), to.Add(-activeSpan), to, activeStep)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, err.Error())
		return
	}
	// The last point is now, not the last quarter hour.
	if cur, err := s.visible(sess); err == nil {
		active = append(active, domain.Count{At: now, Value: len(cur)})
	}
	det, err := s.hist.DetectionsPerHour(r.Context(), now.Add(-detectionsWindow), now)
	if err != nil {
		s.fail(w, r, sess, http.StatusInternalServerError, err.Error())
		return
	}
	v := viewFor(sess, "Charts", "charts")
	v.Data = chartsData{
		Active:     newChart("Active blackholes, last 24 hours", "active", active),
		Detections: newBarChart("Detections per hour, last 48 hours (shadow catches included)", "detections", det),
	}
	v.Live = true
	s.render(w, http.StatusOK, "charts", v)
}

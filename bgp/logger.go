package bgp

import (
	"context"
	"log/slog"
	"sync/atomic"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// slogAdapter implements GoBGP's log.Logger on top of log/slog.
//
// GoBGP's Fatal is logged as an error and does not exit: a library must not
// end the process (GoBGP returns an error after its Fatal calls anyway).
type slogAdapter struct {
	l     *slog.Logger
	level atomic.Uint32 // gobgplog.LogLevel
}

var _ gobgplog.Logger = (*slogAdapter)(nil)

func newSlogAdapter(l *slog.Logger) *slogAdapter {
	lv := gobgplog.InfoLevel
	switch {
	case l.Enabled(context.Background(), slog.LevelDebug):
		lv = gobgplog.DebugLevel
	case !l.Enabled(context.Background(), slog.LevelInfo):
		lv = gobgplog.WarnLevel
	}
	a := &slogAdapter{l: l.With("component", "gobgp")}
	a.level.Store(uint32(lv))
	return a
}

func (a *slogAdapter) log(lv slog.Level, msg string, fields gobgplog.Fields) {
	if !a.l.Enabled(context.Background(), lv) {
		return
	}
	attrs := make([]slog.Attr, 0, len(fields))
	for k, v := range fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	a.l.LogAttrs(context.Background(), lv, msg, attrs...)
}

func (a *slogAdapter) Panic(msg string, fields gobgplog.Fields) {
	a.log(slog.LevelError, msg, fields)
	panic(msg)
}

func (a *slogAdapter) Fatal(msg string, fields gobgplog.Fields) {
	a.log(slog.LevelError, msg, fields)
}

func (a *slogAdapter) Error(msg string, fields gobgplog.Fields) {
	a.log(slog.LevelError, msg, fields)
}

func (a *slogAdapter) Warn(msg string, fields gobgplog.Fields) {
	a.log(slog.LevelWarn, msg, fields)
}

func (a *slogAdapter) Info(msg string, fields gobgplog.Fields) {
	a.log(slog.LevelInfo, msg, fields)
}

func (a *slogAdapter) Debug(msg string, fields gobgplog.Fields) {
	if a.GetLevel() < gobgplog.DebugLevel {
		return
	}
	a.log(slog.LevelDebug, msg, fields)
}

func (a *slogAdapter) SetLevel(level gobgplog.LogLevel) { a.level.Store(uint32(level)) }
func (a *slogAdapter) GetLevel() gobgplog.LogLevel      { return gobgplog.LogLevel(a.level.Load()) }

//go:build linux && (amd64 || arm64 || ppc64le || ppc64 || riscv64 || s390x || loong64 || mips64 || mips64le)

package sflow

import (
	"testing"
	"time"
)

// TestBlockingReaderPlan checks the pause policy: none after a lone
// datagram or a full batch, about a batch's worth of arrival time after a
// partial batch, never more than maxPause.
func TestBlockingReaderPlan(t *testing.T) {
	r := &blockingReader{}
	r.hdrs = make([]mmsghdr, 64)

	r.plan(5) // first read: no estimate yet
	if !r.wakeAt.IsZero() {
		t.Fatal("pause without an estimate")
	}
	r.since = time.Now().Add(-time.Millisecond)
	r.plan(1)
	if !r.wakeAt.IsZero() {
		t.Error("pause after a lone datagram")
	}
	r.since = time.Now().Add(-time.Millisecond)
	r.plan(64)
	if !r.wakeAt.IsZero() {
		t.Error("pause after a full batch")
	}
	r.plan(16) // 80 datagrams in ~1 ms: a batch in ~0.8 ms
	if d := time.Until(r.wakeAt); d <= 0 || d > time.Millisecond {
		t.Errorf("pause %v after 80 datagrams in 1 ms, want ~0.8 ms", d)
	}
	r.wakeAt = time.Time{}
	r.since = time.Now().Add(-time.Second)
	r.plan(2)
	if d := time.Until(r.wakeAt); d <= maxPause/2 || d > maxPause {
		t.Errorf("pause %v at 2 datagrams/s, want maxPause", d)
	}
}

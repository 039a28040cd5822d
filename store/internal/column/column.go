// Package column holds the encodings of rtbh's stores for values that are
// not one SQL column type: unix-nanosecond times and comma-joined lists.
// SQLite (store) and PostgreSQL (store/postgres) share them, so that both
// hold the same text.
package column

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// UnixNanoOrZero is t in unix nanoseconds, 0 for the zero time.
func UnixNanoOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// JoinPorts is "25,465,587".
func JoinPorts(ps []uint16) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

// SplitPorts reads JoinPorts' text, skipping what is not a port.
func SplitPorts(s string) []uint16 {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.ParseUint(f, 10, 16); err == nil {
			out = append(out, uint16(n))
		}
	}
	return out
}

// JoinAddrs is "192.0.2.1,2001:db8::1".
func JoinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// SplitAddrs reads JoinAddrs' text, skipping what is not an address.
func SplitAddrs(s string) []netip.Addr {
	var out []netip.Addr
	for _, f := range strings.Split(s, ",") {
		if a, err := netip.ParseAddr(f); err == nil {
			out = append(out, a)
		}
	}
	return out
}

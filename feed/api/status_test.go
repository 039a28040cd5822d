package api

import (
	"net/netip"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/rtbh/rtbh/detector/domain"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

func TestGetOffenderAndListOffenders(t *testing.T) {
	backend := newBackend(t)
	a := startAPI(t, Config{}, backend)
	ctx := testCtx(t)
	op := withToken(ctx, "noc-token")

	for addr, want := range map[string]codes.Code{
		"198.51.100.77":   codes.NotFound,
		"":                codes.InvalidArgument,
		"bogus":           codes.InvalidArgument,
		"198.51.100.0/24": codes.InvalidArgument,
	} {
		_, err := a.st.GetOffender(op, &rtbhv1.GetOffenderRequest{Address: addr})
		wantCode(t, err, want)
	}

	first := time.Now().Add(-5 * time.Minute).Truncate(time.Second)
	det := domain.Evidence{
		Rule: "smtp-fanout", Action: "blackhole", Protocol: "tcp", DstPorts: []uint16{25, 587},
		Address: netip.MustParseAddr("198.51.100.77"), DistinctDestinations: 42, EstimatedPackets: 5000,
		EstimatedConnections: 800, Window: 10 * time.Minute, FirstSeen: first, LastSeen: first.Add(4 * time.Minute),
		Examples: []netip.Addr{netip.MustParseAddr("192.0.2.25"), netip.MustParseAddr("192.0.2.26")},
	}
	if _, err := backend.Detected(ctx, det, time.Hour); err != nil {
		t.Fatal(err)
	}
	shadow := det
	shadow.Rule, shadow.Action, shadow.Address = "smtp-fanout-strict", "log", netip.MustParseAddr("198.51.100.78")
	if _, err := backend.Detected(ctx, shadow, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := a.rp.SubmitReports(withToken(ctx, "isp-b-token"), &rtbhv1.SubmitReportsRequest{Reports: []*rtbhv1.Report{{Address: "198.51.100.77", Evidence: "spamtrap hit"}}}); err != nil {
		t.Fatal(err)
	}

	resp, err := a.st.GetOffender(op, &rtbhv1.GetOffenderRequest{Address: "198.51.100.77/32"})
	if err != nil {
		t.Fatal(err)
	}
	o := resp.Offender
	if o.Address != "198.51.100.77" || o.Offenses != 1 || o.Score != 0.5 || o.Blackhole.GetOrigin() != "detector:smtp-fanout" {
		t.Fatalf("offender = %v", o)
	}
	if len(o.Evidence) != 1 || len(o.Reports) != 1 {
		t.Fatalf("evidence %v reports %v", o.Evidence, o.Reports)
	}
	e := o.Evidence[0]
	if e.Rule != "smtp-fanout" || e.Action != "blackhole" || e.Protocol != "tcp" || len(e.DstPorts) != 2 || e.DstPorts[1] != 587 ||
		e.DistinctDestinations != 42 || e.EstimatedPackets != 5000 || e.EstimatedConnections != 800 ||
		e.Window.AsDuration() != 10*time.Minute || !e.FirstSeen.AsTime().Equal(first) ||
		len(e.ExampleDestinations) != 2 || e.ExampleDestinations[0] != "192.0.2.25" || e.RecordedAt == nil {
		t.Fatalf("evidence = %v", e)
	}
	if o.Reports[0].Reporter != "isp-b" || o.Reports[0].Evidence != "spamtrap hit" {
		t.Fatalf("report = %v", o.Reports[0])
	}

	all, err := a.st.ListOffenders(op, &rtbhv1.ListOffendersRequest{})
	if err != nil || len(all.Offenders) != 2 {
		t.Fatalf("ListOffenders = %v %v", all, err)
	}
	sh, err := a.st.ListOffenders(op, &rtbhv1.ListOffendersRequest{ShadowOnly: true})
	if err != nil || len(sh.Offenders) != 1 || sh.Offenders[0].Address != "198.51.100.78" || sh.Offenders[0].Action != "log" || sh.Offenders[0].Rule != "smtp-fanout-strict" {
		t.Fatalf("ListOffenders shadow = %v %v", sh, err)
	}
	one, err := a.st.ListOffenders(op, &rtbhv1.ListOffendersRequest{Limit: 1})
	if err != nil || len(one.Offenders) != 1 {
		t.Fatalf("ListOffenders limit 1 = %v %v", one, err)
	}
}

package detector

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/domain/testkit"
)

// A FlowSpec filter committed through one instance reaches the other's
// committed view and its BGP filters (not its routes), beside a route on
// the same prefix; removing the filter through the other instance leaves
// the route on both.
func TestSyncFollowsFilters(t *testing.T) {
	ins := startInstances(t, "a", "b")
	a, b := ins[0], ins[1]
	ctx := context.Background()
	p := pfx("198.51.100.7")
	filter := domain.Key{Prefix: p, Match: "tcp/25"}
	if _, _, err := a.m.Add(ctx, Request{Prefix: p, Reason: "zombie", Origin: "operator:noc", Actor: "noc"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.m.Add(ctx, Request{Prefix: p, Match: "tcp/25", Reason: "zombie smtp", Origin: "operator:noc", Actor: "noc"}); err != nil {
		t.Fatal(err)
	}
	hasFilter := func(in *instance) bool {
		_, ok := in.m.LookupKey(filter)
		return ok && slices.Contains(in.speaker.AnnouncedFilters(), filter)
	}
	hasRoute := func(in *instance) bool {
		_, ok := in.m.LookupKey(domain.Key{Prefix: p})
		return ok && slices.Contains(in.speaker.Announced(), p)
	}
	testkit.WaitFor(t, 5*time.Second, "b to hold a's route and filter", func() bool {
		return hasFilter(b) && hasRoute(b)
	})
	if _, err := b.m.Remove(ctx, RemoveRequest{Prefix: p, Match: "tcp/25", Reason: "cleaned", Actor: "noc"}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "a to drop the filter and keep the route", func() bool {
		return !hasFilter(a) && hasRoute(a)
	})
	if hasFilter(b) || !hasRoute(b) {
		t.Fatal("b: the removal took the route or left the filter")
	}
}

package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/rtbh/rtbh/detector/domain"
)

// clientRuntime is the state of one client that survives a config reload:
// its token bucket and its count of open watch streams.
type clientRuntime struct {
	limiter *rate.Limiter
	watches atomic.Int32
}

// identity is an authenticated caller: its configuration at the time of
// the call and its runtime state.
type identity struct {
	Client
	rt        *clientRuntime
	prefixSet *domain.PrefixSet // Client.Prefixes, built once

	// rev is revoked when a config reload removes the client or changes
	// its credentials, role or prefixes: its open streams then end
	// (UNAUTHENTICATED). Identities of a client that a reload leaves as it
	// was share it, so their streams stay open.
	rev *revocation
}

// revocation ends the open streams of a client's identity.
type revocation struct {
	done chan struct{} // closed by revoke
	why  string        // set before done is closed
}

func newRevocation() *revocation { return &revocation{done: make(chan struct{})} }

func (r *revocation) revoke(why string) {
	r.why = why
	close(r.done)
}

// revoked is closed when id's streams must end; revokedWhy then says why.
func (id *identity) revoked() <-chan struct{} { return id.rev.done }
func (id *identity) revokedWhy() string       { return id.rev.why }

// sameAuthority reports whether c grants what id granted: the same
// credentials, role and prefixes. Trust and rate may differ (a new rate
// applies to the client's token bucket at once).
func (id *identity) sameAuthority(c Client) bool {
	return id.Role == c.Role && id.HasToken == c.HasToken && (!c.HasToken || id.TokenSHA256 == c.TokenSHA256) &&
		id.CertName == c.CertName && slices.Equal(id.Prefixes, c.Prefixes)
}

// identities is an immutable lookup table, swapped whole on reload.
type identities struct {
	all    []*identity // every client, scanned in full for token matches
	byCert map[string]*identity
}

// registry holds the current identities and the runtimes by client name.
type registry struct {
	current atomic.Pointer[identities]

	mu       sync.Mutex
	runtimes map[string]*clientRuntime
}

func newRegistry(clients []Client) *registry {
	r := &registry{runtimes: make(map[string]*clientRuntime)}
	r.set(clients)
	return r
}

// set replaces the client table. Runtimes of clients that keep their name
// keep their token bucket (with the new rate) and their watch count. The
// streams of clients that are gone, or whose credentials, role or
// prefixes changed, are revoked.
func (r *registry) set(clients []Client) {
	r.mu.Lock()
	defer r.mu.Unlock()
	before := make(map[string]*identity)
	if old := r.current.Load(); old != nil {
		for _, id := range old.all {
			before[id.Name] = id
		}
	}
	ids := &identities{byCert: make(map[string]*identity)}
	seen := make(map[string]bool, len(clients))
	var revoke []*identity
	for _, c := range clients {
		rt := r.runtimes[c.Name]
		limit, burst := rateOf(c.Rate)
		if rt == nil {
			rt = &clientRuntime{limiter: rate.NewLimiter(limit, burst)}
			r.runtimes[c.Name] = rt
		} else {
			rt.limiter.SetLimit(limit)
			rt.limiter.SetBurst(burst)
		}
		seen[c.Name] = true
		c.Prefixes = append([]netip.Prefix(nil), c.Prefixes...)
		id := &identity{Client: c, rt: rt, prefixSet: domain.NewPrefixSet(c.Prefixes), rev: newRevocation()}
		switch old := before[c.Name]; {
		case old == nil:
		case old.sameAuthority(c):
			id.rev = old.rev
		default:
			revoke = append(revoke, old)
		}
		ids.all = append(ids.all, id)
		if c.CertName != "" {
			ids.byCert[c.CertName] = id
		}
	}
	for name := range r.runtimes {
		if !seen[name] {
			delete(r.runtimes, name)
		}
	}
	// Swap the table first, so that a call authenticated after a
	// revocation can only get the new identity.
	r.current.Store(ids)
	for _, old := range revoke {
		old.rev.revoke(fmt.Sprintf("client %q was changed by a config reload: reconnect", old.Name))
	}
	for name, old := range before {
		if !seen[name] {
			old.rev.revoke(fmt.Sprintf("client %q was removed by a config reload", name))
		}
	}
}

// rateOf turns a configured rate into a token bucket: burst = 2 x rate,
// at least 1. Rate <= 0 is unlimited.
func rateOf(r float64) (rate.Limit, int) {
	if r <= 0 || math.IsInf(r, 1) || math.IsNaN(r) {
		return rate.Inf, 1
	}
	return rate.Limit(r), max(1, int(math.Ceil(2*r)))
}

// byToken finds the client whose token hash matches token. Every
// configured hash is compared, in constant time each, so the time taken
// does not tell which (or whether one) matched.
func (ids *identities) byToken(token string) *identity {
	sum := sha256.Sum256([]byte(token))
	var found *identity
	for _, id := range ids.all {
		eq := subtle.ConstantTimeCompare(sum[:], id.TokenSHA256[:])
		if eq == 1 && id.HasToken && found == nil {
			found = id
		}
	}
	return found
}

type identityKey struct{}

// identityFrom returns the caller authenticated by the auth interceptor.
func identityFrom(ctx context.Context) (*identity, bool) {
	id, ok := ctx.Value(identityKey{}).(*identity)
	return id, ok
}

// authenticate is the auth interceptor's AuthFunc. A bearer token, when
// sent, decides alone (a wrong token is refused even with a good
// certificate); otherwise a verified client certificate names the client.
func (s *Server) authenticate(ctx context.Context) (context.Context, error) {
	if id, ok := identityFrom(ctx); ok { // the tap handle authenticated this call
		logging.AddFields(ctx, logging.Fields{"client", id.Name})
		return ctx, nil
	}
	ids := s.clients.current.Load()
	var id *identity
	switch vals := metadata.ValueFromIncomingContext(ctx, "authorization"); {
	case len(vals) > 1:
		return nil, status.Error(codes.Unauthenticated, "more than one authorization header")
	case len(vals) == 1:
		token, err := auth.AuthFromMD(ctx, "bearer")
		if err != nil {
			return nil, err
		}
		if id = ids.byToken(strings.TrimSpace(token)); id == nil {
			return nil, status.Error(codes.Unauthenticated, "unknown bearer token")
		}
	default:
		cert := verifiedClientCert(ctx)
		if cert == nil {
			return nil, status.Error(codes.Unauthenticated, "no credentials: send \"authorization: Bearer <token>\" or a client certificate")
		}
		if id = ids.byCertificate(cert); id == nil {
			return nil, status.Errorf(codes.Unauthenticated, "client certificate %q names no configured client", cert.Subject.CommonName)
		}
	}
	logging.AddFields(ctx, logging.Fields{"client", id.Name})
	return context.WithValue(ctx, identityKey{}, id), nil
}

// tapAuthenticate is the server's tap handle (grpc.InTapHandle): it runs in
// the connection's reader goroutine when a call's headers arrive, before
// any of its message is read, and refuses an rtbh.v1 call without valid
// credentials there (UNAUTHENTICATED, the auth interceptor's message). An
// unauthenticated client therefore cannot make rtbhd read and decode a
// message of up to api.max_message_bytes, nor run a handler's decoding.
//
// The tap sees the headers and, through the connection's peer in ctx, the
// TLS state, so bearer tokens and client certificates are both checked.
// Should a gRPC version no longer put the peer there, a call without an
// authorization header is let through to the auth interceptor, which then
// checks it (for calls the tap authenticated, it takes the tap's identity). The
// check is cheap (one SHA-256 and a constant-time compare per client), as
// a tap handle must be: it holds up the connection's other streams.
func (s *Server) tapAuthenticate(ctx context.Context, info *tap.Info) (context.Context, error) {
	service := serviceOf(info.FullMethodName)
	if publicServices[service] {
		return ctx, nil
	}
	if len(info.Header.Get("authorization")) == 0 {
		if _, ok := peer.FromContext(ctx); !ok {
			return ctx, nil
		}
	}
	authed, err := s.authenticate(ctx)
	if err != nil {
		method := info.FullMethodName
		if _, known := roleTable[method]; !known {
			method = "unknown" // bound the metric's label values
		}
		s.metrics.observe(method, err)
		args := []any{"protocol", "grpc", "grpc.component", "server", "grpc.service", service,
			"grpc.method", shortMethod(info.FullMethodName), "grpc.code", status.Code(err).String(),
			"grpc.error", status.Convert(err).Message(), "refused_by", "tap"}
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			args = append(args, "peer.address", p.Addr.String())
		}
		s.logger.WarnContext(ctx, "finished call", args...)
		return nil, err
	}
	// gRPC uses the returned context for the call, so the auth interceptor
	// finds the identity there and does not check the credentials again.
	return authed, nil
}

// serviceOf returns "rtbh.v1.BlackholeService" for
// "/rtbh.v1.BlackholeService/AddBlackhole".
func serviceOf(fullMethod string) string {
	service, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return service
}

// verifiedClientCert returns the leaf of a client certificate chain that
// the TLS handshake verified against the client CA, or nil.
func verifiedClientCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return ti.State.VerifiedChains[0][0]
}

// byCertificate matches a certificate's DNS SANs, then its CN, against
// the clients' cert_name.
func (ids *identities) byCertificate(cert *x509.Certificate) *identity {
	for _, name := range cert.DNSNames {
		if id := ids.byCert[name]; id != nil {
			return id
		}
	}
	// A certificate with DNS SANs is named by them alone (RFC 6125 §6.4.4):
	// its CN must not stand in when none of them matches.
	if cn := cert.Subject.CommonName; cn != "" && len(cert.DNSNames) == 0 {
		return ids.byCert[cn]
	}
	return nil
}

// Package api is rtbhd's gRPC server: the rtbh.v1 BlackholeService,
// ReportService, StatusService and AuditService (ListAudit, read from an
// AuditReader: the store), plus server reflection and the standard health
// service.
//
// It is responsible for who may do what, not for what is decided: every
// request is authenticated (bearer token or mTLS client certificate),
// checked against the caller's role (SPEC.md's method table), rate limited
// per client, and then handed to the Backend — the one decision path in
// package detector — as a plain domain value carrying the caller's name as
// Actor and, for partners, their prefixes as Scope. Backend refusals are
// mapped to gRPC status codes by their detector.Kind; a store write that
// failed for a reason that may pass (domain.ErrStoreUnavailable: disk full,
// I/O error, lock timeout) is UNAVAILABLE with the store's reason; anything
// else is logged and answered with INTERNAL without details.
//
// Interceptor order (outermost first): metrics, logging, recovery, auth,
// role check, rate limit. Reflection and health are exempt from the last
// three; everything else requires credentials. The logging interceptor is
// the access log at debug level; above debug only calls ending in a code
// logged at warn or error are logged (callLog), the others cost nothing.
//
// Batch calls (AddBlackholes, RemoveBlackholes) turn each item into the
// request the single call would make (addRequest, removeRequest) and hand
// them to the Backend in one call; a batch counts as one request against
// the client's rate. ListBlackholes pages the Backend's committed view;
// its page token is the last key of the page (bulk.go).
//
// Input is bounded before any of it is decoded: a tap handle
// (tapAuthenticate) checks a call's credentials when its headers arrive
// and refuses an unauthenticated rtbh.v1 call before its message is read;
// a message is at most Config.MaxMessageBytes (4 MiB); a connection has at
// most Config.MaxConcurrentStreams (256) calls open at once, and a client
// at most Config.MaxWatchStreamsPerClient (4) watch streams.
//
// In-process front ends (the web console, feed/web) use console.go: a
// Caller authenticated by token, and methods that run the same role, rate
// and scope checks and the same handler bodies as the RPCs, answering with
// the status errors the RPCs would.
package api

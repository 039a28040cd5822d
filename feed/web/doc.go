// Package web is rtbhd's NOC web console (web.listen): server-rendered
// pages (html/template) with their CSS, a small hand-written script for
// live updates (server-sent events fed from the decision path's watch
// stream) and SVG charts drawn on the server, all embedded in the binary
// (go:embed): no external assets, nothing fetched at build or run time.
//
// Every page and form goes through feed/api's console methods: the same
// authentication (an api.clients token), role table, rate limits and
// partner scopes as the gRPC API, and the one decision path
// (detector.Manager), audited with the client's name. A session is an
// opaque random cookie (rtbh_session: HttpOnly, SameSite=Strict, Secure
// under TLS, 12 h) naming a server-side session that holds the client and
// its CSRF token; every form carries the token (field csrf) and a POST
// without it, or with a wrong one, is answered 403. Cross-origin POSTs are
// refused as well (net/http's CrossOriginProtection), login included.
// Sessions live in memory: a restart of rtbhd logs everyone out.
package web

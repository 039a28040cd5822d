package web

import (
	"bytes"
	"cmp"
	"fmt"
	"html/template"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rtbh/rtbh/detector"
	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/feed/api"
	rtbhv1 "github.com/rtbh/rtbh/proto/rtbh/v1"
)

// Page sizes of the blackhole list.
const (
	defaultPerPage = 100
	maxPerPage     = 1000
	auditPerPage   = 100
	offendersLimit = 500
)

var pageNames = []string{"login", "blackholes", "offenders", "offender", "neighbors", "audit", "charts", "error"}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"in":  func(t time.Time) string { return human(time.Until(t)) },
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return human(time.Since(t)) + " ago"
	},
	"dur": func(d time.Duration) string { return human(d) },
	"since": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return human(time.Since(t))
	},
	"num": func(n any) string { return thousands(fmt.Sprint(n)) },
}

func parseTemplates() (map[string]*template.Template, error) {
	out := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("parsing template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// human is a short duration: 59m, 3h12m, 2d4h.
func human(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

func thousands(s string) string {
	if len(s) <= 3 || strings.ContainsAny(s, ".e-") {
		return s
	}
	var b strings.Builder
	pre := len(s) % 3
	if pre > 0 {
		b.WriteString(s[:pre])
	}
	for i := pre; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

// user is who is logged in, as the layout shows it.
type user struct {
	Name, Role string
	Operator   bool
	Prefixes   []netip.Prefix
}

// view is what every page's template gets.
type view struct {
	Title  string
	Nav    string
	User   *user
	CSRF   string
	Alert  string // a refusal: shown in role="alert"
	Notice string // a success message: role="status"
	Live   bool   // the page updates itself from /events
	Data   any
}

func (s *Server) render(w http.ResponseWriter, code int, name string, v view) {
	var buf bytes.Buffer
	if err := s.pages[name].Execute(&buf, v); err != nil {
		s.log.Error("rendering web page failed", "page", name, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

func viewFor(sess *session, title, nav string) view {
	v := view{Title: title, Nav: nav}
	if sess != nil {
		c := sess.caller
		v.User = &user{Name: c.Name(), Role: c.Role(), Operator: c.Role() == api.RoleOperator, Prefixes: c.Prefixes()}
		v.CSRF = sess.csrf
	}
	return v
}

// fail answers with an error page whose message is in role="alert".
func (s *Server) fail(w http.ResponseWriter, r *http.Request, sess *session, code int, msg string) {
	v := viewFor(sess, http.StatusText(code), "")
	v.Alert = msg
	s.render(w, code, "error", v)
}

// failErr answers with err's HTTP status and message.
func (s *Server) failErr(w http.ResponseWriter, r *http.Request, sess *session, err error) {
	s.fail(w, r, sess, httpStatus(err), message(err))
}

// --- login ---

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.ss.get(r) != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.render(w, http.StatusOK, "login", view{Title: "Log in"})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		s.render(w, http.StatusBadRequest, "login", view{Title: "Log in", Alert: "bad form: " + err.Error()})
		return
	}
	c, err := s.api.Authenticate(r.PostFormValue("token"))
	if err != nil {
		s.log.Warn("web console login refused", "remote", r.RemoteAddr, "err", message(err))
		s.render(w, http.StatusUnauthorized, "login", view{Title: "Log in", Alert: "Login refused: " + message(err)})
		return
	}
	sess := s.ss.create(c)
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: sess.id, Path: "/", HttpOnly: true, Secure: s.tls != nil,
		SameSite: http.SameSiteStrictMode, Expires: sess.expires, MaxAge: int(s.cfg.SessionTTL.Seconds()),
	})
	s.log.Info("web console login", "client", c.Name(), "role", c.Role(), "remote", r.RemoteAddr)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	s.ss.end(sess)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", HttpOnly: true, Secure: s.tls != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// --- blackholes ---

// listQuery is the blackhole list's filters, sort and page.
type listQuery struct {
	Within, Origin, Q, Sort, Dir string
	Page, Per                    int
	within                       netip.Prefix
}

var sortKeys = []string{"prefix", "origin", "created", "expires"}

func parseListQuery(q url.Values) (listQuery, error) {
	lq := listQuery{Within: strings.TrimSpace(q.Get("within")), Origin: strings.TrimSpace(q.Get("origin")),
		Q: strings.TrimSpace(q.Get("q")), Sort: q.Get("sort"), Dir: q.Get("dir"), Page: 1, Per: defaultPerPage}
	if !slices.Contains(sortKeys, lq.Sort) {
		lq.Sort = "prefix"
	}
	if lq.Dir != "desc" {
		lq.Dir = "asc"
	}
	if v := q.Get("page"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			lq.Page = n
		}
	}
	if v := q.Get("per"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			lq.Per = min(n, maxPerPage)
		}
	}
	if lq.Within != "" {
		p, err := domain.ParsePrefix(lq.Within)
		if err != nil {
			return lq, fmt.Errorf("within: %v", err)
		}
		lq.within = p
	}
	return lq, nil
}

func (lq listQuery) values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"within": lq.Within, "origin": lq.Origin, "q": lq.Q} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if lq.Sort != "prefix" {
		v.Set("sort", lq.Sort)
	}
	if lq.Dir != "asc" {
		v.Set("dir", lq.Dir)
	}
	if lq.Per != defaultPerPage {
		v.Set("per", strconv.Itoa(lq.Per))
	}
	if lq.Page > 1 {
		v.Set("page", strconv.Itoa(lq.Page))
	}
	return v
}

func (lq listQuery) url() string {
	if e := lq.values().Encode(); e != "" {
		return "/?" + e
	}
	return "/"
}

func (lq listQuery) match(b *domain.Blackhole, q string) bool {
	if lq.within.IsValid() && (b.Prefix.Bits() < lq.within.Bits() || !lq.within.Contains(b.Prefix.Addr())) {
		return false
	}
	if lq.Origin != "" && !strings.HasPrefix(b.Origin, lq.Origin) {
		return false
	}
	if q != "" && !strings.Contains(strings.ToLower(b.Reason), q) && !strings.Contains(b.Origin, q) &&
		!strings.Contains(b.Prefix.String(), q) {
		return false
	}
	return true
}

type bhRow struct {
	*domain.Blackhole
	CanRemove bool
}

type sortLink struct {
	Key, Label, URL, Mark string
}

type bhData struct {
	Query            listQuery
	Rows             []bhRow
	Total, Matched   int
	First, Last      int
	Page, Pages      int
	PrevURL, NextURL string
	Return           string
	Sorts            []sortLink
	Add              addForm
	Origins          []string
	Took             string
}

type addForm struct{ Prefix, TTL, Reason string }

func (s *Server) blackholes(w http.ResponseWriter, r *http.Request, sess *session) {
	v := viewFor(sess, "Blackholes", "blackholes")
	if p, err := netip.ParsePrefix(r.URL.Query().Get("added")); err == nil {
		v.Notice = "Blackhole " + p.String() + " is active."
	}
	if p, err := netip.ParsePrefix(r.URL.Query().Get("removed")); err == nil {
		v.Notice = "Blackhole " + p.String() + " was withdrawn."
	}
	lq, err := parseListQuery(r.URL.Query())
	code := http.StatusOK
	if err != nil {
		code, v.Alert = http.StatusBadRequest, err.Error()
	}
	s.renderBlackholes(w, sess, v, code, lq, addForm{})
}

func (s *Server) renderBlackholes(w http.ResponseWriter, sess *session, v view, code int, lq listQuery, form addForm) {
	start := time.Now()
	all, err := s.visible(sess)
	if err != nil {
		s.fail(w, nil, sess, httpStatus(err), message(err))
		return
	}
	q := strings.ToLower(lq.Q)
	matched := all
	if lq.within.IsValid() || lq.Origin != "" || q != "" {
		matched = make([]*domain.Blackhole, 0, 256)
		for _, b := range all {
			if lq.match(b, q) {
				matched = append(matched, b)
			}
		}
	}
	// The list comes sorted by prefix; the other orders sort a copy.
	var by func(a, b *domain.Blackhole) int
	switch lq.Sort {
	case "origin":
		by = func(a, b *domain.Blackhole) int {
			return cmp.Or(strings.Compare(a.Origin, b.Origin), a.Prefix.Compare(b.Prefix))
		}
	case "created":
		by = func(a, b *domain.Blackhole) int {
			return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), a.Prefix.Compare(b.Prefix))
		}
	case "expires":
		by = func(a, b *domain.Blackhole) int {
			return cmp.Or(a.ExpiresAt.Compare(b.ExpiresAt), a.Prefix.Compare(b.Prefix))
		}
	}
	if by != nil || lq.Dir == "desc" {
		if len(matched) == len(all) {
			matched = slices.Clone(all) // all is shared
		}
		if by == nil {
			by = byPrefix
		}
		if lq.Dir == "desc" {
			asc := by
			by = func(a, b *domain.Blackhole) int { return asc(b, a) }
		}
		slices.SortFunc(matched, by)
	}
	d := bhData{Query: lq, Total: len(all), Matched: len(matched), Add: form}
	d.Pages = max(1, (len(matched)+lq.Per-1)/lq.Per)
	d.Page = min(lq.Page, d.Pages)
	lo := (d.Page - 1) * lq.Per
	hi := min(lo+lq.Per, len(matched))
	d.First, d.Last = lo+1, hi
	isOperator := sess.caller.Role() == api.RoleOperator
	for _, b := range matched[lo:hi] {
		d.Rows = append(d.Rows, bhRow{Blackhole: b, CanRemove: isOperator || b.Origin == sess.caller.Origin()})
	}
	page := lq
	page.Page = d.Page
	d.Return = page.url()
	if d.Page > 1 {
		p := page
		p.Page--
		d.PrevURL = p.url()
	}
	if d.Page < d.Pages {
		p := page
		p.Page++
		d.NextURL = p.url()
	}
	for _, k := range sortKeys {
		l := page
		l.Page, l.Sort, l.Dir = 1, k, "asc"
		mark := ""
		if lq.Sort == k {
			if lq.Dir == "asc" {
				l.Dir, mark = "desc", "▲"
			} else {
				mark = "▼"
			}
		}
		d.Sorts = append(d.Sorts, sortLink{Key: k, Label: strings.ToUpper(k[:1]) + k[1:], URL: l.url(), Mark: mark})
	}
	d.Took = time.Since(start).Round(time.Microsecond).String()
	v.Live = true
	v.Data = d
	s.render(w, code, "blackholes", v)
}

// returnQuery reads the list's state from a form's return field.
func returnQuery(r *http.Request) listQuery {
	u, err := url.Parse(r.PostFormValue("return"))
	if err != nil || u.Path != "/" {
		lq, _ := parseListQuery(url.Values{})
		return lq
	}
	lq, err := parseListQuery(u.Query())
	if err != nil {
		lq, _ = parseListQuery(url.Values{})
	}
	return lq
}

// safeReturn is the form's return field if it is a path of this site.
func safeReturn(r *http.Request, fallback string) string {
	ret := r.PostFormValue("return")
	if !strings.HasPrefix(ret, "/") || strings.HasPrefix(ret, "//") || strings.ContainsAny(ret, "\\\r\n") {
		return fallback
	}
	return ret
}

func withParam(path, key, value string) string {
	u, err := url.Parse(path)
	if err != nil {
		return path
	}
	q := u.Query()
	q.Del("added")
	q.Del("removed")
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

func (s *Server) add(w http.ResponseWriter, r *http.Request, sess *session) {
	form := addForm{Prefix: strings.TrimSpace(r.PostFormValue("prefix")), TTL: strings.TrimSpace(r.PostFormValue("ttl")),
		Reason: strings.TrimSpace(r.PostFormValue("reason"))}
	refuse := func(code int, msg string) {
		v := viewFor(sess, "Blackholes", "blackholes")
		v.Alert = msg
		s.renderBlackholes(w, sess, v, code, returnQuery(r), form)
	}
	var ttl time.Duration
	if form.TTL != "" {
		d, err := time.ParseDuration(form.TTL)
		if err != nil {
			refuse(http.StatusBadRequest, fmt.Sprintf("ttl: %q is not a duration (90s, 30m, 6h)", form.TTL))
			return
		}
		ttl = d
	}
	if form.Reason == "" {
		refuse(http.StatusBadRequest, "reason: required (it goes into the audit log)")
		return
	}
	b, _, err := s.api.Add(r.Context(), sess.caller, form.Prefix, strings.TrimSpace(r.PostFormValue("flowspec")), ttl, form.TTL != "", form.Reason)
	if err != nil {
		refuse(httpStatus(err), message(err))
		return
	}
	http.Redirect(w, r, withParam(safeReturn(r, "/"), "added", b.Prefix.String()), http.StatusSeeOther)
}

func (s *Server) remove(w http.ResponseWriter, r *http.Request, sess *session) {
	prefix := strings.TrimSpace(r.PostFormValue("prefix"))
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if err := s.api.Remove(r.Context(), sess.caller, prefix, strings.TrimSpace(r.PostFormValue("flowspec")), reason); err != nil {
		v := viewFor(sess, "Blackholes", "blackholes")
		v.Alert = message(err)
		s.renderBlackholes(w, sess, v, httpStatus(err), returnQuery(r), addForm{})
		return
	}
	p, _ := domain.ParsePrefix(prefix)
	http.Redirect(w, r, withParam(safeReturn(r, "/"), "removed", p.String()), http.StatusSeeOther)
}

// --- offenders ---

type offenderRow struct {
	domain.Evidence
	Shadow bool
	Active bool
	Prefix string
}

type offendersData struct {
	Rows       []offenderRow
	ShadowOnly bool
	Limit      int
}

// visible is ListBlackholes from the console's view of the active set:
// the API's checks of the call, then the entries the client may see (a
// partner's filtered the way the API filters them), by prefix. Shared:
// do not modify.
func (s *Server) visible(sess *session) ([]*domain.Blackhole, error) {
	c := sess.caller
	if err := c.Begin(rtbhv1.BlackholeService_ListBlackholes_FullMethodName); err != nil {
		return nil, err
	}
	all, err := s.view.list(s.base)
	if err != nil {
		return nil, err
	}
	if c.Role() == api.RoleOperator {
		return all, nil
	}
	out := make([]*domain.Blackhole, 0, 64)
	for _, b := range all {
		if c.Sees(*b) {
			out = append(out, b)
		}
	}
	return out, nil
}

// activePrefixes is the set of prefixes the session sees as active.
func (s *Server) activePrefixes(sess *session) map[netip.Prefix]bool {
	all, err := s.visible(sess)
	if err != nil {
		return nil
	}
	m := make(map[netip.Prefix]bool, len(all))
	for _, b := range all {
		m[b.Prefix] = true
	}
	return m
}

func (s *Server) offenders(w http.ResponseWriter, r *http.Request, sess *session) {
	shadow := r.URL.Query().Get("shadow") != ""
	evs, err := s.api.Offenders(r.Context(), sess.caller, shadow, offendersLimit)
	if err != nil {
		s.failErr(w, r, sess, err)
		return
	}
	active := s.activePrefixes(sess)
	d := offendersData{ShadowOnly: shadow, Limit: offendersLimit}
	for _, e := range evs {
		p := domain.HostPrefix(e.Address)
		d.Rows = append(d.Rows, offenderRow{Evidence: e, Shadow: e.Action == "log", Active: active[p], Prefix: p.String()})
	}
	v := viewFor(sess, "Offenders", "offenders")
	v.Data = d
	v.Live = true
	s.render(w, http.StatusOK, "offenders", v)
}

type offenderData struct {
	Address   string
	Prefix    string
	Offender  domain.Offender
	Blackhole *domain.Blackhole
}

func (s *Server) offender(w http.ResponseWriter, r *http.Request, sess *session) {
	off, bh, err := s.api.Offender(r.Context(), sess.caller, r.PathValue("address"))
	if err != nil {
		s.failErr(w, r, sess, err)
		return
	}
	v := viewFor(sess, "Offender "+off.Address.String(), "offenders")
	v.Data = offenderData{Address: off.Address.String(), Prefix: domain.HostPrefix(off.Address).String(), Offender: off, Blackhole: bh}
	v.Live = true
	s.render(w, http.StatusOK, "offender", v)
}

// --- neighbors ---

type neighborRow struct {
	api.Neighbor
	Up bool
}

func (s *Server) neighbors(w http.ResponseWriter, r *http.Request, sess *session) {
	ns, err := s.api.Neighbors(r.Context(), sess.caller)
	if err != nil {
		s.failErr(w, r, sess, err)
		return
	}
	rows := make([]neighborRow, len(ns))
	for i, n := range ns {
		rows[i] = neighborRow{Neighbor: n, Up: n.State == "established"}
	}
	v := viewFor(sess, "BGP neighbors", "neighbors")
	v.Data = rows
	v.Live = true
	s.render(w, http.StatusOK, "neighbors", v)
}

// --- audit ---

type auditData struct {
	Prefix, Actor, Since, Until string
	Rows                        []domain.AuditEntry
	NextURL                     string
	Page                        string
}

// parseWhen reads a time filter: a duration back from now (24h), an RFC
// 3339 time, or a date and time as a browser's datetime-local sends it
// (UTC).
func parseWhen(key, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s: %q is neither a duration back from now (24h) nor a time (2026-12-01T10:00:00Z)", key, v)
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request, sess *session) {
	q := r.URL.Query()
	d := auditData{Prefix: strings.TrimSpace(q.Get("prefix")), Actor: strings.TrimSpace(q.Get("actor")),
		Since: strings.TrimSpace(q.Get("since")), Until: strings.TrimSpace(q.Get("until")), Page: q.Get("page")}
	v := viewFor(sess, "Audit log", "audit")
	aq := domain.AuditQuery{Actor: d.Actor, Limit: auditPerPage}
	var err error
	now := time.Now()
	if d.Prefix != "" {
		aq.Prefix, err = domain.ParsePrefix(d.Prefix)
		if err != nil {
			err = fmt.Errorf("prefix: %v", err)
		}
	}
	if err == nil {
		aq.Since, err = parseWhen("since", d.Since, now)
	}
	if err == nil {
		aq.Until, err = parseWhen("until", d.Until, now)
	}
	if err == nil && d.Page != "" {
		aq.BeforeID, err = api.DecodeAuditPageToken(d.Page)
	}
	if err != nil {
		v.Alert = err.Error()
		v.Data = d
		s.render(w, http.StatusBadRequest, "audit", v)
		return
	}
	rows, next, err := s.api.Audit(r.Context(), sess.caller, aq)
	if err != nil {
		s.failErr(w, r, sess, err)
		return
	}
	d.Rows = rows
	if next != "" {
		nq := url.Values{}
		for k, val := range map[string]string{"prefix": d.Prefix, "actor": d.Actor, "since": d.Since, "until": d.Until} {
			if val != "" {
				nq.Set(k, val)
			}
		}
		nq.Set("page", next)
		d.NextURL = "/audit?" + nq.Encode()
	}
	v.Data = d
	s.render(w, http.StatusOK, "audit", v)
}

// --- live updates ---

// heartbeat keeps idle event streams open through proxies.
const heartbeat = 15 * time.Second

// events streams the changes the session may see, as server-sent events:
// "change" with the event type and prefix. Pages refresh their live part
// on each (debounced), and in full when the stream reconnects.
func (s *Server) events(w http.ResponseWriter, r *http.Request, sess *session) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming not supported", http.StatusInternalServerError)
		return
	}
	ctx := r.Context()
	if err := sess.caller.Begin(rtbhv1.BlackholeService_WatchBlackholes_FullMethodName); err != nil {
		http.Error(w, message(err), httpStatus(err))
		return
	}
	events, cancel := s.view.subscribe()
	defer cancel()
	s.streams.Inc()
	defer s.streams.Dec()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 1000\n: connected\n\n")
	fl.Flush()
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sess.caller.Revoked():
			return
		case <-tick.C:
			fmt.Fprint(w, ": keep-alive\n\n")
		case ev, ok := <-events:
			if !ok {
				return // too far behind: the browser reconnects and reloads
			}
			if ev.Type == 0 { // the view was rebuilt: reload
				fmt.Fprint(w, "event: change\ndata: {\"type\":\"resync\"}\n\n")
				break
			}
			if !sess.caller.SeesEvent(ev) {
				continue
			}
			fmt.Fprintf(w, "event: change\ndata: {\"type\":%q,\"prefix\":%q}\n\n", eventName(ev.Type), ev.Blackhole.Prefix.String())
		}
		fl.Flush()
	}
}

func eventName(t detector.EventType) string {
	switch t {
	case detector.EventAdded:
		return "added"
	case detector.EventExtended:
		return "extended"
	case detector.EventRemoved:
		return "removed"
	case detector.EventExpired:
		return "expired"
	}
	return "unknown"
}

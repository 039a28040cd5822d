package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rtbh/rtbh/bgp"
	"github.com/rtbh/rtbh/detector/domain"
	"github.com/rtbh/rtbh/detector/fanout"
)

// The file is decoded by walking the YAML node tree along the Config's
// yaml tags, rather than with yaml's own struct decoding, so that every
// problem is reported (not just the first) with its full key path and line,
// and so that "absent" can be told apart from "zero" for defaults and
// required keys. Each scalar is decoded with the library (Node.Decode) and
// checked against its field's check tag.

type decoder struct {
	errs  Errors
	lines map[string]int  // key path -> line of its value, for cross-key checks
	seen  map[string]bool // key paths present in the file
}

func newDecoder() *decoder {
	return &decoder{lines: make(map[string]int), seen: make(map[string]bool)}
}

func (d *decoder) errorf(path string, line int, format string, args ...any) {
	d.errs = append(d.errs, &Error{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// decode parses data into c, recording problems in d.errs. It returns false
// if the file is not one YAML document (nothing else is worth checking).
func (d *decoder) decode(data []byte, c *Config) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		d.errorf("", 0, "parsing YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		return false
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		d.errorf("", extra.Line, "the file must hold exactly one YAML document")
		return false
	}
	var root *yaml.Node
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root = doc.Content[0]
	}
	d.mapping(root, "", 1, reflect.ValueOf(c).Elem())
	return true
}

// checks is a parsed check tag.
type checks struct {
	required bool
	kind     string // a format: nonempty, ipv4, listen, community, ...
	bounds   string // a numeric range: lo..hi, lo.., >lo
	sets     string // a bool field set by a non-empty value
}

func parseChecks(tag string) checks {
	var c checks
	for opt := range strings.SplitSeq(tag, ",") {
		switch {
		case opt == "":
		case opt == "required":
			c.required = true
		case strings.HasPrefix(opt, "sets="):
			c.sets = opt[len("sets="):]
		case strings.Contains(opt, "..") || strings.HasPrefix(opt, ">"):
			c.bounds = opt
		default:
			c.kind = opt
		}
	}
	return c
}

// mapping decodes the mapping n at path into the struct v, key by key along
// its yaml tags. A nil or null n is an empty mapping (line is then used for
// missing required keys).
func (d *decoder) mapping(n *yaml.Node, path string, line int, v reflect.Value) {
	n = resolve(n)
	if n != nil {
		line = n.Line
	}
	if _, ok := d.lines[path]; !ok && path != "" {
		d.lines[path] = line // list items, which have no key
	}
	present := make(map[string]bool)
	if !isNull(n) {
		if n.Kind != yaml.MappingNode {
			d.errorf(path, n.Line, "expected a mapping, got %s", kindName(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := resolve(n.Content[i]), resolve(n.Content[i+1])
			kp := join(path, k.Value)
			f, ok := field(v.Type(), k.Value)
			switch {
			case !ok:
				d.errorf(kp, k.Line, "unknown key")
				continue
			case present[k.Value]:
				d.errorf(kp, k.Line, "duplicate key")
				continue
			}
			present[k.Value] = true
			d.seen[kp] = true
			d.lines[kp] = val.Line
			c := parseChecks(f.Tag.Get("check"))
			if d.value(val, kp, v.FieldByIndex(f.Index), c) && c.sets != "" && val.Value != "" {
				v.FieldByName(c.sets).SetBool(true)
			}
		}
	}
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if key := f.Tag.Get("yaml"); parseChecks(f.Tag.Get("check")).required && !present[key] {
			d.errorf(join(path, key), line, "missing (required)")
		}
	}
}

// field returns the struct field of t whose yaml tag is key.
func field(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if f := t.Field(i); f.Tag.Get("yaml") == key && key != "-" {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

var (
	addrType     = reflect.TypeFor[netip.Addr]()
	prefixType   = reflect.TypeFor[netip.Prefix]()
	durationType = reflect.TypeFor[time.Duration]()
)

// value decodes n into v, reporting whether it succeeded. A bad scalar
// leaves v as it was (its default).
func (d *decoder) value(n *yaml.Node, path string, v reflect.Value, c checks) bool {
	switch {
	case v.Kind() == reflect.Struct && v.Type() != addrType && v.Type() != prefixType:
		// A section; absent, it is not decoded, so its required keys are
		// only reported when it is present.
		errs := len(d.errs)
		d.mapping(n, path, n.Line, v)
		return len(d.errs) == errs
	case v.Kind() == reflect.Slice:
		return d.list(n, path, v, c)
	}
	if err := leaf(n, v, c); err != nil {
		d.errorf(path, n.Line, "%s", err)
		return false
	}
	return true
}

// list decodes the list n into the slice v; null and [] are an empty
// (nil) list, refused for kind ports. Items that are structs start from
// their setDefaults; the other checks apply to each item.
func (d *decoder) list(n *yaml.Node, path string, v reflect.Value, c checks) bool {
	if n.Kind != yaml.SequenceNode && !isNull(n) {
		d.errorf(path, n.Line, "expected a list, got %s", kindName(n))
		return false
	}
	if len(n.Content) == 0 { // null or []
		if c.kind == "ports" {
			d.errorf(path, n.Line, "must list at least one port")
			return false
		}
		v.SetZero()
		return true
	}
	errs := len(d.errs)
	items := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, it := range n.Content {
		e := items.Index(i)
		if p, ok := e.Addr().Interface().(interface{ setDefaults() }); ok {
			p.setDefaults()
		}
		d.value(resolve(it), index(path, i), e, c)
	}
	v.Set(items)
	return len(d.errs) == errs
}

// leaf decodes the scalar n into v, of one of the Config's value types.
func leaf(n *yaml.Node, v reflect.Value, c checks) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("expected a single value, got %s", kindName(n))
	}
	if isNull(n) {
		return errors.New(`no value (write "" for an empty string)`)
	}
	s, tag := n.Value, n.ShortTag()
	switch v.Type() {
	case durationType:
		dur, err := time.ParseDuration(s)
		switch {
		case err != nil:
			return fmt.Errorf("%q is not a duration (e.g. 90s, 30m, 168h)", s)
		case c.bounds != "":
			if err := durationInRange(dur, s, c.bounds); err != nil {
				return err
			}
		case dur <= 0:
			return fmt.Errorf("must be positive, got %s", s)
		}
		if c.kind == "seconds" && dur%time.Second != 0 {
			return fmt.Errorf("must be a whole number of seconds, got %s", s)
		}
		v.SetInt(int64(dur))
		return nil
	case addrType:
		a, err := parseAddr(s, c.kind)
		if err == nil {
			v.Set(reflect.ValueOf(a))
		}
		return err
	case prefixType:
		p, err := domain.ParsePrefix(s)
		if err == nil {
			v.Set(reflect.ValueOf(p))
		}
		return err
	}
	switch v.Kind() {
	case reflect.Bool:
		var b bool
		if tag != "!!bool" || n.Decode(&b) != nil {
			return fmt.Errorf("expected true or false, got %q", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var i int64
		if tag != "!!int" || n.Decode(&i) != nil {
			return fmt.Errorf("expected an integer, got %q", s)
		}
		if err := intInRange(i, c.bounds, v.Kind()); err != nil {
			return err
		}
		if v.CanUint() {
			v.SetUint(uint64(i))
		} else {
			v.SetInt(i)
		}
	case reflect.Float64:
		var f float64
		if (tag != "!!int" && tag != "!!float") || n.Decode(&f) != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("expected a number, got %q", s)
		}
		if err := floatInRange(f, c.bounds); err != nil {
			return err
		}
		v.SetFloat(f)
	case reflect.Array: // [32]byte: a SHA-256, "" = none
		b, err := hex.DecodeString(s)
		if s != "" && (err != nil || len(b) != v.Len()) {
			return errors.New("must be 64 hex digits (the SHA-256 of the token, as printed by sha256sum)")
		}
		reflect.Copy(v, reflect.ValueOf(b))
	case reflect.String:
		if err := checkString(s, c.kind); err != nil {
			return err
		}
		v.SetString(s)
	default:
		return fmt.Errorf("internal error: no decoder for %s", v.Type())
	}
	return nil
}

// parseAddr parses an IP address; kind is ipv4, ipv6 or "" for either.
func parseAddr(s, kind string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, fmt.Errorf("%q is not an IP address", s)
	}
	a = a.Unmap()
	switch {
	case kind == "ipv4" && !a.Is4():
		return a, fmt.Errorf("%q is not an IPv4 address", s)
	case kind == "ipv6" && !a.Is6():
		return a, fmt.Errorf("%q is not an IPv6 address", s)
	case a.Zone() != "":
		return a, fmt.Errorf("%s: zones are not allowed", a)
	}
	return a, nil
}

// intInRange checks i against bounds lo..hi or lo.. (at least lo: up to
// the largest value of the field's kind, with int held to 32 bits).
func intInRange(i int64, bounds string, k reflect.Kind) error {
	loS, hiS, _ := strings.Cut(bounds, "..")
	lo, _ := strconv.ParseInt(loS, 10, 64)
	hi, err := strconv.ParseInt(hiS, 10, 64)
	open := err != nil
	if open {
		hi = map[reflect.Kind]int64{reflect.Int: math.MaxInt32, reflect.Uint8: math.MaxUint8,
			reflect.Uint16: math.MaxUint16, reflect.Uint32: math.MaxUint32, reflect.Uint64: math.MaxInt64}[k]
	}
	switch {
	case i >= lo && i <= hi:
		return nil
	case open:
		return fmt.Errorf("must be at least %d, got %d", lo, i)
	}
	return fmt.Errorf("%d is out of range %d..%d", i, lo, hi)
}

// durationInRange checks d against bounds lo..hi or lo.., written as
// durations (0s..4095s).
func durationInRange(d time.Duration, written, bounds string) error {
	loS, hiS, _ := strings.Cut(bounds, "..")
	lo, _ := time.ParseDuration(loS)
	hi, err := time.ParseDuration(hiS)
	switch {
	case err != nil && d < lo:
		return fmt.Errorf("must be at least %s, got %s", loS, written)
	case err == nil && (d < lo || d > hi):
		return fmt.Errorf("%s is out of range %s", written, bounds)
	}
	return nil
}

// floatInRange checks f against bounds lo..hi or >lo.
func floatInRange(f float64, bounds string) error {
	if above, ok := strings.CutPrefix(bounds, ">"); ok {
		if lo, _ := strconv.ParseFloat(above, 64); f <= lo {
			return fmt.Errorf("must be greater than %g, got %g", lo, f)
		}
		return nil
	}
	loS, hiS, _ := strings.Cut(bounds, "..")
	lo, _ := strconv.ParseFloat(loS, 64)
	hi, err := strconv.ParseFloat(hiS, 64)
	if err != nil {
		hi = math.Inf(1)
	}
	if f < lo || f > hi {
		return fmt.Errorf("%g is out of range %g..%g", f, lo, hi)
	}
	return nil
}

// enums are the string kinds with a fixed set of values, each defined by
// the package that acts on it.
var enums = map[string][]string{
	"neighbor-role": {string(bgp.RoleBorder), string(bgp.RolePeer)},
	"client-role":   {domain.RoleOperator, domain.RolePartner},
	"protocol":      {ProtocolTCP, ProtocolUDP},
	"action":        {fanout.ActionBlackhole, fanout.ActionFlowSpec, fanout.ActionLog},
	"store-driver":  {DriverSQLite, DriverPostgres},
}

// checkString checks s against a string kind.
func checkString(s, kind string) error {
	if allowed, ok := enums[kind]; ok && !slices.Contains(allowed, s) {
		return fmt.Errorf("%q is not one of %s", s, strings.Join(allowed, ", "))
	}
	switch kind {
	case "nonempty":
		if strings.TrimSpace(s) == "" {
			return errors.New("must not be empty")
		}
	case "ip-or-empty":
		if _, err := netip.ParseAddr(s); s != "" && err != nil {
			return fmt.Errorf("%q is not an IP address (use \"\" to not listen)", s)
		}
	case "listen", "listen-or-off":
		if s == "" && kind == "listen-or-off" {
			return nil
		}
		if err := checkHostPort(s); err != nil {
			return fmt.Errorf("%q: %s", s, err)
		}
	case "community":
		if _, err := bgp.ParseCommunity(s); err != nil {
			return fmt.Errorf("%q is not a community (want ASN:VALUE with 16-bit numbers, e.g. 65535:666)", s)
		}
	case "large-community":
		if _, err := bgp.ParseLargeCommunity(s); err != nil {
			return fmt.Errorf("%q is not a community (want ASN:X:Y with 32-bit numbers, e.g. 64500:666:0)", s)
		}
	}
	return nil
}

// checkHostPort checks a listen address: the host is empty (every
// address), "localhost" or an IP literal; port 0 picks a free port.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("not a host:port address")
	}
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("host %q is not an IP address or localhost", host)
		}
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number 0..65535", port)
	}
	return nil
}

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// kindName describes a node for "expected X, got Y" messages.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return strconv.Quote(n.Value)
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

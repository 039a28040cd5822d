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
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rtbh/rtbh/detector/domain"
)

// The file is decoded by walking the YAML node tree rather than with
// yaml's struct decoding, so that every problem can be reported (not just
// the first) with its full key path and line, and so that "absent" can be
// told apart from "zero" for defaults and required keys.

// setter decodes the value node n found at key path path.
type setter func(n *yaml.Node, path string)

// field is one key of a mapping.
type field struct {
	key      string
	required bool
	set      setter
}

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

// errAt reports a problem at path, with the line of path or of its closest
// enclosing key found in the file.
func (d *decoder) errAt(path string, format string, args ...any) {
	d.errorf(path, d.lineOf(path), format, args...)
}

// failed reports whether a problem was already recorded at path or below it.
func (d *decoder) failed(path string) bool {
	for _, e := range d.errs {
		if e.Path == path || strings.HasPrefix(e.Path, path+".") || strings.HasPrefix(e.Path, path+"[") {
			return true
		}
	}
	return false
}

func (d *decoder) lineOf(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := d.lines[p]; ok {
			return l
		}
	}
	return 0
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// decode parses data into a Config, recording problems in d.errs.
func (d *decoder) decode(data []byte) *Config {
	c := defaults()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		d.errorf("", 0, "parsing YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		return c
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		d.errorf("", extra.Line, "the file must hold exactly one YAML document")
		return c
	}
	var root *yaml.Node
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root = doc.Content[0]
	}
	d.mapping(root, "", 1, d.configFields(c))
	d.check(c)
	return c
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

// mapping decodes the mapping n at path against fields. A nil or null n is
// an empty mapping (line is then used for missing required keys).
func (d *decoder) mapping(n *yaml.Node, path string, line int, fields []field) {
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
			k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
			kp := join(path, k.Value)
			f, ok := findField(fields, k.Value)
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
			d.lines[kp] = v.Line
			f.set(v, kp)
		}
	}
	for _, f := range fields {
		if f.required && !present[f.key] {
			d.errorf(join(path, f.key), line, "missing (required)")
		}
	}
}

func findField(fields []field, key string) (field, bool) {
	for _, f := range fields {
		if f.key == key {
			return f, true
		}
	}
	return field{}, false
}

// sequence returns the items of the list n; null is an empty list. ok is
// false (and a problem recorded) when n is not a list.
func (d *decoder) sequence(n *yaml.Node, path string) (items []*yaml.Node, ok bool) {
	n = resolve(n)
	if isNull(n) {
		return nil, true
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(path, n.Line, "expected a list, got %s", kindName(n))
		return nil, false
	}
	items = make([]*yaml.Node, len(n.Content))
	for i, it := range n.Content {
		items[i] = resolve(it)
	}
	return items, true
}

// scalar returns the text of the scalar n. Null is refused: an empty string
// must be written "".
func (d *decoder) scalar(n *yaml.Node, path string) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode {
		d.errorf(path, n.Line, "expected a single value, got %s", kindName(n))
		return "", false
	}
	if isNull(n) {
		d.errorf(path, n.Line, `no value (write "" for an empty string)`)
		return "", false
	}
	return n.Value, true
}

// integer decodes an integer in [min, max].
func (d *decoder) integer(n *yaml.Node, path string, min, max int64) (int64, bool) {
	s, ok := d.scalar(n, path)
	if !ok {
		return 0, false
	}
	var v int64
	if n.ShortTag() != "!!int" || n.Decode(&v) != nil {
		d.errorf(path, n.Line, "expected an integer, got %q", s)
		return 0, false
	}
	switch {
	case (v < min || v > max) && (max == math.MaxInt32 || max == math.MaxInt64):
		d.errorf(path, n.Line, "must be at least %d, got %d", min, v)
		return 0, false
	case v < min || v > max:
		d.errorf(path, n.Line, "%d is out of range %d..%d", v, min, max)
		return 0, false
	}
	return v, true
}

func (d *decoder) number(n *yaml.Node, path string) (float64, bool) {
	s, ok := d.scalar(n, path)
	if !ok {
		return 0, false
	}
	var v float64
	if t := n.ShortTag(); (t != "!!int" && t != "!!float") || n.Decode(&v) != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		d.errorf(path, n.Line, "expected a number, got %q", s)
		return 0, false
	}
	return v, true
}

// The setters below store a decoded value through a pointer, leaving the
// default in place when the value is bad.

func (d *decoder) str(p *string) setter {
	return func(n *yaml.Node, path string) {
		if s, ok := d.scalar(n, path); ok {
			*p = s
		}
	}
}

func (d *decoder) nonEmpty(p *string) setter {
	return func(n *yaml.Node, path string) {
		s, ok := d.scalar(n, path)
		if ok && strings.TrimSpace(s) == "" {
			d.errorf(path, n.Line, "must not be empty")
			ok = false
		}
		if ok {
			*p = s
		}
	}
}

func (d *decoder) oneOf(p *string, values ...string) setter {
	return func(n *yaml.Node, path string) {
		s, ok := d.scalar(n, path)
		if !ok {
			return
		}
		for _, v := range values {
			if s == v {
				*p = s
				return
			}
		}
		d.errorf(path, n.Line, "%q is not one of %s", s, strings.Join(values, ", "))
	}
}

func (d *decoder) boolean(p *bool) setter {
	return func(n *yaml.Node, path string) {
		s, ok := d.scalar(n, path)
		if !ok {
			return
		}
		if n.ShortTag() != "!!bool" || n.Decode(p) != nil {
			d.errorf(path, n.Line, "expected true or false, got %q", s)
		}
	}
}

func (d *decoder) intRange(p *int, min, max int64) setter {
	return func(n *yaml.Node, path string) {
		if v, ok := d.integer(n, path, min, max); ok {
			*p = int(v)
		}
	}
}

func (d *decoder) uint64Min(p *uint64, min int64) setter {
	return func(n *yaml.Node, path string) {
		if v, ok := d.integer(n, path, min, math.MaxInt64); ok {
			*p = uint64(v)
		}
	}
}

func (d *decoder) port(p *uint16) setter {
	return func(n *yaml.Node, path string) {
		if v, ok := d.integer(n, path, 1, 65535); ok {
			*p = uint16(v)
		}
	}
}

func (d *decoder) multihop(p *uint8) setter {
	return func(n *yaml.Node, path string) {
		if v, ok := d.integer(n, path, 0, 255); ok {
			*p = uint8(v)
		}
	}
}

func (d *decoder) asn(p *uint32) setter {
	return func(n *yaml.Node, path string) {
		if v, ok := d.integer(n, path, 1, math.MaxUint32); ok {
			*p = uint32(v)
		}
	}
}

// fraction decodes a number in [min, max]; positive additionally excludes
// min itself.
func (d *decoder) fraction(p *float64, min, max float64, positive bool) setter {
	return func(n *yaml.Node, path string) {
		v, ok := d.number(n, path)
		switch {
		case !ok:
		case positive && v <= min:
			d.errorf(path, n.Line, "must be greater than %g, got %g", min, v)
		case v < min || v > max:
			d.errorf(path, n.Line, "%g is out of range %g..%g", v, min, max)
		default:
			*p = v
		}
	}
}

// duration decodes a Go duration, which must be positive.
func (d *decoder) duration(p *time.Duration) setter {
	return func(n *yaml.Node, path string) {
		s, ok := d.scalar(n, path)
		if !ok {
			return
		}
		v, err := time.ParseDuration(s)
		switch {
		case err != nil:
			d.errorf(path, n.Line, "%q is not a duration (e.g. 90s, 30m, 168h)", s)
		case v <= 0:
			d.errorf(path, n.Line, "must be positive, got %s", s)
		default:
			*p = v
		}
	}
}

// addr decodes an IP address; family is 4, 6 or 0 for either.
func (d *decoder) addr(p *netip.Addr, family int) setter {
	return func(n *yaml.Node, path string) {
		s, ok := d.scalar(n, path)
		if !ok {
			return
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			d.errorf(path, n.Line, "%q is not an IP address", s)
			return
		}
		a = a.Unmap()
		switch {
		case family == 4 && !a.Is4():
			d.errorf(path, n.Line, "%q is not an IPv4 address", s)
		case family == 6 && !a.Is6():
			d.errorf(path, n.Line, "%q is not an IPv6 address", s)
		case family != 0 && a.Zone() != "":
			d.errorf(path, n.Line, "%q: zones are not allowed", s)
		default:
			*p = a
		}
	}
}

// ipLiteral decodes "" or an IP address, kept as a string.
func (d *decoder) ipLiteral(p *string) setter {
	return func(n *yaml.Node, path string) {
		s, ok := d.scalar(n, path)
		if !ok {
			return
		}
		if _, err := netip.ParseAddr(s); s != "" && err != nil {
			d.errorf(path, n.Line, "%q is not an IP address (use \"\" to not listen)", s)
			return
		}
		*p = s
	}
}

func (d *decoder) prefixes(p *[]netip.Prefix) setter {
	return func(n *yaml.Node, path string) {
		items, ok := d.sequence(n, path)
		if !ok {
			return
		}
		var out []netip.Prefix
		for i, it := range items {
			ip := index(path, i)
			s, ok := d.scalar(it, ip)
			if !ok {
				continue
			}
			pfx, err := domain.ParsePrefix(s)
			if err != nil {
				d.errorf(ip, it.Line, "%s", err)
				continue
			}
			out = append(out, pfx)
		}
		*p = out
	}
}

// listen decodes a host:port listen address: the host is empty (every
// address), "localhost" or an IP literal; port 0 picks a free port. With
// optional, "" is accepted and means off.
func (d *decoder) listen(p *string, optional bool) setter {
	return func(n *yaml.Node, path string) {
		s, ok := d.scalar(n, path)
		if !ok {
			return
		}
		if s == "" && optional {
			*p = s
			return
		}
		if err := checkHostPort(s); err != nil {
			d.errorf(path, n.Line, "%q: %s", s, err)
			return
		}
		*p = s
	}
}

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
	if v, err := strconv.ParseUint(port, 10, 16); err != nil || v > 65535 {
		return fmt.Errorf("port %q is not a number 0..65535", port)
	}
	return nil
}

// communities decodes standard ("a:b", 16 bits each) or large ("a:b:c", 32
// bits each) BGP communities, kept as written.
func (d *decoder) communities(p *[]string, large bool) setter {
	parts, bits, form := 2, 16, "ASN:VALUE with 16-bit numbers, e.g. 65535:666"
	if large {
		parts, bits, form = 3, 32, "ASN:X:Y with 32-bit numbers, e.g. 64500:666:0"
	}
	return func(n *yaml.Node, path string) {
		items, ok := d.sequence(n, path)
		if !ok {
			return
		}
		var out []string
		for i, it := range items {
			ip := index(path, i)
			s, ok := d.scalar(it, ip)
			if !ok {
				continue
			}
			if !validCommunity(s, parts, bits) {
				d.errorf(ip, it.Line, "%q is not a community (want %s)", s, form)
				continue
			}
			out = append(out, s)
		}
		*p = out
	}
}

func validCommunity(s string, parts, bits int) bool {
	f := strings.Split(s, ":")
	if len(f) != parts {
		return false
	}
	for _, x := range f {
		// ParseUint accepts only digits here (no sign), which is what we want.
		if _, err := strconv.ParseUint(x, 10, bits); err != nil {
			return false
		}
	}
	return true
}

func (d *decoder) ports(p *[]uint16) setter {
	return func(n *yaml.Node, path string) {
		items, ok := d.sequence(n, path)
		if !ok {
			return
		}
		if len(items) == 0 {
			d.errorf(path, resolve(n).Line, "must list at least one port")
			return
		}
		var out []uint16
		for i, it := range items {
			if v, ok := d.integer(it, index(path, i), 1, 65535); ok {
				out = append(out, uint16(v))
			}
		}
		*p = out
	}
}

func (d *decoder) token(c *Client) setter {
	return func(n *yaml.Node, path string) {
		s, ok := d.scalar(n, path)
		if !ok || s == "" {
			return
		}
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != 32 {
			d.errorf(path, n.Line, "must be 64 hex digits (the SHA-256 of the token, as printed by sha256sum)")
			return
		}
		copy(c.TokenSHA256[:], b)
		c.HasToken = true
	}
}

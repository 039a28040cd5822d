package domain

import "testing"

func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"198.51.100.7", "198.51.100.7/32", ""},
		{" 198.51.100.7 ", "198.51.100.7/32", ""},
		{"198.51.100.0/24", "198.51.100.0/24", ""},
		{"2001:db8::1", "2001:db8::1/128", ""},
		{"::ffff:198.51.100.7", "198.51.100.7/32", ""},
		{"::ffff:198.51.100.0/120", "198.51.100.0/24", ""},
		{"198.51.100.7/24", "", `"198.51.100.7/24" has host bits set (did you mean 198.51.100.0/24?)`},
		{"198.51.100.256", "", `"198.51.100.256" is not an address or prefix`},
		{"fe80::1%eth0", "", `"fe80::1%eth0": zones are not allowed`},
		{"", "", "empty prefix"},
		{"10.0.0.0/33", "", `"10.0.0.0/33" is not an address or prefix`},
	} {
		p, err := ParsePrefix(tc.in)
		switch {
		case tc.err != "" && (err == nil || err.Error() != tc.err):
			t.Errorf("ParsePrefix(%q) error = %v, want %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || p.String() != tc.want):
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
}

// Package config loads and validates the rtbhd configuration file.
//
// The file is YAML with the schema of the product specification. Decoding is
// strict: unknown keys, duplicate keys and values of the wrong type are
// errors. Every key not marked required gets the default the specification
// shows. Parse does not stop at the first mistake: it reports every problem
// it finds, one per line, each naming its key path and, where YAML knows it,
// its line (see Errors). `rtbhd --check` and the daemon use the same
// validation.
//
// The schema is the Config type itself: its yaml tags name the keys, its
// check tags the rule for each value, and validate.go holds the rules that
// involve several keys.
//
// The result is a typed Config: addresses and prefixes as netip.Addr and
// netip.Prefix, durations as time.Duration, ASNs as uint32, BGP communities
// as validated strings and API token hashes as [32]byte.
//
// Relative file paths (store.path, api.tls.cert, api.tls.key,
// api.tls.client_ca) are kept as written: they are relative to the working
// directory of the process, not to the configuration file.
package config

// Command rtbhctl is the operator CLI of rtbhd: a gRPC client of the
// rtbh.v1 API. It never opens the database or BGP itself.
//
//	rtbhctl [global flags] COMMAND [flags] ARGS
//
// Flags are parsed by github.com/spf13/pflag, and may come before, between
// or after the arguments ("--" ends them). Global flags: --addr (default
// 127.0.0.1:50051), --token (or $RTBH_TOKEN), --tls, --ca, --cert, --key,
// --json, --timeout.
//
// Transport: plaintext unless --tls, --ca or --cert is given. --tls
// verifies rtbhd's certificate against the system roots; --ca FILE
// against that CA alone; --cert/--key add a client certificate (mTLS).
// The token is sent as gRPC per-RPC credentials (authorization: Bearer),
// and rtbhctl refuses, with exit status 2 and before connecting, to send
// it in plaintext to anything but a loopback address (127.0.0.0/8, ::1,
// localhost; or a unix: socket).
//
// add --file FILE and remove --file FILE read one prefix per line ("#"
// comments, blank lines skipped, "-" = stdin) and send them in batches
// (AddBlackholes, RemoveBlackholes: at most 10,000 items and 3 MiB a
// call, two calls in flight); refused lines are reported with their line
// number and make the exit status 1. list pages through every entry
// (ListBlackholes, 10,000 a page), with --within CIDR and --origin O.
//
// Exit status: 0 on success, 1 when rtbhd refused the request (the gRPC
// status code and message are printed on stderr as "rtbhctl: CODE:
// message"), 2 on usage errors.
package main

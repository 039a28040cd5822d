// Command rtbhctl is the operator CLI of rtbhd: a gRPC client of the
// rtbh.v1 API. It never opens the database or BGP itself.
//
//	rtbhctl [global flags] COMMAND [flags] ARGS
//
// Global flags (accepted before or after the command and its arguments):
// --addr (default 127.0.0.1:50051), --token (or $RTBH_TOKEN), --ca, --cert,
// --key (TLS when --ca or --cert is given), --json, --timeout.
//
// Exit status: 0 on success, 1 when rtbhd refused the request (the gRPC
// status code and message are printed on stderr as "rtbhctl: CODE:
// message"), 2 on usage errors.
package main

// Package proto holds rtbh's protobuf definitions and the generated Go code.
//
// Regenerate with `go generate ./proto` (needs protoc from Debian's
// protobuf-compiler; the Go plugins are pinned as tool directives in go.mod,
// so this works offline once the module cache is filled).
package proto

//go:generate sh -c "protoc -I . --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative rtbh/v1/rtbh.proto"

PROTOC_GEN := PATH="$$(go env GOPATH)/bin:$$PATH"

.PHONY: proto
proto:
	$(PROTOC_GEN) protoc -I api --go_out=paths=source_relative:api --go-grpc_out=paths=source_relative:api api/leasekeeper/v1/leasekeeper.proto
	$(PROTOC_GEN) protoc -I fsm/fsmpb --go_out=paths=source_relative:fsm/fsmpb fsm/fsmpb/command.proto

package main

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// objectError names the object a failed call was about, so the error line
// can say which one, as kubectl's do.
type objectError struct {
	kind string // "lease", "member"
	key  string // namespace/name, or a member ID
	err  error
}

func (e *objectError) Error() string { return e.err.Error() }
func (e *objectError) Unwrap() error { return e.err }

// onObject marks err as being about the object kind key; nil stays nil.
func onObject(err error, kind, key string) error {
	if err == nil {
		return nil
	}
	return &objectError{kind: kind, key: key, err: err}
}

// pkgPrefix matches the package prefixes of the server's and the client's
// sentinel errors ("fsm: ", "client: "), which tell a user nothing.
var pkgPrefix = regexp.MustCompile(`\b(fsm|node|transport|client|auth|leasing|k8sapi|callmux): `)

func stripPrefixes(s string) string { return pkgPrefix.ReplaceAllString(s, "") }

// givenUp marks a client's message for a call that no node answered:
// every endpoint was tried until the retries or the time ran out.
var givenUp = regexp.MustCompile(`^after \d+ attempts? on nodes `)

// errorLine is the one line leasectl prints for err:
//
//	Error from server (NotFound): lease "default/nope" not found
//	Error from server (FailedPrecondition): lease "default/db": not the current holding (...)
//	Unable to reach the cluster (Unavailable): after 5 attempts on nodes 127.0.0.1:7001 (...)
//	leasectl: --holder is required
func errorLine(err error) string {
	var obj *objectError
	errors.As(err, &obj)
	var withStatus interface{ GRPCStatus() *status.Status }
	if errors.As(err, &withStatus) {
		st := withStatus.GRPCStatus()
		msg := stripPrefixes(st.Message())
		switch {
		case st.Code() == codes.OK:
			// not a server's answer: fall through to the plain line
		case st.Code() == codes.Canceled:
			return "leasectl: " + msg
		case givenUp.MatchString(msg):
			return fmt.Sprintf("Unable to reach the cluster (%s): %s", st.Code(), msg)
		case obj != nil && st.Code() == codes.NotFound:
			return fmt.Sprintf("Error from server (NotFound): %s %q not found", obj.kind, obj.key)
		case obj != nil:
			return fmt.Sprintf("Error from server (%s): %s %q: %s", st.Code(), obj.kind, obj.key, msg)
		default:
			return fmt.Sprintf("Error from server (%s): %s", st.Code(), msg)
		}
	}
	msg := stripPrefixes(err.Error())
	if obj != nil && !strings.Contains(msg, obj.key) {
		msg = fmt.Sprintf("%s %q: %s", obj.kind, obj.key, msg)
	}
	return "leasectl: " + msg
}

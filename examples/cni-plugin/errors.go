package main

import (
	"errors"
	"fmt"

	"example.com/cnet/cnet"
)

// Error codes: the spec's (1-11, 50-51), then this plugin's own (100+).
const (
	ErrIncompatibleVersion = 1
	ErrUnsupportedField    = 2
	ErrUnknownContainer    = 3
	ErrInvalidEnv          = 4
	ErrIO                  = 5
	ErrDecode              = 6
	ErrInvalidConfig       = 7
	ErrTryAgainLater       = 11
	ErrNotAvailable        = 50

	// A libcnet call failed; details carry its result code's name.
	ErrLibrary = 100
	// CHECK: the container is not as ADD made it or as prevResult says.
	ErrDrift = 101
	// The chain is not one cnet can be part of (a prevResult in ADD).
	ErrChain = 102
	// The pool has no address left.
	ErrExhausted = 103
	// The requested address is held by someone else.
	ErrAddressTaken = 104
)

// Error is the CNI error object printed on stdout.
type Error struct {
	CNIVersion string `json:"cniVersion"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details,omitempty"`
}

func newError(code uint, msg, details string) *Error {
	return &Error{Code: code, Msg: msg, Details: details}
}

// libError turns a libcnet error of `what` into a CNI error: the spec's
// code where one fits, a plugin code otherwise. The library's messages
// never hold secrets (the etcd password is never shown).
func libError(what string, err error) *Error {
	var ce *cnet.Error
	if !errors.As(err, &ce) {
		return newError(ErrLibrary, what+": "+err.Error(), "")
	}
	code := uint(ErrLibrary)
	switch ce.Name {
	case "CNET_INVALID_ARGUMENT", "CNET_INVALID_UTF8":
		code = ErrInvalidConfig
	case "CNET_IO":
		code = ErrIO
	case "CNET_TIMEOUT", "CNET_BUSY":
		code = ErrTryAgainLater
	case "CNET_EXHAUSTED":
		code = ErrExhausted
	case "CNET_CONFLICT":
		code = ErrAddressTaken
	}
	return newError(code, fmt.Sprintf("%s: %s", what, ce.Message), ce.Name)
}

package config

import (
	"errors"
	"net/netip"
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func unwrapAll(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// Package natsheader holds what bus/watermillbus and runtime/watermillmw
// both need to know about NATS message headers.
package natsheader

import "strings"

// ValidName reports whether nats.go accepts k as a header name: printable
// ASCII without spaces or the separators of RFC 7230.
func ValidName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < '!' || c > '~' || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

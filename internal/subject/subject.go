// Package subject matches NATS subjects against patterns with wildcards.
// It is internal so that resilience (breaker rules) can match subjects
// without importing the transport; bus.MatchSubject is its public face.
// It imports nothing of ours.
package subject

import "strings"

// Match reports whether subject matches pattern, where "*" in the
// pattern matches exactly one token and a final ">" one or more.
func Match(pattern, subject string) bool {
	for {
		pTok, pRest, pMore := strings.Cut(pattern, ".")
		if pTok == ">" && !pMore {
			return subject != ""
		}
		sTok, sRest, sMore := strings.Cut(subject, ".")
		if pTok != "*" && pTok != sTok || sTok == "" {
			return false
		}
		if !pMore || !sMore {
			return pMore == sMore
		}
		pattern, subject = pRest, sRest
	}
}

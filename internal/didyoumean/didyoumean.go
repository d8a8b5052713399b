// Package didyoumean finds the word a typo was meant to be, for the
// commands' "did you mean" hints.
package didyoumean

// Closest returns the word of known nearest to word (at most two edits
// away, one for words shorter than four letters), or "" when none is near
// enough.
func Closest(word string, known []string) string {
	best, bestD := "", 3
	if len(word) < 4 {
		bestD = 2
	}
	for _, k := range known {
		if d := Distance(word, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// Distance is the Levenshtein distance between a and b.
func Distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

package envelope

import (
	"bytes"
	"runtime"
	"testing"
)

// hostileBody is a valid envelope followed, inside its map, by n unknown
// keys of 3 bytes with nil values: 5 bytes each, the cheapest entries
// msgpack allows. n = 195 000 makes the 975 KB body.
func hostileBody(tb testing.TB, n int) []byte {
	tb.Helper()
	good, err := Marshal(benchEnvelope())
	if err != nil {
		tb.Fatal(err)
	}
	// good starts with a fixmap header of its field count: rewrite it as a
	// map32 holding n more entries.
	fields := int(good[0] & 0x0f)
	var b bytes.Buffer
	total := uint32(fields + n)
	b.Write([]byte{0xdf, byte(total >> 24), byte(total >> 16), byte(total >> 8), byte(total)})
	b.Write(good[1:])
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	for i := range n {
		b.WriteByte(0xa3) // fixstr of 3
		b.WriteByte('_')  // never a known key
		b.WriteByte(alphabet[i/len(alphabet)%len(alphabet)])
		b.WriteByte(alphabet[i%len(alphabet)])
		if i >= len(alphabet)*len(alphabet) {
			// past 3844 keys the names repeat: vary the first byte too
			b.Bytes()[b.Len()-3] = alphabet[i/(len(alphabet)*len(alphabet))%len(alphabet)]
		}
		b.WriteByte(0xc0) // nil
	}
	return b.Bytes()
}

// allocatedBy returns the bytes fn allocates.
func allocatedBy(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// The decoder's work is bounded per byte of input, however the input is
// built: a body made of unknown keys (skipped, for forward compatibility)
// costs no more than a small multiple of its size.
func TestHostileUnknownKeysCostBoundedMemory(t *testing.T) {
	data := hostileBody(t, 195_000)
	if len(data) < 950_000 || len(data) > DefaultMaxSize {
		t.Fatalf("body of %d bytes", len(data))
	}
	var err error
	alloc := allocatedBy(func() { _, err = Parse(data, Limits{IgnoreClockSkew: true}) })
	if limit := uint64(2 * len(data)); alloc > limit {
		t.Fatalf("Parse of %d bytes of unknown keys allocated %d bytes (%.1fx the input), limit %d (err %v)",
			len(data), alloc, float64(alloc)/float64(len(data)), limit, err)
	}
}

// BenchmarkHostileUnknownKeys decodes the 975 KB body of 195 000
// unknown keys: compare B/op and ns/op before and after bounding them.
func BenchmarkHostileUnknownKeys(b *testing.B) {
	data := hostileBody(b, 195_000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var e Envelope
		_ = Unmarshal(data, &e)
	}
}

// hostileExtensions is a valid envelope whose extensions map holds n
// entries of a 3-byte key and an empty value (5 bytes each).
func hostileExtensions(tb testing.TB, n int) []byte {
	tb.Helper()
	e := benchEnvelope()
	e.Extensions = map[string]string{"x": "y"}
	good, err := Marshal(e)
	if err != nil {
		tb.Fatal(err)
	}
	// The extensions map is last: a fixmap of one entry, "x": "y".
	tail := []byte{0xaa, 'e', 'x', 't', 'e', 'n', 's', 'i', 'o', 'n', 's', 0x81, 0xa1, 'x', 0xa1, 'y'}
	if !bytes.HasSuffix(good, tail) {
		tb.Fatalf("unexpected encoding % x", good[len(good)-len(tail):])
	}
	var b bytes.Buffer
	b.Write(good[:len(good)-5])
	b.Write([]byte{0xdf, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	for i := range n {
		b.Write([]byte{0xa3, byte('a' + i/676%26), byte('a' + i/26%26), byte('a' + i%26), 0xa0})
	}
	return b.Bytes()
}

// The same bound holds for extensions, whose entries the decoder keeps.
func TestHostileExtensionsCostBoundedMemory(t *testing.T) {
	data := hostileExtensions(t, 17_576) // every 3-letter key once
	var err error
	alloc := allocatedBy(func() { _, err = Parse(data, Limits{IgnoreClockSkew: true}) })
	if limit := uint64(2*len(data)) + 64<<10; alloc > limit {
		t.Fatalf("Parse of %d bytes of extensions allocated %d bytes (%.1fx the input), limit %d (err %v)",
			len(data), alloc, float64(alloc)/float64(len(data)), limit, err)
	}
}

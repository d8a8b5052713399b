package envelope

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/vmihailenco/msgpack/v5"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from goldenVectors")

const goldenDir = "testdata/golden"

// goldenT0 is the receive time (and clock) golden vectors are parsed with,
// unless their manifest entry says otherwise.
var goldenT0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// goldenEntry is one vector's line in testdata/golden/manifest.json.
type goldenEntry struct {
	// Canonical: Marshal of the decoded envelope gives back the exact bytes.
	Canonical bool `json:"canonical,omitempty"`
	// ReceivedAt overrides goldenT0 as Limits.ReceivedAt and Limits.Now.
	ReceivedAt string `json:"received_at,omitempty"`
	// MaxSize is Limits.MaxSize (zero: the default).
	MaxSize int `json:"max_size,omitempty"`
}

func (g goldenEntry) limits(t *testing.T) Limits {
	at := goldenT0
	if g.ReceivedAt != "" {
		var err error
		if at, err = time.Parse(time.RFC3339Nano, g.ReceivedAt); err != nil {
			t.Fatalf("manifest received_at: %v", err)
		}
	}
	return Limits{MaxSize: g.MaxSize, ReceivedAt: at, Now: func() time.Time { return at }}
}

// errorNames are the names .err files use for the sentinel errors.
var errorNames = map[string]error{
	"malformed":     ErrMalformed,
	"too_large":     ErrTooLarge,
	"missing_field": ErrMissingField,
	"invalid_field": ErrInvalidField,
	"bad_timestamp": ErrBadTimestamp,
	"expired":       ErrExpired,
}

// TestGolden checks every vector in testdata/golden. The files are the source
// of truth; goldenVectors only regenerates them with -update.
func TestGolden(t *testing.T) {
	if *update {
		writeGolden(t)
	}
	manifest := readManifest(t)
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.msgpack"))
	if err != nil || len(files) < 16 {
		t.Fatalf("found %d golden vectors (err %v), want at least 16", len(files), err)
	}
	valid, invalidCount := 0, 0
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".msgpack")
		entry, ok := manifest[name]
		if !ok {
			t.Errorf("%s: not in manifest.json", name)
			continue
		}
		data := readFile(t, file)
		t.Run(name, func(t *testing.T) {
			if strings.HasPrefix(name, "invalid-") {
				invalidCount++
				checkInvalidVector(t, name, data, entry)
			} else {
				valid++
				checkValidVector(t, name, data, entry)
			}
		})
	}
	if valid < 8 || invalidCount < 8 {
		t.Errorf("%d valid and %d invalid vectors, want at least 8 of each", valid, invalidCount)
	}
}

func checkValidVector(t *testing.T, name string, data []byte, entry goldenEntry) {
	e, err := Parse(data, entry.limits(t))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	got, err := e.MarshalJSON()
	if err != nil {
		t.Fatalf("MarshalJSON: %v", err)
	}
	want := readFile(t, filepath.Join(goldenDir, name+".json"))
	if !bytes.Equal(indentJSON(t, got), want) {
		t.Errorf("decoded JSON form differs\n got: %s\nwant: %s", indentJSON(t, got), want)
	}
	re, err := Marshal(e)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	if entry.Canonical && !bytes.Equal(re, data) {
		t.Errorf("re-marshalled bytes differ from a canonical vector\n got: %x\nwant: %x", re, data)
	}
	if !entry.Canonical && bytes.Equal(re, data) {
		t.Errorf("vector is marked non-canonical but re-marshals to the same bytes")
	}
	crossCheckWithLibrary(t, data, e)
}

func checkInvalidVector(t *testing.T, name string, data []byte, entry goldenEntry) {
	wantName := strings.TrimSpace(string(readFile(t, filepath.Join(goldenDir, name+".err"))))
	want, ok := errorNames[wantName]
	if !ok {
		t.Fatalf(".err names %q, not a known sentinel", wantName)
	}
	_, err := Parse(data, entry.limits(t))
	if !errors.Is(err, want) {
		t.Fatalf("Parse error = %v, want %s", err, wantName)
	}
	for other, sentinel := range errorNames {
		if other != wantName && errors.Is(err, sentinel) {
			t.Errorf("error %v also matches %s", err, other)
		}
	}
	if want != ErrTooLarge {
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("error %v (%T) is not a *FieldError", err, err)
		}
	}
}

// crossCheckWithLibrary decodes a vector with the plain msgpack library and
// compares every key with what Unmarshal produced.
func crossCheckWithLibrary(t *testing.T, data []byte, e *Envelope) {
	t.Helper()
	// The library decodes maps inside interfaces as map[string]any and fails
	// on other keys; map[any]any takes every key of the vectors.
	lib := func(b []byte, v any) error {
		dec := msgpack.NewDecoder(bytes.NewReader(b))
		dec.SetMapDecoder(func(d *msgpack.Decoder) (any, error) { return d.DecodeUntypedMap() })
		return dec.Decode(v)
	}
	var m map[string]any
	if err := lib(data, &m); err != nil {
		t.Fatalf("msgpack library cannot decode the vector: %v", err)
	}
	strs := map[string]string{
		"id": e.ID, "version": e.Version, "sender": e.Sender, "recipient": e.Recipient,
		"payload_type": string(e.PayloadType), "correlation_id": e.CorrelationID,
		"trace_id": e.TraceID, "reply_to": e.ReplyTo, "task_id": e.TaskID,
		"idempotency_key": e.IdempotencyKey,
	}
	for key, want := range strs {
		v, present := m[key]
		if !present || v == nil {
			if want != "" {
				t.Errorf("%s: library sees no value, Unmarshal %q", key, want)
			}
			continue
		}
		if v != want {
			t.Errorf("%s: library %#v, Unmarshal %q", key, v, want)
		}
	}
	for key, want := range map[string]time.Time{"timestamp": e.Timestamp, "deadline": e.Deadline} {
		v, _ := m[key].(time.Time)
		if !v.Equal(want) {
			t.Errorf("%s: library %v, Unmarshal %v", key, m[key], want)
		}
	}
	var wantPayload any
	if e.Payload != nil {
		if err := lib(e.Payload, &wantPayload); err != nil {
			t.Fatalf("library cannot decode Payload: %v", err)
		}
	}
	if !reflect.DeepEqual(m["payload"], wantPayload) {
		t.Errorf("payload: library %#v, Unmarshal %#v", m["payload"], wantPayload)
	}
	libExt, _ := m["extensions"].(map[any]any)
	if len(libExt) != len(e.Extensions) {
		t.Errorf("extensions: library has %d, Unmarshal %d", len(libExt), len(e.Extensions))
	}
	for lk, v := range libExt {
		k, _ := lk.(string)
		if e.Extensions[k] != v {
			t.Errorf("extensions[%q]: library %#v, Unmarshal %q", k, v, e.Extensions[k])
		}
	}
	for key := range m {
		if fieldNumber([]byte(key)) < 0 && !strings.HasPrefix(key, "x_") {
			t.Errorf("library sees key %q that Unmarshal does not know", key)
		}
	}
}

func readManifest(t *testing.T) map[string]goldenEntry {
	t.Helper()
	var m map[string]goldenEntry
	if err := json.Unmarshal(readFile(t, filepath.Join(goldenDir, "manifest.json")), &m); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	return m
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func indentJSON(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	buf.WriteByte('\n')
	return buf.Bytes()
}

// ---- generation (-update) ----

// goldenVector is a vector as goldenVectors builds it.
type goldenVector struct {
	name  string
	data  []byte
	entry goldenEntry
	err   string // sentinel name for invalid vectors
}

func writeGolden(t *testing.T) {
	t.Helper()
	old, _ := filepath.Glob(filepath.Join(goldenDir, "*"))
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(goldenDir, 0o755); err != nil {
		t.Fatal(err)
	}
	manifest := map[string]goldenEntry{}
	for _, v := range goldenVectors(t) {
		write(t, v.name+".msgpack", v.data)
		manifest[v.name] = v.entry
		if v.err != "" {
			write(t, v.name+".err", []byte(v.err+"\n"))
			continue
		}
		var e Envelope
		if err := Unmarshal(v.data, &e); err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		j, err := e.MarshalJSON()
		if err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		write(t, v.name+".json", indentJSON(t, j))
	}
	m, err := json.MarshalIndent(manifest, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	write(t, "manifest.json", append(m, '\n'))
}

func write(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(goldenDir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// goldenULID returns a fixed ULID for a vector: time t, entropy from its name.
func goldenULID(t time.Time, name string) string {
	sum := sha256.Sum256([]byte(name))
	return ulid.MustNew(ulid.Timestamp(t), bytes.NewReader(sum[:])).String()
}

func goldenMinimal() *Envelope {
	return &Envelope{
		ID:          goldenULID(goldenT0, "minimal"),
		Version:     WireVersion,
		Sender:      "client-1",
		Recipient:   "summarizer",
		PayloadType: TaskRequest,
		Timestamp:   goldenT0,
	}
}

func goldenAllFields() *Envelope {
	e := goldenMinimal()
	e.ID = goldenULID(goldenT0, "all-fields")
	e.Payload = mustEncode(map[string]any{"text": "hello", "max_words": 50})
	e.CorrelationID = goldenULID(goldenT0.Add(-time.Second), "request")
	e.TraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	e.Timestamp = goldenT0.Add(123456789 * time.Nanosecond)
	e.ReplyTo = "jetagent.replies.client-1"
	e.TaskID = "task-42"
	e.Deadline = goldenT0.Add(90 * time.Second)
	e.IdempotencyKey = "order-7781"
	e.Extensions = map[string]string{"tenant": "acme", "priority": "high"}
	return e
}

func mustEncode(v any) []byte {
	b, err := EncodePayload(v)
	if err != nil {
		panic(err)
	}
	return b
}

func mustMarshal(t *testing.T, e *Envelope) []byte {
	t.Helper()
	b, err := Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// nestedPayload spells out one value of every msgpack family, integers in
// every width, so the vector pins down how each is carried and rendered.
func nestedPayload() []byte {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(enc.EncodeMapLen(6))
	must(enc.EncodeString("ints"))
	must(enc.EncodeArrayLen(10))
	must(enc.EncodeUint(7))            // positive fixint
	must(enc.EncodeUint8(200))         // uint8
	must(enc.EncodeUint16(60000))      // uint16
	must(enc.EncodeUint32(4000000000)) // uint32
	must(enc.EncodeUint64(18446744073709551615))
	must(enc.EncodeInt(-5))    // negative fixint
	must(enc.EncodeInt8(-100)) // int8
	must(enc.EncodeInt16(-30000))
	must(enc.EncodeInt32(-2000000000))
	must(enc.EncodeInt64(-9223372036854775808))
	must(enc.EncodeString("floats"))
	must(enc.EncodeArrayLen(2))
	must(enc.EncodeFloat32(1.5))
	must(enc.EncodeFloat64(-0.1))
	must(enc.EncodeString("misc"))
	must(enc.EncodeArrayLen(5))
	must(enc.EncodeBool(true))
	must(enc.EncodeBool(false))
	must(enc.EncodeNil())
	must(enc.EncodeBytes([]byte{0, 1, 2, 0xfe, 0xff}))
	must(enc.EncodeTime(time.Date(2024, 2, 29, 23, 59, 59, 0, time.UTC)))
	must(enc.EncodeString("nested"))
	must(enc.EncodeMapLen(1))
	must(enc.EncodeString("deeper"))
	must(enc.EncodeArrayLen(1))
	must(enc.EncodeMapLen(1))
	must(enc.EncodeString("k"))
	must(enc.EncodeString(strings.Repeat("long ", 8))) // str8
	must(enc.EncodeString("empty"))
	must(enc.EncodeMapLen(0))
	must(enc.EncodeString("by_number"))
	must(enc.EncodeMapLen(2)) // integer keys
	must(enc.EncodeInt(3))
	must(enc.EncodeString("three"))
	must(enc.EncodeInt(-4))
	must(enc.EncodeString("minus four"))
	return buf.Bytes()
}

// rawMap builds a msgpack map from alternating keys and values; a value that
// is a []byte is written as raw msgpack, anything else through the library.
func rawMap(kv ...any) []byte {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	if err := enc.EncodeMapLen(len(kv) / 2); err != nil {
		panic(err)
	}
	for _, v := range kv {
		if raw, ok := v.([]byte); ok {
			buf.Write(raw)
			continue
		}
		if err := enc.Encode(v); err != nil {
			panic(err)
		}
	}
	return buf.Bytes()
}

// minimalFields are the required fields of goldenMinimal, as rawMap arguments.
func minimalFields() []any {
	e := goldenMinimal()
	return []any{"id", e.ID, "version", e.Version, "sender", e.Sender,
		"recipient", e.Recipient, "payload_type", string(e.PayloadType), "timestamp", e.Timestamp}
}

func replaceField(kv []any, key string, value any) []any {
	kv = slices.Clone(kv)
	for i := 0; i < len(kv); i += 2 {
		if kv[i] == key {
			kv[i+1] = value
			return kv
		}
	}
	return append(kv, key, value)
}

func removeField(kv []any, key string) []any {
	for i := 0; i < len(kv); i += 2 {
		if kv[i] == key {
			return slices.Delete(slices.Clone(kv), i, i+2)
		}
	}
	return kv
}

func goldenVectors(t *testing.T) []goldenVector {
	t.Helper()
	canonical := goldenEntry{Canonical: true}
	var vs []goldenVector
	add := func(name string, e *Envelope, entry goldenEntry) {
		vs = append(vs, goldenVector{name: name, data: mustMarshal(t, e), entry: entry})
	}
	add("minimal", goldenMinimal(), canonical)
	add("all-fields", goldenAllFields(), canonical)

	u := goldenMinimal()
	u.ID = goldenULID(goldenT0, "unicode")
	u.Sender = "agent-é-日本語"
	u.Recipient = "récepteur-🚀"
	u.TaskID = "задача-1"
	u.Payload = mustEncode(map[string]string{"greeting": "こんにちは 👋", "note": "naïve café"})
	u.Extensions = map[string]string{"ключ": "значение", "emoji": "🎉"}
	add("unicode", u, canonical)

	x := goldenMinimal()
	x.ID = goldenULID(goldenT0, "extensions")
	x.Extensions = map[string]string{}
	for _, k := range strings.Fields("zeta alpha mu beta kappa gamma delta epsilon eta theta iota lambda nu xi omicron pi rho") {
		x.Extensions[k] = strings.ToUpper(k)
	}
	x.Extensions["long"] = strings.Repeat("v", 300) // str16
	add("extensions", x, canonical)                 // 18 entries: map16

	n := goldenMinimal()
	n.ID = goldenULID(goldenT0, "payload-nested")
	n.PayloadType = "custom.analysis_v2"
	n.Payload = nestedPayload()
	add("payload-nested", n, canonical)

	ts32 := goldenMinimal()
	ts32.ID = goldenULID(goldenT0, "timestamp-32")
	add("timestamp-32", ts32, canonical) // whole seconds: 32-bit form
	ts64 := goldenMinimal()
	ts64.ID = goldenULID(goldenT0, "timestamp-64")
	ts64.Timestamp = goldenT0.Add(987654321 * time.Nanosecond)
	add("timestamp-64", ts64, canonical)
	ts96 := goldenMinimal()
	ts96.ID = goldenULID(goldenT0, "timestamp-96")
	ts96.Timestamp = time.Date(1969, 7, 20, 20, 17, 40, 5, time.UTC) // before 1970: 96-bit form
	ts96.Deadline = time.Date(2600, 1, 1, 0, 0, 0, 0, time.UTC)      // past 2514: 96-bit form
	add("timestamp-96", ts96, goldenEntry{Canonical: true, ReceivedAt: "1969-07-20T20:17:40Z"})

	long := goldenMinimal()
	long.ID = goldenULID(goldenT0, "long-strings")
	long.IdempotencyKey = strings.Repeat("k", 40)  // str8
	long.ReplyTo = strings.Repeat("r.", 200) + "x" // str16
	add("long-strings", long, canonical)

	// Non-canonical: decode to the same envelope, re-encode to other bytes.
	min := minimalFields()
	vs = append(vs,
		goldenVector{name: "unknown-key", data: rawMap(append(slices.Clone(min),
			"x_future", map[string]any{"nested": []any{1, "two"}}, "x_flag", true)...)},
		goldenVector{name: "nil-optional", data: rawMap(append(slices.Clone(min),
			"correlation_id", nil, "payload", nil, "deadline", nil, "extensions", nil)...)},
		goldenVector{name: "timestamp-96-non-shortest", data: rawMap(replaceField(min, "timestamp",
			binary.BigEndian.AppendUint64([]byte{0xc7, 12, 0xff, 0, 0, 0, 0}, uint64(goldenT0.Unix())))...)},
		goldenVector{name: "map16-header", data: append([]byte{0xde, 0, 6}, rawMap(min...)[1:]...)},
	)

	bad := func(name, err string, data []byte, entry goldenEntry) {
		vs = append(vs, goldenVector{name: "invalid-" + name, data: data, err: err, entry: entry})
	}
	none := goldenEntry{}
	all := mustMarshal(t, goldenAllFields())
	bad("truncated", "malformed", all[:len(all)/2], none)
	bad("not-a-map", "malformed", []byte{0x93, 0xa1, 'a', 0xa1, 'b', 0xa1, 'c'}, none)
	bad("duplicate-key", "malformed", rawMap(append(slices.Clone(min), "sender", "mallory")...), none)
	bad("duplicate-unknown-key", "malformed", rawMap(append(slices.Clone(min), "x_a", 1, "x_a", 2)...), none)
	bad("non-string-key", "malformed", rawMap(append(slices.Clone(min), 7, "seven")...), none)
	bad("wrong-field-type", "malformed", rawMap(replaceField(min, "sender", 42)...), none)
	bad("bin-string", "malformed", rawMap(replaceField(min, "recipient", []byte{0xc4, 3, 'b', 'o', 'b'})...), none)
	bad("trailing-bytes", "malformed", append(rawMap(min...), 0xc0), none)
	bad("huge-map-header", "malformed", []byte{0xdf, 0xff, 0xff, 0xff, 0xff, 0xa2, 'i', 'd', 0xa1, 'x'}, none)
	bad("huge-string-header", "malformed", rawMap(replaceField(min, "sender", []byte{0xdb, 0x7f, 0xff, 0xff, 0xff, 'a'})...), none)
	bad("timestamp-nanoseconds", "malformed", rawMap(replaceField(min, "timestamp",
		[]byte{0xd7, 0xff, 0xff, 0xff, 0xff, 0xfc, 0, 0, 0, 0})...), none) // nsec = 2^30-1
	bad("timestamp-string", "malformed", rawMap(replaceField(min, "timestamp", "2025-06-01T12:00:00Z")...), none)
	bad("payload-truncated", "malformed", rawMap(append(slices.Clone(min), "payload", []byte{0x93, 1, 2})...)[:], none)
	deep := append(bytes.Repeat([]byte{0x91}, MaxPayloadDepth+1), 0xc0)
	bad("payload-too-deep", "malformed", rawMap(append(slices.Clone(min), "payload", deep)...), none)
	bad("extension-value-type", "malformed", rawMap(append(slices.Clone(min), "extensions", map[string]any{"n": 1})...), none)
	bad("missing-sender", "missing_field", rawMap(removeField(min, "sender")...), none)
	bad("empty-version", "missing_field", rawMap(replaceField(min, "version", "")...), none)
	bad("bad-payload-type", "invalid_field", rawMap(replaceField(min, "payload_type", "Task Request")...), none)
	bad("bad-id", "invalid_field", rawMap(replaceField(min, "id", "id with spaces")...), none)
	bad("empty-extension-key", "invalid_field", rawMap(append(slices.Clone(min), "extensions", map[string]string{"": "x"})...), none)
	bad("control-character", "invalid_field", rawMap(append(slices.Clone(min), "task_id", "t\r\nInjected: 1")...), none)
	bad("reply-to-wildcard", "invalid_field", rawMap(append(slices.Clone(min), "reply_to", "jetagent.replies.>")...), none)
	bad("reply-to-system-subject", "invalid_field", rawMap(append(slices.Clone(min), "reply_to", "$KV.SNAPSHOTS.a.t1")...), none)
	bad("reply-to-empty-token", "invalid_field", rawMap(append(slices.Clone(min), "reply_to", "jetagent.replies.")...), none)
	many := slices.Clone(min)
	for i := range MaxUnknownKeys + 1 {
		many = append(many, fmt.Sprintf("x_%d", i), nil)
	}
	bad("too-many-unknown-keys", "malformed", rawMap(many...), none)
	ext := map[string]string{}
	for i := range MaxExtensions + 1 {
		ext[fmt.Sprintf("k%d", i)] = ""
	}
	bad("too-many-extensions", "malformed", rawMap(append(slices.Clone(min), "extensions", ext)...), none)
	bad("clock-skew", "bad_timestamp", rawMap(replaceField(min, "timestamp", goldenT0.Add(time.Hour))...), none)
	bad("expired", "expired", rawMap(append(slices.Clone(min), "deadline", goldenT0.Add(-time.Second))...), none)
	bad("too-large", "too_large", rawMap(min...), goldenEntry{MaxSize: 64})
	return vs
}

package envelope

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// span is a range of bytes in the input, [start, end).
type span struct{ start, end int }

// Unmarshal decodes the wire encoding in data into e. It checks the encoding
// only (see docs/wire.md), not the meaning: run Validate, or use Parse, before
// trusting the result.
//
// e is overwritten completely; on error it is left as the zero Envelope. The
// result shares no memory with data, so data may be reused at once. Unknown
// keys are skipped. A nil value for any field means the field is absent.
//
// Every error wraps ErrMalformed and is a *FieldError whose Field names the
// wire key at fault (empty when the fault is not in one field) and whose
// Detail gives the byte offset and the problem. Memory use is bounded by a
// small multiple of len(data) whatever lengths the input declares.
func Unmarshal(data []byte, e *Envelope) error { return unmarshal(data, e, false) }

// unmarshal is Unmarshal; with alias, the payload shares data's memory.
func unmarshal(data []byte, e *Envelope, alias bool) error {
	if e == nil {
		return &FieldError{Err: ErrMalformed, Detail: "Unmarshal into a nil *Envelope"}
	}
	*e = Envelope{}
	var d decoder
	if err := d.scan(data); err != nil {
		return err
	}
	return d.build(data, e, alias)
}

// decoder holds what the first pass over the input found.
type decoder struct {
	strs      [numFields]span // string fields, by field number
	payload   span
	timestamp time.Time
	deadline  time.Time
	ext       span // the extensions map, header included
	extCount  int  // entries in the extensions map
	strBytes  int  // total length of all strings to copy
}

func malformed(field string, err error) error {
	return &FieldError{Field: field, Err: ErrMalformed, Detail: err.Error()}
}

func malformedf(field string, off int, format string, args ...any) error {
	return malformed(field, &scanError{off, fmt.Sprintf(format, args...)})
}

// scan walks the top-level map, checks every field's msgpack type and records
// where each value is, without copying anything.
func (d *decoder) scan(data []byte) error {
	h, err := readHeader(data, 0)
	if err != nil {
		return malformed("", err)
	}
	if h.kind != kindMap {
		return malformedf("", 0, "an envelope is a msgpack map, got %s", codeName(h.code))
	}
	var (
		seen uint32
		// unknown holds the keys this version does not know, to find
		// duplicates; allocated at the first one, so that the common
		// envelope (none) pays nothing for it.
		unknown  *[MaxUnknownKeys]span
		nUnknown int
	)
	off := h.body
	for range h.n {
		keyStart := off
		ks, ke, ok := strAt(data, off)
		if !ok {
			kh, err := readHeader(data, off)
			if err != nil {
				return malformed("", err)
			}
			if kh.kind != kindStr {
				return malformedf("", off, "map key is %s, want str", codeName(kh.code))
			}
			ks, ke = kh.body, kh.end()
		}
		key := data[ks:ke]
		off = ke
		f := fieldNumber(key)
		if f < 0 {
			// A bounded number, compared without allocating: a body of
			// unknown keys costs no more than any other body.
			if unknown == nil {
				unknown = new([MaxUnknownKeys]span)
			}
			for _, u := range unknown[:nUnknown] {
				if bytes.Equal(data[u.start:u.end], key) {
					return malformedf("", keyStart, "duplicate key %.64q", key)
				}
			}
			if nUnknown == MaxUnknownKeys {
				return malformedf("", keyStart, "more than %d unknown keys", MaxUnknownKeys)
			}
			unknown[nUnknown] = span{ks, ke}
			nUnknown++
			if off, err = skipValue(data, off); err != nil {
				return malformed(unknownKeyLabel(key), err)
			}
			continue
		}
		name := fieldNames[f]
		if seen&(1<<f) != 0 {
			return malformedf(name, keyStart, "duplicate key %q", name)
		}
		seen |= 1 << f
		if isStringField(f) {
			if s, e, ok := strAt(data, off); ok {
				d.strs[f] = span{s, e}
				d.strBytes += e - s
				off = e
				continue
			}
		}
		vh, err := readHeader(data, off)
		if err != nil {
			return malformed(name, err)
		}
		switch f {
		case fPayload:
			end, err := skipValue(data, off)
			if err != nil {
				return malformed(name, err)
			}
			if vh.kind != kindNil {
				d.payload = span{off, end}
			}
			off = end
		case fTimestamp, fDeadline:
			t, err := readTime(data, vh)
			if err != nil {
				return malformed(name, err)
			}
			if f == fTimestamp {
				d.timestamp = t
			} else {
				d.deadline = t
			}
			off = vh.end()
		case fExtensions:
			if off, err = d.scanExtensions(data, vh); err != nil {
				return err
			}
		default: // string fields
			switch vh.kind {
			case kindStr:
				d.strs[f] = span{vh.body, vh.end()}
				d.strBytes += vh.n
			case kindNil:
			default:
				return malformedf(name, off, "got %s, want str or nil", codeName(vh.code))
			}
			off = vh.end()
		}
	}
	if off != len(data) {
		return malformedf("", off, "%d bytes after the envelope map", len(data)-off)
	}
	return nil
}

// unknownKeyLabel names an unknown key in a FieldError: the key itself, made
// valid UTF-8 and cut to 64 bytes, since it comes from untrusted input and
// ends up in logs and dead-letter records.
func unknownKeyLabel(key []byte) string {
	const limit = 64
	s := strings.ToValidUTF8(string(key[:min(len(key), limit)]), "\uFFFD")
	if len(key) > limit {
		s += "..."
	}
	return s
}

// scanExtensions checks the extensions value, whose header is h: nil, or a map
// of str to str. It returns the offset after the value.
func (d *decoder) scanExtensions(data []byte, h header) (int, error) {
	const name = "extensions"
	start := h.start
	switch h.kind {
	case kindNil:
		return h.body, nil
	case kindMap:
	default:
		return 0, malformedf(name, start, "got %s, want map or nil", codeName(h.code))
	}
	if h.n > MaxExtensions {
		return 0, malformedf(name, start, "%d entries, limit %d", h.n, MaxExtensions)
	}
	off := h.body
	for range 2 * h.n {
		sh, err := readHeader(data, off)
		if err != nil {
			return 0, malformed(name, err)
		}
		if sh.kind != kindStr {
			return 0, malformedf(name, off, "got %s, want str keys and values", codeName(sh.code))
		}
		d.strBytes += sh.n
		off = sh.end()
	}
	if h.n > 0 {
		d.ext, d.extCount = span{start, off}, h.n
	}
	return off, nil
}

// isStringField reports whether field f holds a str.
func isStringField(f int) bool {
	return f != fPayload && f != fTimestamp && f != fDeadline && f != fExtensions
}

// readTime decodes a timestamp extension (32, 64 or 96 bit form) or nil.
func readTime(data []byte, h header) (time.Time, error) {
	if h.kind == kindNil {
		return time.Time{}, nil
	}
	if h.kind != kindExt || h.ext != -1 {
		if h.kind == kindExt {
			return time.Time{}, &scanError{h.start, fmt.Sprintf("extension type %d, want the timestamp extension (-1)", h.ext)}
		}
		return time.Time{}, &scanError{h.start, fmt.Sprintf("got %s, want timestamp extension or nil", codeName(h.code))}
	}
	b := data[h.body:h.end()]
	var sec, nsec int64
	switch len(b) {
	case 4:
		sec = int64(binary.BigEndian.Uint32(b))
	case 8:
		v := binary.BigEndian.Uint64(b)
		sec, nsec = int64(v&(1<<34-1)), int64(v>>34)
	case 12:
		nsec, sec = int64(binary.BigEndian.Uint32(b)), int64(binary.BigEndian.Uint64(b[4:]))
	default:
		return time.Time{}, &scanError{h.body, fmt.Sprintf("timestamp of %d bytes, want 4, 8 or 12", len(b))}
	}
	if nsec > 999_999_999 {
		return time.Time{}, &scanError{h.body, fmt.Sprintf("timestamp nanoseconds %d out of range", nsec)}
	}
	if sec < minUnixSeconds || sec > maxUnixSeconds {
		return time.Time{}, &scanError{h.body, fmt.Sprintf("timestamp seconds %d outside the years 1 to 9999", sec)}
	}
	return time.Unix(sec, nsec).UTC(), nil
}

// build copies what scan found into e. All strings are cut from a single
// allocation; the payload gets its own copy.
func (d *decoder) build(data []byte, e *Envelope, alias bool) error {
	var sb strings.Builder
	sb.Grow(d.strBytes)
	for _, s := range d.strs {
		sb.Write(data[s.start:s.end])
	}
	extBody := d.ext.start
	if d.extCount > 0 {
		h, _ := readHeader(data, d.ext.start) // checked by scan
		extBody = h.body
		for off := extBody; off < d.ext.end; {
			sh, _ := readHeader(data, off)
			sb.Write(data[sh.body:sh.end()])
			off = sh.end()
		}
	}
	all := sb.String()
	pos := 0
	cut := func(n int) string {
		s := all[pos : pos+n]
		pos += n
		return s
	}
	var strs [numFields]string
	for f, s := range d.strs {
		strs[f] = cut(s.end - s.start)
	}
	var ext map[string]string
	if d.extCount > 0 {
		ext = make(map[string]string, d.extCount)
		for off := extBody; off < d.ext.end; {
			kh, _ := readHeader(data, off)
			vh, _ := readHeader(data, kh.end())
			k, v := cut(kh.n), cut(vh.n)
			if _, dup := ext[k]; dup {
				return malformedf("extensions", off, "duplicate extension key %q", k)
			}
			ext[k] = v
			off = vh.end()
		}
	}
	var payload []byte
	if d.payload.end > d.payload.start {
		payload = data[d.payload.start:d.payload.end:d.payload.end]
		if !alias {
			payload = bytes.Clone(payload)
		}
	}
	*e = Envelope{
		ID:             strs[fID],
		Version:        strs[fVersion],
		Sender:         strs[fSender],
		Recipient:      strs[fRecipient],
		PayloadType:    PayloadType(strs[fPayloadType]),
		Payload:        payload,
		CorrelationID:  strs[fCorrelationID],
		TraceID:        strs[fTraceID],
		Timestamp:      d.timestamp,
		ReplyTo:        strs[fReplyTo],
		TaskID:         strs[fTaskID],
		Deadline:       d.deadline,
		IdempotencyKey: strs[fIdempotencyKey],
		Extensions:     ext,
	}
	return nil
}

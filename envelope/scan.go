package envelope

import (
	"encoding/binary"
	"fmt"
	"math"
)

// This file reads msgpack from a byte slice without the msgpack library: just
// enough to find where each value starts and ends. Every read is bounds-checked
// against the bytes that are really there, so a declared length larger than
// the input is reported as truncation instead of being trusted.

// kind classifies a msgpack value by its first byte.
type kind uint8

const (
	kindNil kind = iota + 1
	kindBool
	kindUint // positive fixint, uint 8/16/32/64
	kindInt  // negative fixint, int 8/16/32/64
	kindFloat32
	kindFloat64
	kindStr
	kindBin
	kindArray
	kindMap
	kindExt
)

// header is the decoded header of one msgpack value.
type header struct {
	kind kind
	code byte // the value's first byte
	ext  int8 // extension type, for kindExt
	// start is the offset of the first byte.
	start int
	// body is the offset of the first byte after the header.
	body int
	// n is, for str, bin and ext, the length of the data after the header; for
	// numbers the width of the number after the first byte (0 for fixints); for
	// arrays the number of elements and for maps the number of key/value pairs.
	n int
}

// end returns the offset just past a value that is not an array or a map.
func (h header) end() int { return h.body + h.n }

// scanError is a msgpack syntax problem at a byte offset.
type scanError struct {
	off int
	msg string
}

func (e *scanError) Error() string { return fmt.Sprintf("offset %d: %s", e.off, e.msg) }

func truncated(off int) error { return &scanError{off, "unexpected end of input"} }

// readHeader decodes the header of the value starting at b[off]. It checks that
// the value's data (str, bin, ext, numbers) is entirely inside b, and that an
// array or map does not declare more elements than there are bytes left (each
// element takes at least one byte).
func readHeader(b []byte, off int) (header, error) {
	if off >= len(b) {
		return header{}, truncated(off)
	}
	c := b[off]
	h := header{code: c, start: off, body: off + 1}
	switch {
	case c <= 0x7f:
		h.kind = kindUint
		return h, nil
	case c >= 0xe0:
		h.kind = kindInt
		return h, nil
	case c <= 0x8f:
		h.kind, h.n = kindMap, int(c&0x0f)
		return h, checkCount(b, h, 2)
	case c <= 0x9f:
		h.kind, h.n = kindArray, int(c&0x0f)
		return h, checkCount(b, h, 1)
	case c <= 0xbf:
		h.kind, h.n = kindStr, int(c&0x1f)
		return h, checkData(b, h)
	}
	switch c {
	case 0xc0:
		h.kind = kindNil
		return h, nil
	case 0xc2, 0xc3:
		h.kind = kindBool
		return h, nil
	case 0xc4, 0xc5, 0xc6: // bin 8/16/32
		return lengthHeader(b, h, kindBin, 1<<(c-0xc4))
	case 0xd9, 0xda, 0xdb: // str 8/16/32
		return lengthHeader(b, h, kindStr, 1<<(c-0xd9))
	case 0xc7, 0xc8, 0xc9: // ext 8/16/32: length, then type
		h, err := lengthHeader(b, h, kindExt, 1<<(c-0xc7))
		if err != nil {
			return h, err
		}
		// lengthHeader checked body+n <= len(b); the type byte comes first.
		if h.body+h.n >= len(b) {
			return h, truncated(len(b))
		}
		h.ext = int8(b[h.body])
		h.body++
		return h, nil
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1/2/4/8/16: type, data
		h.kind, h.n = kindExt, 1<<(c-0xd4)
		if h.body >= len(b) {
			return h, truncated(len(b))
		}
		h.ext = int8(b[h.body])
		h.body++
		return h, checkData(b, h)
	case 0xca:
		h.kind, h.n = kindFloat32, 4
		return h, checkData(b, h)
	case 0xcb:
		h.kind, h.n = kindFloat64, 8
		return h, checkData(b, h)
	case 0xcc, 0xcd, 0xce, 0xcf:
		h.kind, h.n = kindUint, 1<<(c-0xcc)
		return h, checkData(b, h)
	case 0xd0, 0xd1, 0xd2, 0xd3:
		h.kind, h.n = kindInt, 1<<(c-0xd0)
		return h, checkData(b, h)
	case 0xdc, 0xdd: // array 16/32
		h, err := lengthOnly(b, h, kindArray, 2<<(c-0xdc))
		if err != nil {
			return h, err
		}
		return h, checkCount(b, h, 1)
	case 0xde, 0xdf: // map 16/32
		h, err := lengthOnly(b, h, kindMap, 2<<(c-0xde))
		if err != nil {
			return h, err
		}
		return h, checkCount(b, h, 2)
	}
	return h, &scanError{off, "byte 0xc1 is never used in msgpack"}
}

// lengthOnly reads a big-endian length of width bytes that follows the first
// byte, leaving h.body after it.
func lengthOnly(b []byte, h header, k kind, width int) (header, error) {
	h.kind = k
	if len(b)-h.body < width {
		return h, truncated(len(b))
	}
	var n uint64
	switch width {
	case 1:
		n = uint64(b[h.body])
	case 2:
		n = uint64(binary.BigEndian.Uint16(b[h.body:]))
	default:
		n = uint64(binary.BigEndian.Uint32(b[h.body:]))
	}
	h.body += width
	// The caller checks n against the bytes left before using it. Where int
	// has 32 bits, clamp so that the conversion cannot turn negative.
	h.n = int(min(n, math.MaxInt))
	return h, nil
}

// lengthHeader is lengthOnly followed by checkData.
func lengthHeader(b []byte, h header, k kind, width int) (header, error) {
	h, err := lengthOnly(b, h, k, width)
	if err != nil {
		return h, err
	}
	return h, checkData(b, h)
}

// checkData reports whether the h.n data bytes after the header are in b.
func checkData(b []byte, h header) error {
	if h.n > len(b)-h.body {
		return &scanError{h.start, fmt.Sprintf("%s declares %d bytes, %d remain", codeName(h.code), h.n, max(len(b)-h.body, 0))}
	}
	return nil
}

// checkCount reports whether an array or map of h.n entries, each made of per
// values of at least one byte, can fit in what is left of b.
func checkCount(b []byte, h header, per int) error {
	if uint64(h.n)*uint64(per) > uint64(len(b)-h.body) {
		return &scanError{h.start, fmt.Sprintf("%s declares %d entries, only %d bytes remain", codeName(h.code), h.n, len(b)-h.body)}
	}
	return nil
}

// skipValue returns the offset just past the one msgpack value that starts at
// b[off]. It does not recurse: open arrays and maps are tracked in a stack of
// remaining-element counts, at most MaxPayloadDepth deep.
func skipValue(b []byte, off int) (int, error) {
	var small [16]int
	stack := small[:0] // elements left in each enclosing container
	left := 1          // elements left at the current level
	for {
		for left == 0 {
			if len(stack) == 0 {
				return off, nil
			}
			left = stack[len(stack)-1]
			stack = stack[:len(stack)-1]
		}
		left--
		if off < len(b) {
			// Fast path: values whose whole size the first byte gives.
			if size := int(fixedSize[b[off]]); size != 0 && size <= len(b)-off {
				off += size
				continue
			}
			if _, end, ok := strAt(b, off); ok {
				off = end
				continue
			}
		}
		h, err := readHeader(b, off)
		if err != nil {
			return off, err
		}
		switch h.kind {
		case kindArray, kindMap:
			if len(stack) == MaxPayloadDepth {
				return off, &scanError{off, fmt.Sprintf("arrays and maps nested deeper than %d", MaxPayloadDepth)}
			}
			n := h.n
			if h.kind == kindMap {
				n *= 2
			}
			stack = append(stack, left)
			left = n
			off = h.body
		default:
			off = h.end()
		}
	}
}

// strAt is the fast path for the strings that make up most of an envelope:
// for a fixstr or str8 at b[off] that lies entirely inside b it returns the
// bounds of its bytes and ok; for anything else ok is false and the caller
// falls back to readHeader (which also reports the errors).
func strAt(b []byte, off int) (start, end int, ok bool) {
	if off >= len(b) {
		return 0, 0, false
	}
	switch c := b[off]; {
	case c&0xe0 == 0xa0: // fixstr
		start = off + 1
		end = start + int(c&0x1f)
	case c == 0xd9 && off+1 < len(b): // str8
		start = off + 2
		end = start + int(b[off+1])
	default:
		return 0, 0, false
	}
	return start, end, end <= len(b)
}

// fixedSize gives, for each first byte, the total size of a value whose size
// that byte alone determines (fixints, nil, bools, numbers, fixext, fixstr),
// and 0 for the rest (arrays, maps, sized str/bin/ext, the unused 0xc1).
var fixedSize = func() (t [256]uint8) {
	for c := range 256 {
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
			t[c] = 1
		case c >= 0xa0 && c <= 0xbf:
			t[c] = uint8(1 + c&0x1f)
		case c >= 0xcc && c <= 0xcf: // uint 8..64
			t[c] = uint8(1 + 1<<(c-0xcc))
		case c >= 0xd0 && c <= 0xd3: // int 8..64
			t[c] = uint8(1 + 1<<(c-0xd0))
		case c == 0xca:
			t[c] = 5
		case c == 0xcb:
			t[c] = 9
		case c >= 0xd4 && c <= 0xd8: // fixext: code, type, data
			t[c] = uint8(2 + 1<<(c-0xd4))
		}
	}
	return t
}()

// codeName names the msgpack format of a first byte, for error messages.
func codeName(c byte) string {
	switch {
	case c <= 0x7f:
		return "positive fixint"
	case c <= 0x8f:
		return "fixmap"
	case c <= 0x9f:
		return "fixarray"
	case c <= 0xbf:
		return "fixstr"
	case c >= 0xe0:
		return "negative fixint"
	}
	names := [...]string{
		"nil", "never-used byte", "false", "true", "bin8", "bin16", "bin32", "ext8",
		"ext16", "ext32", "float32", "float64", "uint8", "uint16", "uint32", "uint64",
		"int8", "int16", "int32", "int64", "fixext1", "fixext2", "fixext4", "fixext8",
		"fixext16", "str8", "str16", "str32", "array16", "array32", "map16", "map32",
	}
	return fmt.Sprintf("%s (0x%02x)", names[c-0xc0], c)
}

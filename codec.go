package pgsession

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"time"
	"unsafe"
)

// Serializer encodes session values for storage. Implementations must be
// safe for concurrent use, must not keep references to the data they are
// given, and must return an error, never panic, on data they cannot decode.
//
// Encoding equal values twice should give equal bytes: the store compares
// encodings to skip writing sessions that did not change.
type Serializer interface {
	Serialize(values map[any]any) ([]byte, error)
	Deserialize(data []byte, values map[any]any) error
}

// Encoding format tags: the first byte of every encoding.
const (
	formatCompact byte = 1
	formatGob     byte = 2
)

// Value type tags of the compact format.
const (
	tagNil byte = iota + 1
	tagString
	tagBytes
	tagNilBytes
	tagFalse
	tagTrue
	tagInt
	tagInt8
	tagInt16
	tagInt32
	tagInt64
	tagUint
	tagUint8
	tagUint16
	tagUint32
	tagUint64
	tagFloat32
	tagFloat64
	tagTime
)

// DefaultSerializer is the store's default Serializer. Sessions whose keys
// are all strings and whose values are all nil, string, []byte, bool, int,
// int8 to int64, uint, uint8 to uint64, float32, float64 or time.Time use a
// compact binary encoding that keeps each value's exact Go type (a named
// type such as time.Duration is not one of these). Any other session is
// encoded with gob, as GobSerializer does, so it round-trips whatever gob
// does (types must be registered with gob.Register, as for gorilla's own
// stores; this package registers time.Time).
type DefaultSerializer struct{}

// The compact format takes time.Time values without registration, so the
// gob fallback must take them too: a session holding a time would otherwise
// fail to save as soon as it also held, say, a flash message. gorilla's
// sessions package registers []interface{} (flashes) the same way.
func init() { gob.Register(time.Time{}) }

// Serialize implements Serializer.
func (DefaultSerializer) Serialize(values map[any]any) ([]byte, error) {
	if !compactable(values) {
		return GobSerializer{}.Serialize(values)
	}
	return appendCompact(nil, values), nil
}

// appendCompact appends the compact encoding of values, which must be
// compactable, to b; with b nil, into a new slice of exactly its size:
// the bytes are what the cache keeps.
func appendCompact(b []byte, values map[any]any) []byte {
	var few [16]string
	keys := few[:0]
	size := 1 + uvarintLen(len(values))
	for k, v := range values {
		keys = append(keys, k.(string))
		size += uvarintLen(len(k.(string))) + len(k.(string)) + 1
		switch v := v.(type) {
		case string:
			size += uvarintLen(len(v)) + len(v)
		case []byte:
			size += uvarintLen(len(v)) + len(v)
		case time.Time:
			size += 1 + 16
		case float32:
			size += 4
		case nil, bool:
		default: // integers and float64
			size += 8
		}
	}
	slices.Sort(keys)
	if b == nil {
		b = make([]byte, 0, size)
	} else {
		b = slices.Grow(b, size)
	}
	b = append(b, formatCompact)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendString(b, k)
		b = appendValue(b, values[k])
	}
	return b
}

// Deserialize implements Serializer. It decodes both encodings.
func (d DefaultSerializer) Deserialize(data []byte, values map[any]any) error {
	return d.deserialize(data, values, false)
}

// deserialize decodes data into values. With shared, the strings it makes
// share data's memory instead of copying it: only for data that is never
// modified, such as a cache entry's.
func (DefaultSerializer) deserialize(data []byte, values map[any]any, shared bool) error {
	if len(data) == 0 {
		return fmt.Errorf("%w: empty", ErrCorrupt)
	}
	switch data[0] {
	case formatCompact:
		return decodeCompact(data[1:], values, shared)
	case formatGob:
		return GobSerializer{}.Deserialize(data, values)
	}
	return fmt.Errorf("%w: unknown format %d", ErrCorrupt, data[0])
}

// compactable reports whether every key is a string and every value has a
// type the compact format keeps exactly.
func compactable(values map[any]any) bool {
	for k, v := range values {
		if _, ok := k.(string); !ok {
			return false
		}
		switch v.(type) {
		case nil, string, []byte, bool, int, int8, int16, int32, int64,
			uint, uint8, uint16, uint32, uint64, float32, float64, time.Time:
		default:
			return false
		}
	}
	return true
}

func uvarintLen(n int) int {
	l := 1
	for ; n >= 0x80; n >>= 7 {
		l++
	}
	return l
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, tagNil)
	case string:
		return appendString(append(b, tagString), v)
	case []byte:
		if v == nil {
			return append(b, tagNilBytes)
		}
		b = binary.AppendUvarint(append(b, tagBytes), uint64(len(v)))
		return append(b, v...)
	case bool:
		if v {
			return append(b, tagTrue)
		}
		return append(b, tagFalse)
	case int:
		return binary.AppendVarint(append(b, tagInt), int64(v))
	case int8:
		return binary.AppendVarint(append(b, tagInt8), int64(v))
	case int16:
		return binary.AppendVarint(append(b, tagInt16), int64(v))
	case int32:
		return binary.AppendVarint(append(b, tagInt32), int64(v))
	case int64:
		return binary.AppendVarint(append(b, tagInt64), v)
	case uint:
		return binary.AppendUvarint(append(b, tagUint), uint64(v))
	case uint8:
		return binary.AppendUvarint(append(b, tagUint8), uint64(v))
	case uint16:
		return binary.AppendUvarint(append(b, tagUint16), uint64(v))
	case uint32:
		return binary.AppendUvarint(append(b, tagUint32), uint64(v))
	case uint64:
		return binary.AppendUvarint(append(b, tagUint64), v)
	case float32:
		return binary.LittleEndian.AppendUint32(append(b, tagFloat32), math.Float32bits(v))
	case float64:
		return binary.LittleEndian.AppendUint64(append(b, tagFloat64), math.Float64bits(v))
	case time.Time:
		if v.Nanosecond() >= 1e9 {
			// Only UnmarshalBinary (so GobDecode) of corrupt data makes
			// such a Time. Write the same instant normalized, which
			// decodeTime accepts: what Serialize writes must decode.
			v = time.Unix(v.Unix(), int64(v.Nanosecond())).In(v.Location())
		}
		// MarshalBinary fails only for zone offsets it cannot write (whole
		// minutes out of int16 range, or from -119s to -61s, whose minutes
		// part would read as the UTC marker); fall back to the same instant
		// in UTC then, which gob (also MarshalBinary) could not keep either.
		t, err := v.MarshalBinary()
		if err != nil {
			t, _ = v.UTC().MarshalBinary()
		}
		b = binary.AppendUvarint(append(b, tagTime), uint64(len(t)))
		return append(b, t...)
	}
	panic("pgsession: appendValue called with a type compactable rejects") // unreachable
}

// reader decodes the compact format with bounds checks everywhere.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: bad %s", ErrCorrupt, what)
	}
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.fail("length")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail("length")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) fixed(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.fail("length")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// signed reads a varint that must fit in bits bits.
func (r *reader) signed(bits int) int64 {
	v := r.varint()
	if bits < 64 && (v < -1<<(bits-1) || v >= 1<<(bits-1)) {
		r.fail("integer range")
		return 0
	}
	return v
}

// unsigned reads a uvarint that must fit in bits bits.
func (r *reader) unsigned(bits int) uint64 {
	v := r.uvarint()
	if bits < 64 && v >= 1<<bits {
		r.fail("integer range")
		return 0
	}
	return v
}

// stringBoxes puts strings in interfaces without an allocation each: an
// interface holding a string points at a string header, and these point
// into one slice allocated for all the strings of a session. A nil
// stringBoxes boxes as usual.
type stringBoxes []string

// box returns s in an interface.
func (b *stringBoxes) box(s string) any {
	if cap(*b) == len(*b) {
		return s // converted, and allocated, as usual
	}
	*b = append(*b, s)
	hdr := &(*b)[len(*b)-1]
	var v any = ""
	(*eface)(unsafe.Pointer(&v)).data = unsafe.Pointer(hdr)
	return v
}

// eface is the layout of an interface{} value.
type eface struct{ typ, data unsafe.Pointer }

func decodeCompact(data []byte, values map[any]any, shared bool) error {
	r := &reader{b: data}
	str := func(b []byte) string { return string(b) }
	if shared {
		str = func(b []byte) string {
			if len(b) == 0 {
				return ""
			}
			return unsafe.String(&b[0], len(b))
		}
	}
	n := r.uvarint()
	// Every entry takes at least two bytes: this bounds n by the input, so
	// a corrupt count cannot make us loop or allocate without limit.
	if r.err == nil && n > uint64(len(r.b))/2 {
		r.fail("entry count")
	}
	var boxes stringBoxes
	if shared && r.err == nil {
		boxes = make(stringBoxes, 0, 2*n)
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		k := boxes.box(str(r.bytes()))
		var v any
		switch tag := r.byte(); tag {
		case tagNil:
			v = nil
		case tagString:
			v = boxes.box(str(r.bytes()))
		case tagBytes:
			v = bytes.Clone(r.bytes())
			if v.([]byte) == nil {
				v = []byte{}
			}
		case tagNilBytes:
			v = []byte(nil)
		case tagFalse:
			v = false
		case tagTrue:
			v = true
		case tagInt:
			v = int(r.signed(strconvIntSize))
		case tagInt8:
			v = int8(r.signed(8))
		case tagInt16:
			v = int16(r.signed(16))
		case tagInt32:
			v = int32(r.signed(32))
		case tagInt64:
			v = r.signed(64)
		case tagUint:
			v = uint(r.unsigned(strconvIntSize))
		case tagUint8:
			v = uint8(r.unsigned(8))
		case tagUint16:
			v = uint16(r.unsigned(16))
		case tagUint32:
			v = uint32(r.unsigned(32))
		case tagUint64:
			v = r.unsigned(64)
		case tagFloat32:
			if b := r.fixed(4); b != nil {
				v = math.Float32frombits(binary.LittleEndian.Uint32(b))
			}
		case tagFloat64:
			if b := r.fixed(8); b != nil {
				v = math.Float64frombits(binary.LittleEndian.Uint64(b))
			}
		case tagTime:
			if b := r.bytes(); r.err == nil {
				t, err := decodeTime(b)
				if err != nil {
					return fmt.Errorf("%w: time value: %v", ErrCorrupt, err)
				}
				v = t
			}
		default:
			if r.err == nil {
				return fmt.Errorf("%w: unknown value tag %d", ErrCorrupt, tag)
			}
		}
		if r.err != nil {
			break
		}
		values[k] = v
	}
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(r.b))
	}
	return nil
}

const strconvIntSize = 32 << (^uint(0) >> 63)

// decodeTime decodes what time.Time.MarshalBinary wrote. It does not call
// UnmarshalBinary, which (as of Go 1.26) reads the seconds byte of a
// version 2 zone offset as unsigned, so that a negative offset that is not
// whole minutes, such as the LMT of American zones (-4:56:02 in New York),
// comes back wrong (golang.org/issue/78528); and which accepts nanoseconds
// outside [0, 1e9) and offsets MarshalBinary cannot write, giving Times that
// do not encode back to themselves. It rejects those instead, and picks the
// Location as UnmarshalBinary does: UTC, Local if its offset at that instant
// is the one recorded, else an unnamed fixed zone.
func decodeTime(b []byte) (time.Time, error) {
	if len(b) == 0 {
		return time.Time{}, errors.New("no data")
	}
	version, want := b[0], 15
	switch version {
	case 1:
	case 2:
		want = 16
	default:
		return time.Time{}, fmt.Errorf("unsupported version %d", version)
	}
	if len(b) != want {
		return time.Time{}, fmt.Errorf("length %d, want %d", len(b), want)
	}
	sec := int64(binary.BigEndian.Uint64(b[1:]))
	nsec := int32(binary.BigEndian.Uint32(b[9:]))
	if nsec < 0 || nsec >= 1e9 {
		return time.Time{}, fmt.Errorf("nanoseconds %d out of range", nsec)
	}
	offset := int(int16(binary.BigEndian.Uint16(b[13:]))) * 60
	if version == 2 {
		offset += int(int8(b[15]))
	}
	if m := offset / 60; offset != -60 && (m == -1 || m < math.MinInt16 || m > math.MaxInt16) {
		return time.Time{}, fmt.Errorf("zone offset %ds", offset)
	}
	// sec counts from January 1, year 1; time.Unix adds back what we take
	// off (wrapping around at the extremes, as the time package does).
	const unixToInternal = (1969*365 + 1969/4 - 1969/100 + 1969/400) * 24 * 60 * 60
	t := time.Unix(sec-unixToInternal, int64(nsec)) // in Local
	if offset == -60 {
		return t.UTC(), nil
	}
	if _, local := t.Zone(); local == offset {
		return t, nil
	}
	return t.In(time.FixedZone("", offset)), nil
}

// GobSerializer encodes session values with encoding/gob, like gorilla's
// own stores, with entries in a stable order so that equal values encode to
// equal bytes. Custom types must be registered with gob.Register.
type GobSerializer struct{}

// Serialize implements Serializer.
func (GobSerializer) Serialize(values map[any]any) ([]byte, error) {
	type kv struct {
		sortKey, tieKey string
		k, v            any
	}
	entries := make([]kv, 0, len(values))
	for k, v := range values {
		e := kv{k: k, v: v}
		if sk, ok := k.(string); ok {
			e.sortKey = "\x00" + sk // string keys first, then others by type and value
		} else {
			e.sortKey = fmt.Sprintf("%T\x00%v", k, k)
			// Distinct keys can print alike that way (%T names a package by
			// its name, not its path; %v calls String methods and does not
			// quote strings inside arrays or structs), and equal sort keys
			// would leave their order to map iteration: break such ties by
			// full type name and Go syntax.
			e.tieKey = typeName(reflect.TypeOf(k)) + "\x00" + fmt.Sprintf("%#v", k)
		}
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b kv) int {
		return cmp.Or(strings.Compare(a.sortKey, b.sortKey), strings.Compare(a.tieKey, b.tieKey))
	})
	pairs := make([]any, 0, 2*len(entries))
	for _, e := range entries {
		pairs = append(pairs, e.k, e.v)
	}
	var buf bytes.Buffer
	buf.WriteByte(formatGob)
	if err := gob.NewEncoder(&buf).Encode(pairs); err != nil {
		return nil, fmt.Errorf("gob encode session values: %w", err)
	}
	return buf.Bytes(), nil
}

// Deserialize implements Serializer.
func (GobSerializer) Deserialize(data []byte, values map[any]any) (err error) {
	if len(data) == 0 || data[0] != formatGob {
		return fmt.Errorf("%w: not a gob encoding", ErrCorrupt)
	}
	// gob and the map assignment below (a key whose dynamic type holds a
	// slice or map) can panic on hostile input: a corrupt row must be an
	// error, never a crash.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, p)
		}
	}()
	var pairs []any
	r := bytes.NewReader(data[1:]) // an io.ByteReader: gob reads no further than it needs
	if err := gob.NewDecoder(r).Decode(&pairs); err != nil {
		return fmt.Errorf("%w: gob: %v", ErrCorrupt, err)
	}
	if r.Len() != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, r.Len())
	}
	if len(pairs)%2 != 0 {
		return fmt.Errorf("%w: odd number of gob items", ErrCorrupt)
	}
	for i := 0; i < len(pairs); i += 2 {
		k := pairs[i]
		// A nil key is a valid map key that Serialize writes; a key of a
		// type that is not comparable would make the assignment panic.
		if k != nil && !reflect.TypeOf(k).Comparable() {
			return fmt.Errorf("%w: key of type %T cannot be a map key", ErrCorrupt, k)
		}
		values[k] = pairs[i+1]
	}
	return nil
}

// typeName names t with its package path, where %T has only the package's
// name.
func typeName(t reflect.Type) string {
	if t == nil {
		return "<nil>"
	}
	if t.Name() != "" && t.PkgPath() != "" {
		return t.PkgPath() + "." + t.Name()
	}
	return t.String()
}

package worker

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// object is a JSON object read member by member, in order, so that writing
// it back with a few members changed keeps every other byte as Ollama wrote
// it: the splice of a continued stream (splice.go) changes ids, indexes and
// counts in events a client compares with what it already has.
type object []member

type member struct {
	key string
	val json.RawMessage
}

// parseObject reads b as one JSON object; ok is false for anything else.
func parseObject(b []byte) (o object, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, false
		}
		key, isKey := t.(string)
		var val json.RawMessage
		if !isKey || dec.Decode(&val) != nil {
			return nil, false
		}
		o = append(o, member{key, val})
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, false
	}
	if _, err := dec.Token(); err == nil {
		return nil, false // Something after the object.
	}
	return o, true
}

// get returns the value of member key, nil when absent.
func (o object) get(key string) json.RawMessage {
	for _, m := range o {
		if m.key == key {
			return m.val
		}
	}
	return nil
}

// has reports whether member key is present.
func (o object) has(key string) bool { return o.get(key) != nil }

// set replaces member key's value where it stands, or appends the member.
func (o *object) set(key string, val json.RawMessage) {
	for i := range *o {
		if (*o)[i].key == key {
			(*o)[i].val = val
			return
		}
	}
	*o = append(*o, member{key, val})
}

// setAny sets member key to v, encoded.
func (o *object) setAny(key string, v any) {
	b, err := json.Marshal(v)
	if err == nil {
		o.set(key, b)
	}
}

// del removes member key.
func (o *object) del(key string) {
	for i := range *o {
		if (*o)[i].key == key {
			*o = append((*o)[:i], (*o)[i+1:]...)
			return
		}
	}
}

// str returns member key as a string, "" when it is absent or not one.
func (o object) str(key string) string {
	var s string
	_ = json.Unmarshal(o.get(key), &s) // Absent or not a string: "".
	return s
}

// int returns member key as an integer; ok is false when it is absent or
// not one.
func (o object) int(key string) (int64, bool) {
	n, err := strconv.ParseInt(string(o.get(key)), 10, 64)
	return n, err == nil
}

// addInt adds d to the integer member key, if it has one.
func (o *object) addInt(key string, d int64) {
	if n, ok := o.int(key); ok {
		o.set(key, strconv.AppendInt(nil, n+d, 10))
	}
}

// addCount adds d to the integer member key; absent, it becomes d, placed
// after the first of after that the object has (last if none), as Ollama
// orders the members it leaves out when zero.
func (o *object) addCount(key string, d int64, after ...string) {
	if o.has(key) || d == 0 {
		o.addInt(key, d)
		return
	}
	m := member{key, strconv.AppendInt(nil, d, 10)}
	for _, a := range after {
		for i := range *o {
			if (*o)[i].key == a {
				*o = append((*o)[:i+1], append([]member{m}, (*o)[i+1:]...)...)
				return
			}
		}
	}
	*o = append(*o, m)
}

// sub returns the object member key, parsed; ok is false when it is not one.
func (o object) sub(key string) (object, bool) {
	v := o.get(key)
	if v == nil {
		return nil, false
	}
	return parseObject(v)
}

// bytes encodes the object.
func (o object) bytes() []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.key) // A string always marshals.
		b.Write(k)
		b.WriteByte(':')
		b.Write(m.val)
	}
	b.WriteByte('}')
	return b.Bytes()
}

package job

import "encoding/json"

// topKeys walks the first JSON value of b as encoding/json's Decoder does
// with Token and Decode: if it is an object, it calls key with each
// top-level key, decoded, before it reads that key's value, and stops when
// key returns false, at the object's end, or at the first byte the
// Decoder would refuse. A value is checked, not decoded: an 8 MiB base64
// image costs a pass over its bytes, not the Decoder's two passes and a
// copy.
func topKeys(b []byte, key func(string) bool) {
	s := scanner{b: b}
	if s.space(); !s.eat('{') {
		return
	}
	if s.space(); s.eat('}') {
		return
	}
	for {
		k, ok := s.key()
		if !ok || !key(k) {
			return
		}
		if s.space(); !s.eat(':') {
			return
		}
		if s.space(); !s.value(1) {
			return
		}
		s.space()
		if !s.eat(',') {
			return // '}', or a byte the Decoder refuses.
		}
		s.space()
	}
}

// maxDepth is encoding/json's bound on the nesting of one value.
const maxDepth = 10000

// scanner checks JSON as encoding/json's scanner does.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// key reads an object key: a string, decoded.
func (s *scanner) key() (string, bool) {
	start := s.i
	escaped, ok := s.str()
	if !ok {
		return "", false
	}
	raw := s.b[start+1 : s.i-1]
	if !escaped {
		return string(raw), true // Invalid UTF-8 can only fail to match a name, as U+FFFD does.
	}
	var k string
	if json.Unmarshal(s.b[start:s.i], &k) != nil {
		return "", false
	}
	return k, true
}

// plain marks the bytes a string may hold as they are.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str reads a string and tells whether it has escapes.
func (s *scanner) str() (escaped, ok bool) {
	if !s.eat('"') {
		return false, false
	}
	for {
		for s.i < len(s.b) && plain[s.b[s.i]] {
			s.i++
		}
		if s.i == len(s.b) {
			return escaped, false
		}
		switch s.b[s.i] {
		case '"':
			s.i++
			return escaped, true
		case '\\':
			escaped = true
			s.i++
			if s.i == len(s.b) {
				return escaped, false
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				s.i++
				for range 4 {
					if s.i == len(s.b) || !isHex(s.b[s.i]) {
						return escaped, false
					}
					s.i++
				}
			default:
				return escaped, false
			}
		default:
			return escaped, false // A control character.
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// value reads any value at nesting depth (1 for an object or array that is
// the value itself).
func (s *scanner) value(depth int) bool {
	if s.i == len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '{':
		return s.object(depth)
	case c == '[':
		return s.array(depth)
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || isDigit(c):
		return s.number()
	}
	return false
}

func (s *scanner) object(depth int) bool {
	if depth > maxDepth {
		return false
	}
	s.i++ // '{'
	if s.space(); s.eat('}') {
		return true
	}
	for {
		if _, ok := s.str(); !ok {
			return false
		}
		if s.space(); !s.eat(':') {
			return false
		}
		if s.space(); !s.value(depth + 1) {
			return false
		}
		s.space()
		switch {
		case s.eat('}'):
			return true
		case !s.eat(','):
			return false
		}
		s.space()
	}
}

func (s *scanner) array(depth int) bool {
	if depth > maxDepth {
		return false
	}
	s.i++ // '['
	if s.space(); s.eat(']') {
		return true
	}
	for {
		if !s.value(depth + 1) {
			return false
		}
		s.space()
		switch {
		case s.eat(']'):
			return true
		case !s.eat(','):
			return false
		}
		s.space()
	}
}

func (s *scanner) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() bool {
	s.eat('-')
	switch {
	case s.eat('0'):
	case s.i < len(s.b) && isDigit(s.b[s.i]):
		s.digits()
	default:
		return false
	}
	if s.eat('.') && !s.digits() {
		return false
	}
	if s.eat('e') || s.eat('E') {
		if !s.eat('+') {
			s.eat('-')
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

// digits reads one or more digits.
func (s *scanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && isDigit(s.b[s.i]) {
		s.i++
	}
	return s.i > start
}

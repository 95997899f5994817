package job

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func FuzzParseReply(f *testing.F) {
	f.Add("data", "j1", "1", "1", "200", "application/x-ndjson", "", "", "", "", []byte("{}\n"), "", "")
	f.Add("start", "j1", "2", "1", "", "", "w1", "5", "", "", []byte(nil), "", "")
	f.Add("error", "j1", "1", "1073741824", "502", "", "", "", "gone", "", []byte(`{"error":"gone"}`), "", "")
	f.Add("error", "j1", "1", "3", "9999", "", "", "", "x", "", []byte(nil), "", "")
	f.Add("done", "j", "-1", "0", "abc", "", "", "-3", "", "0", []byte(nil), "", "")
	f.Add("done", "j1", "1", "4", "", "", "w1", "", "", "42", []byte(nil), "", "")
	f.Add("done", "j1", "1", "4", "", "", "w1", "", "", "9223372036854775808", []byte(nil), "", "")
	f.Add("queued", "j1", "0", "0", "", "", "w1", "", "", "", []byte(nil), "3", "4200")
	f.Add("queued", "j1", "0", "0", "200", "text/plain", "w1", "2", "x", "7", []byte(nil), "1", "")
	f.Add("queued", "j1", "1", "0", "", "", "", "", "", "", []byte(nil), "0", "-5")
	f.Add("queued", "j1", "0", "0", "", "", "", "", "", "", []byte(`{"custom_id":"a"}`), "", "99999999999")
	f.Fuzz(func(t *testing.T, kind, id, attempt, seq, status, ct, worker, resumed, msg, record string, data []byte, position, eta string) {
		h := map[string][]string{HeaderKind: {kind}, HeaderJob: {id}, HeaderAttempt: {attempt}, HeaderSeq: {seq}}
		for k, v := range map[string]string{HeaderStatus: status, HeaderContentType: ct, HeaderWorker: worker, HeaderResumed: resumed, HeaderError: msg,
			HeaderRecord: record, HeaderPosition: position, HeaderETA: eta} {
			if v != "" {
				h[k] = []string{v}
			}
		}
		r, err := ParseReply(h, data)
		if err != nil {
			return
		}
		switch {
		case r.Kind == KindQueued && (r.Attempt != 0 || r.Seq != 0 || r.Status != 0 || r.Ack != "" || r.Position < 0 || r.Position > MaxPosition || r.ETA < 0 || r.ETA > MaxETA):
			t.Fatalf("queued reply out of range: %+v", r)
		case r.Kind != KindQueued && (r.Attempt < 1 || r.Attempt > SeqFinal || r.Seq < 1 || r.Seq > SeqFinal || r.Resumed < 0):
			t.Fatalf("out of range: %+v", r)
		case r.Status != 0 && (r.Status < 100 || r.Status > 599):
			t.Fatalf("status %d accepted", r.Status)
		}
		again, err := ParseReply(r.Header(), r.Data)
		if err != nil {
			t.Fatalf("re-encoded reply does not parse: %v (%+v)", err, r)
		}
		if !reflect.DeepEqual(again, r) {
			t.Fatalf("round trip: %+v != %+v", again, r)
		}
	})
}

func FuzzSubjects(f *testing.F) {
	f.Add("ollamaq.reply.d1.job1", "d1", "job1")
	f.Add("ollamaq.reply.batch.b1.job1", "batch", "x")
	f.Add("ollamaq.cancel.d1.job1", "a*", "b")
	f.Add("ollamaq.resume..x", "", "")
	f.Fuzz(func(t *testing.T, subject, requester, id string) {
		for _, p := range []struct {
			name  string
			parse func(string) (string, string, error)
			build func(string, string) string
		}{
			{"reply", ParseReplySubject, ReplySubject},
			{"cancel", ParseCancelSubject, CancelSubject},
			{"resume", ParseResumeSubject, ResumeSubject},
		} {
			if r, i, err := p.parse(subject); err == nil {
				if !ValidToken(r) || !ValidToken(i) || !strings.HasSuffix(subject, "."+i) {
					t.Fatalf("%s: %q parsed as %q, %q", p.name, subject, r, i)
				}
			}
			if !ValidToken(requester) || !ValidToken(id) {
				continue
			}
			r, i, err := p.parse(p.build(requester, id))
			if err != nil || r != requester || i != id {
				t.Fatalf("%s round trip of %q, %q: %q, %q, %v", p.name, requester, id, r, i, err)
			}
		}
		if m, c, r, err := ParseJobSubject(subject); err == nil && strings.HasPrefix(subject, JobsPrefix+".") {
			built := JobSubject(m, c, r)
			if r == "*" {
				built = JobFilter(m, c)
			}
			if built != subject {
				t.Fatalf("job subject %q parsed as %q %q %q, which builds %q", subject, m, c, r, built)
			}
		}
	})
}

func FuzzFrames(f *testing.F) {
	f.Add("application/x-ndjson", []byte("{\"a\":1}\n{\"b\":2}"))
	f.Add("text/event-stream", []byte("data: {\"a\":1}\n\ndata: [DONE]\n\n"))
	f.Add("text/event-stream", []byte("event: x\r\ndata: y\r\n\r\n: c\n\n"))
	f.Add("application/json", []byte(`{"x":1}`))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		var all []byte
		err := Frames(bytes.NewReader(body), ct, func(b []byte) error {
			if len(b) == 0 {
				t.Fatal("empty frame")
			}
			_ = Payload(b)
			all = append(all, b...)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(all, body) {
			t.Fatalf("frames do not add up to the body: %q != %q", all, body)
		}
		if !bytes.ContainsAny(body, "\r\n") {
			if got := Payload(SSEEvent(body)); !bytes.Equal(got, body) {
				t.Fatalf("Payload(SSEEvent(%q)) = %q", body, got)
			}
		}
	})
}

// FuzzCheckModelKeys: a body CheckModelKeys lets through names the same
// model after the worker re-encodes it (as it does to ask for usage or to
// continue a stream), so the model a key was checked for is the one that runs.
func FuzzCheckModelKeys(f *testing.F) {
	for _, s := range []string{`{"model":"a","Model":"b"}`, `{"model":"a"}`, `{"MoDeL":"x","stream":true}`, `[]`, `{"name":"a"}`, `{"nAme":"&"}`, `{"model":"<a>"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if CheckModelKeys(b) != nil {
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil {
			return
		}
		re, err := json.Marshal(m)
		if err != nil {
			return
		}
		// Compare decoded values: json.Marshal re-escapes strings ("&"
		// becomes "\u0026"), which names the same model.
		var before, after struct{ Model, Name any }
		if json.Unmarshal(b, &before) != nil || json.Unmarshal(re, &after) != nil {
			return
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("%s names model %v / name %v, re-encoded %s names %v / %v", b, before.Model, before.Name, re, after.Model, after.Name)
		}
	})
}

// checkModelKeysDecoder is what CheckModelKeys does, the slow way: with
// encoding/json's Decoder, token by token.
func checkModelKeysDecoder(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var models, names int
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		key, _ := t.(string)
		switch {
		case strings.EqualFold(key, "model"):
			models++
		case strings.EqualFold(key, "name"):
			names++
		}
		if models > 1 || names > 1 {
			return fmt.Errorf("%w (%q appears twice, in some case)", ErrAmbiguousModel, key)
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}

// FuzzCheckModelKeysAsDecoder: CheckModelKeys's own scanner judges every
// body as encoding/json's Decoder does, invalid ones included, error text
// and all.
func FuzzCheckModelKeysAsDecoder(f *testing.F) {
	for _, s := range []string{`{"model":"a","Model":"b"}`, `{"model":"a"}`, `{"MoDeL":"x","stream":true}`, `[]`,
		`{"name":"a"}`, `{"a":1x,"model":1,"model":2}`, `{"a":01,"model":1,"model":2}`, `{"a":"\u00zz","model":1,"model":2}`,
		`{"mod\u0065l":1,"model":2}`, `{"a":[1,2,{"b":null}],"model":-1.5e+3,"MODEL":true}`, `{"a":"` + "\x01" + `","model":1,"model":2}`,
		`{"model":1,"model"`, ` {"x":{},"name":[],"NAME":{}}`, `{"a":tru,"model":1,"model":2}`, `{"a":1,}`, `{"a" 1,"model":1,"model":2}`,
		`{"a":"\xff","model":1,"model":2}`, `{"\xff":1,"name":1,"name":2}`, `{"a":1.,"model":1,"model":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, want := CheckModelKeys(b), checkModelKeysDecoder(b)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("CheckModelKeys(%q) = %v, the Decoder says %v", b, got, want)
		}
	})
}

// TestCheckModelKeysDepth: at encoding/json's nesting bound and one past it,
// CheckModelKeys judges as the Decoder does.
func TestCheckModelKeysDepth(t *testing.T) {
	for _, depth := range []int{9999, 10000, 10001} {
		for _, open := range []string{"[", `{"a":`} {
			closing := map[string]string{"[": "]", `{"a":`: "}"}[open]
			b := []byte(`{"x":` + strings.Repeat(open, depth) + "1" + strings.Repeat(closing, depth) + `,"model":1,"MODEL":2}`)
			if got, want := CheckModelKeys(b), checkModelKeysDecoder(b); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("depth %d of %s: CheckModelKeys says %v, the Decoder %v", depth, open, got, want)
			}
		}
	}
}

func BenchmarkCheckModelKeys(b *testing.B) {
	body := []byte(`{"model":"llava","messages":[{"role":"user","content":"hi","images":["` + strings.Repeat("QUJD", 2<<20) + `"]}]}`)
	for _, c := range []struct {
		name  string
		check func([]byte) error
	}{{"scanner", CheckModelKeys}, {"decoder", checkModelKeysDecoder}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if err := c.check(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package envelope_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/jetagent/jetagent/envelope"
)

// A client builds a request, encodes it for NATS, and the agent parses it.
func Example() {
	req, err := envelope.New("client-1", "summarizer", envelope.TaskRequest,
		map[string]any{"text": "The quick brown fox", "max_words": 3})
	if err != nil {
		panic(err)
	}
	data, err := envelope.Marshal(req) // the NATS message body
	if err != nil {
		panic(err)
	}

	got, err := envelope.Parse(data, envelope.Limits{}) // size, decode, validate
	if err != nil {
		panic(err)
	}
	fmt.Println(got.Sender, "->", got.Recipient, got.PayloadType)
	fmt.Println("same id:", got.ID == req.ID)
	// Output:
	// client-1 -> summarizer task.request
	// same id: true
}

func ExampleEnvelope_NewReply() {
	req, _ := envelope.New("client-1", "summarizer", envelope.TaskRequest, "long text")
	reply, err := req.NewReply(envelope.TaskResponse, "short text")
	if err != nil {
		panic(err)
	}
	fmt.Println(reply.Sender, "->", reply.Recipient, reply.PayloadType)
	fmt.Println("answers the request:", reply.CorrelationID == req.ID)
	fmt.Println("same trace:", reply.TraceID == req.TraceID)
	// A redelivered request gets a reply with the same id, which JetStream
	// then drops as a duplicate.
	again, _ := req.NewReply(envelope.TaskResponse, "short text")
	fmt.Println("same reply id:", again.ID == reply.ID)
	// Output:
	// summarizer -> client-1 task.response
	// answers the request: true
	// same trace: true
	// same reply id: true
}

func ExampleEnvelope_DecodePayload() {
	type summarize struct {
		Text     string `msgpack:"text"`
		MaxWords int    `msgpack:"max_words"`
	}
	e, _ := envelope.New("client-1", "summarizer", envelope.TaskRequest,
		summarize{Text: "The quick brown fox", MaxWords: 3})

	var task summarize // into the handler's own type
	if err := e.DecodePayload(&task); err != nil {
		panic(err)
	}
	fmt.Printf("%+v\n", task)

	var generic map[string]any // or generically: integers come back as int64
	if err := e.DecodePayload(&generic); err != nil {
		panic(err)
	}
	fmt.Printf("%v %T\n", generic["max_words"], generic["max_words"])
	// Output:
	// {Text:The quick brown fox MaxWords:3}
	// 3 int64
}

func ExampleEnvelope_Validate() {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	limits := envelope.Limits{Now: func() time.Time { return now }}

	e := &envelope.Envelope{
		ID: envelope.NewID(), Version: envelope.WireVersion, Recipient: "summarizer",
		PayloadType: envelope.TaskRequest, Timestamp: now,
	}
	err := e.Validate(limits)
	fmt.Println(err)
	fmt.Println("missing field:", errors.Is(err, envelope.ErrMissingField))
	var fe *envelope.FieldError
	if errors.As(err, &fe) {
		fmt.Println("field:", fe.Field)
	}

	e.Sender = "client-1"
	e.Deadline = now.Add(-30 * time.Second)
	err = e.Validate(limits)
	fmt.Println("expired:", errors.Is(err, envelope.ErrExpired))

	e.Deadline = time.Time{}
	e.Timestamp = now.Add(10 * time.Minute) // sender's clock runs ahead
	err = e.Validate(limits)
	fmt.Println(err)
	// Output:
	// envelope: missing field: sender
	// missing field: true
	// field: sender
	// expired: true
	// envelope: timestamp outside the clock-skew window: timestamp: 10m0s ahead of the receive time 2025-06-01T12:00:00Z (limit 5m0s)
}

func ExampleEnvelope_MarshalJSON() {
	payload, _ := envelope.EncodePayload(map[string]any{"text": "hello", "max_words": 5})
	e := &envelope.Envelope{
		ID:          "01JWNNSVG0PVNVBFMY4A50SXM1",
		Version:     envelope.WireVersion,
		Sender:      "client-1",
		Recipient:   "summarizer",
		PayloadType: envelope.TaskRequest,
		Payload:     payload,
		Timestamp:   time.Date(2025, 6, 1, 12, 0, 0, 500_000_000, time.UTC),
		Extensions:  map[string]string{"tenant": "acme"},
	}
	j, err := e.MarshalJSON()
	if err != nil {
		panic(err)
	}
	fmt.Println(string(j))

	var back envelope.Envelope
	if err := back.UnmarshalJSON(j); err != nil {
		panic(err)
	}
	fmt.Println(back.Timestamp.Equal(e.Timestamp), back.Extensions["tenant"])
	// Output:
	// {"id":"01JWNNSVG0PVNVBFMY4A50SXM1","version":"1","sender":"client-1","recipient":"summarizer","payload_type":"task.request","payload":{"max_words":5,"text":"hello"},"timestamp":"2025-06-01T12:00:00.5Z","extensions":{"tenant":"acme"}}
	// true acme
}

func ExampleParse() {
	_, err := envelope.Parse(make([]byte, 2<<20), envelope.Limits{})
	fmt.Println(errors.Is(err, envelope.ErrTooLarge), err)

	_, err = envelope.Parse([]byte{0x93, 0x01, 0x02, 0x03}, envelope.Limits{})
	fmt.Println(errors.Is(err, envelope.ErrMalformed), err)
	// Output:
	// true envelope: too large: 2097152 bytes, limit 1048576
	// true envelope: malformed: offset 0: an envelope is a msgpack map, got fixarray
}

func ExampleAppendMarshal() {
	e, _ := envelope.New("client-1", "summarizer", envelope.TaskCancel, nil)
	buf := make([]byte, 0, 512) // reused across messages on a hot path
	for range 3 {
		var err error
		buf, err = envelope.AppendMarshal(buf[:0], e)
		if err != nil {
			panic(err)
		}
	}
	var back envelope.Envelope
	fmt.Println(envelope.Unmarshal(buf, &back), back.PayloadType)
	// Output:
	// <nil> task.cancel
}

func ExamplePayloadJSON() {
	p, _ := envelope.EncodePayload(map[string]any{"ok": true, "bytes": []byte("hi"), "n": []int{1, -2}})
	j, _ := envelope.PayloadJSON(p)
	fmt.Println(string(j))
	// Output:
	// {"bytes":"aGk=","n":[1,-2],"ok":true}
}

func ExampleDeriveID() {
	fmt.Println(envelope.DeriveID("01JWNNSVG0PVNVBFMY4A50SXM1", "reply"))
	// Output:
	// 01JWNNSVG0HPSWBFZXNCGN1HY4
}

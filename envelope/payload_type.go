package envelope

// PayloadType names what the payload of an envelope is. It is used as the last
// token of NATS subjects, so Valid restricts it to subject-safe characters.
type PayloadType string

// The standard payload types. Agents may define their own as long as they are
// Valid; the runtime rejects types it has no handler for with ErrUnknownType.
const (
	TaskRequest  PayloadType = "task.request"
	TaskResponse PayloadType = "task.response"
	TaskUpdate   PayloadType = "task.update"
	TaskCancel   PayloadType = "task.cancel"
	StateQuery   PayloadType = "state.query"
	StateRestore PayloadType = "state.restore"
	MessageSend  PayloadType = "message.send"
)

// maxPayloadTypeLen is the longest payload type Valid accepts, in bytes.
const maxPayloadTypeLen = 64

// Valid reports whether t can be used as NATS subject tokens: 1 to 64 bytes of
// tokens made of [a-z0-9_-], separated by single dots, with no empty token
// (so no leading, trailing or doubled dot).
func (t PayloadType) Valid() bool {
	if len(t) == 0 || len(t) > maxPayloadTypeLen {
		return false
	}
	tokenLen := 0
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case c == '.':
			if tokenLen == 0 {
				return false
			}
			tokenLen = 0
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '_', c == '-':
			tokenLen++
		default:
			return false
		}
	}
	return tokenLen > 0
}

// Standard reports whether t is one of the seven payload types defined by this
// package (TaskRequest ... MessageSend).
func (t PayloadType) Standard() bool {
	switch t {
	case TaskRequest, TaskResponse, TaskUpdate, TaskCancel, StateQuery, StateRestore, MessageSend:
		return true
	}
	return false
}

// String returns t as a plain string.
func (t PayloadType) String() string { return string(t) }

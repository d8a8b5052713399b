package runtime

import (
	"strconv"
	"strings"

	"github.com/jetagent/jetagent/envelope"
)

// UnhandledSubject is the subject an Observer is told of for a delivery
// on a subject whose tail is not a payload type the agent handles: anyone
// allowed to publish under the agent's prefix can invent subjects, and
// none of them must cost a metric series (or any other state).
const UnhandledSubject = "_unhandled"

// checkAddress confirms that env is what its subject says: the subject
// decides (it is what NATS permissions checked), the body must agree. A
// delivery on "<prefix>.tasks.<agent>.<tail>" must carry payload_type
// tail and recipient agent; otherwise a client allowed only
// "…task.request" could send a task.cancel or state.query in its body,
// and a misrouted envelope would run as if addressed here. Its reply_to
// must not be one of the topology's task or dead-letter subjects, which
// the agent's answer would forge. It returns a
// *envelope.FieldError wrapping envelope.ErrInvalidField, and allocates
// nothing when the envelope agrees.
func (r *Runtime) checkAddress(subject string, env *envelope.Envelope) error {
	tail, ok := strings.CutPrefix(subject, r.taskPrefix)
	switch {
	case !ok:
		return &envelope.FieldError{Field: "payload_type", Err: envelope.ErrInvalidField,
			Detail: "subject " + quote(subject) + " is not one of agent " + r.cfg.Agent + "'s task subjects"}
	case string(env.PayloadType) != tail:
		return &envelope.FieldError{Field: "payload_type", Err: envelope.ErrInvalidField,
			Detail: quote(string(env.PayloadType)) + " does not match the subject " + quote(subject) + ": the subject decides the payload type"}
	case env.Recipient != r.cfg.Agent:
		return &envelope.FieldError{Field: "recipient", Err: envelope.ErrInvalidField,
			Detail: quote(env.Recipient) + " is not this agent (" + r.cfg.Agent + ")"}
	case strings.HasPrefix(env.ReplyTo, r.ownPrefix) && !strings.HasPrefix(env.ReplyTo, r.replyPrefix):
		// The agent may publish its own dead letters (and an operator's
		// agent, tasks): a reply there would forge one with its rights.
		return &envelope.FieldError{Field: "reply_to", Err: envelope.ErrInvalidField,
			Detail: quote(env.ReplyTo) + " is one of jetagent's own subjects; replies go under " + r.replyPrefix + " or outside " + r.ownPrefix}
	}
	return nil
}

// quote is %.80q: untrusted text, shortened, for error details.
func quote(s string) string {
	if len(s) > 80 {
		s = s[:80]
	}
	return strings.ToValidUTF8(strconv.Quote(s), "?")
}

// observedSubject is what the Observer is told a delivery's subject is:
// the subject itself when the agent handles its tail, UnhandledSubject
// otherwise (see UnhandledSubject). The handlers map is not written once
// the runtime has started, so workers read it without a lock.
func (r *Runtime) observedSubject(subject string) string {
	if tail, ok := strings.CutPrefix(subject, r.taskPrefix); ok && r.handlers[envelope.PayloadType(tail)] != nil {
		return subject
	}
	return UnhandledSubject
}

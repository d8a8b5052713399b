package resilience

import (
	"sync"

	"github.com/jetagent/jetagent/internal/subject"
)

// BreakerRule gives the breakers whose names match Pattern their own
// settings. Patterns use NATS subject wildcards: "*" matches one token,
// a final ">" one or more.
type BreakerRule struct {
	Pattern  string
	Settings BreakerSettings
}

// BreakerRegistry keeps one Breaker per name (per subject, per target
// agent), created on first use with the settings of the first rule whose
// pattern matches, or the defaults. Looking up an existing breaker takes no
// lock. It is safe for concurrent use.
type BreakerRegistry struct {
	defaults BreakerSettings
	rules    []BreakerRule
	breakers sync.Map // name -> *Breaker
	create   sync.Mutex
}

// NewBreakerRegistry returns a registry creating breakers with defaults,
// or with the settings of the first matching rule.
func NewBreakerRegistry(defaults BreakerSettings, rules ...BreakerRule) *BreakerRegistry {
	return &BreakerRegistry{defaults: defaults, rules: rules}
}

// Get returns the breaker for name, creating it on first use.
func (r *BreakerRegistry) Get(name string) *Breaker {
	if b, ok := r.breakers.Load(name); ok {
		return b.(*Breaker)
	}
	r.create.Lock()
	defer r.create.Unlock()
	if b, ok := r.breakers.Load(name); ok {
		return b.(*Breaker)
	}
	b := NewBreaker(name, r.settingsFor(name))
	r.breakers.Store(name, b)
	return b
}

func (r *BreakerRegistry) settingsFor(name string) BreakerSettings {
	for _, rule := range r.rules {
		if subject.Match(rule.Pattern, name) {
			return rule.Settings
		}
	}
	return r.defaults
}

// States returns the state of every breaker created so far, by name.
func (r *BreakerRegistry) States() map[string]State {
	out := make(map[string]State)
	r.breakers.Range(func(k, v any) bool {
		out[k.(string)] = v.(*Breaker).State()
		return true
	})
	return out
}

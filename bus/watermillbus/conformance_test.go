package watermillbus_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/bus/watermillbus"
	"github.com/jetagent/jetagent/internal/natstest"
)

// wmPubSub returns a constructor of the conformance suite: each call gets
// its own connection (closed when the calling test ends, which also ends
// any subscription the suite forgets to close) and a subscriber of group.
func wmPubSub(srv *bus.EmbeddedServer, consumer bus.ConsumerConfig) tests.ConsumerGroupPubSubConstructor {
	return func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		conn := natstest.Connect(t, srv)
		sub, err := watermillbus.NewSubscriber(conn, watermillbus.Config{
			Stream: wmStream, ConsumerGroup: group, Consumer: consumer,
		})
		if err != nil {
			t.Fatal(err)
		}
		return newWMPublisher(conn), sub
	}
}

func wmTopic(tctx tests.TestContext) string { return "wmtest." + string(tctx.TestID) }

// runSuiteTests runs the given tests of watermill's suite as parallel
// subtests, each with a fresh test ID.
func runSuiteTests(t *testing.T, features tests.Features, newPubSub tests.PubSubConstructor,
	suite map[string]func(*testing.T, tests.TestContext, tests.PubSubConstructor),
) {
	for name, test := range suite {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, tests.TestContext{TestID: tests.NewTestID(), Features: features}, newPubSub)
		})
	}
}

// TestConformance runs watermill's whole pub/sub suite with every
// subscriber in a consumer group (the plain constructor uses group "suite",
// as watermill's Kafka and SQL adapters do). Features claimed:
//   - ConsumerGroups: a group is one durable consumer per topic; with limits
//     retention every group receives every message.
//   - Persistent: messages live in the stream, not in the subscriber.
//   - not NewSubscriberReceivesOldMessages: a new member of a group resumes
//     where the group is (groupless subscribers do receive old messages:
//     TestConformanceGroupless).
//   - not GuaranteedOrder: a Nack'ed message comes back after those already
//     pulled (TestConformanceOrdered covers the strict setting).
//   - not ExactlyOnceDelivery: delivery is at least once.
//   - no RestartServiceCommand: reconnects are proved by the integration
//     suites, which restart a real server.
//
// MaxDeliver is raised from the default 10: TestContinueAfterErrors Nacks
// every message about nine times within one group, and watermill expects a
// Nack'ed message back however often it failed.
func TestConformance(t *testing.T) {
	srv := wmServer(t)
	newPubSub := wmPubSub(srv, bus.ConsumerConfig{MaxDeliver: 100})
	tests.TestPubSub(t, tests.Features{
		ConsumerGroups:    true,
		Persistent:        true,
		GenerateTopicFunc: wmTopic,
	}, func(t *testing.T) (message.Publisher, message.Subscriber) {
		return newPubSub(t, "suite")
	}, newPubSub)
}

// TestConformanceGroupless runs the suite's tests on groupless
// subscribers (a consumer per Subscribe call, from the stream's start),
// claiming NewSubscriberReceivesOldMessages. Left out: the order tests (not
// claimed), TestReconnect (no restart command), TestConsumerGroups (no
// group) and TestConcurrentSubscribe: its 50 subscribers each receive all
// 5000 messages, and watermill's multiplier merging them leaves 49
// goroutines blocked forever on a send nobody reads (goleak fails).
func TestConformanceGroupless(t *testing.T) {
	srv := wmServer(t)
	newPubSub := wmPubSub(srv, bus.ConsumerConfig{})
	runSuiteTests(t, tests.Features{
		Persistent:                       true,
		NewSubscriberReceivesOldMessages: true,
		GenerateTopicFunc:                wmTopic,
	}, func(t *testing.T) (message.Publisher, message.Subscriber) {
		return newPubSub(t, "")
	}, map[string]func(*testing.T, tests.TestContext, tests.PubSubConstructor){
		"PublishSubscribe":                  tests.TestPublishSubscribe,
		"ConcurrentSubscribeMultipleTopics": tests.TestConcurrentSubscribeMultipleTopics,
		"ResendOnError":                     tests.TestResendOnError,
		"ContinueAfterSubscribeClose":       tests.TestContinueAfterSubscribeClose,
		"ConcurrentClose":                   tests.TestConcurrentClose,
		"ContinueAfterErrors":               tests.TestContinueAfterErrors,
		"PublisherClose":                    tests.TestPublisherClose,
		"Topic":                             tests.TestTopic,
		"MessageCtx":                        tests.TestMessageCtx,
		"SubscribeCtx":                      tests.TestSubscribeCtx,
		"NewSubscriberReceivesOldMessages":  tests.TestNewSubscriberReceivesOldMessages,
	})
}

// TestConformanceOrdered runs the suite's order tests (skipped by
// TestPubSub unless GuaranteedOrder is claimed) on the setting documented
// to keep order: one group, MaxAckPending 1, no NakDelay.
func TestConformanceOrdered(t *testing.T) {
	srv := wmServer(t)
	newPubSub := wmPubSub(srv, bus.ConsumerConfig{MaxAckPending: 1, Prefetch: 1})
	runSuiteTests(t, tests.Features{
		ConsumerGroups:    true,
		Persistent:        true,
		GuaranteedOrder:   true,
		GenerateTopicFunc: wmTopic,
	}, func(t *testing.T) (message.Publisher, message.Subscriber) {
		return newPubSub(t, "ordered")
	}, map[string]func(*testing.T, tests.TestContext, tests.PubSubConstructor){
		"PublishSubscribeInOrder": tests.TestPublishSubscribeInOrder,
		"NoAck":                   tests.TestNoAck,
		"ResendOnError":           tests.TestResendOnError,
	})
}

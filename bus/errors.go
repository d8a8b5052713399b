package bus

import "errors"

var (
	// ErrConfigConflict is returned by [Provision] and [NewSubscriber] when a
	// stream, bucket or consumer already exists with a configuration that
	// differs from the requested one. jetagent never changes an existing
	// stream silently: migrate it by hand or change the requested settings.
	ErrConfigConflict = errors.New("bus: existing configuration conflicts")

	// ErrInvalidName is returned when an agent, client or prefix name cannot
	// be used as a NATS subject token or stream name.
	ErrInvalidName = errors.New("bus: invalid name")

	// ErrClosed is returned by operations on a closed connection, publisher
	// or subscriber.
	ErrClosed = errors.New("bus: closed")

	// ErrConsumerGone is wrapped by a [Subscriber]'s Err when pulling
	// ended because the server no longer has its consumer (it, or its
	// stream, was deleted). The subscriber does not create it again: the
	// process that runs it should end, and its restart provision anew.
	ErrConsumerGone = errors.New("bus: consumer gone")

	// ErrDataDirLocked is wrapped by the error of [StartEmbedded] (a
	// [*DataDirLockedError], naming the owner) when another process
	// already runs an embedded server on the same data directory.
	ErrDataDirLocked = errors.New("bus: data directory in use by another process")

	// ErrListenNotLoopback is wrapped by the error of [StartEmbedded] for a
	// listen address other than a loopback one, unless
	// EmbeddedOptions.InsecureListenWithoutAuth: the embedded server has no
	// authentication.
	ErrListenNotLoopback = errors.New("bus: the embedded server listens on loopback addresses only")
)

package natsflags_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/natsflags"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/pflag"
)

// A command registers the flags, parses its arguments and asks for the
// connection options; settings that cannot go together are usage errors.
func ExampleFlags() {
	var f natsflags.Flags
	fs := pflag.NewFlagSet("send", pflag.ContinueOnError)
	f.Register(fs)
	_ = fs.Parse([]string{"--creds", "web.creds", "--user", "web", "--password-file", "/run/secrets/nats"})

	_, err := f.Options()
	fmt.Println(errors.Is(err, natsflags.ErrConflict))
	fmt.Println(err)
	// Output:
	// true
	// natsflags: conflicting settings: --creds and --user are set: authenticate one way only (credentials, nkey, token, or user and password)
}

// A one-shot command fails at once, naming the subject, when the server
// refuses it a permission, instead of waiting for the request's timeout.
func ExampleFailFast() {
	srv, _ := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "web", Password: "example", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"jetagent.tasks.echo.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX_web.>"}},
		}}}})
	srv.Start()
	defer srv.Shutdown()
	srv.ReadyForConnections(5 * time.Second)

	f := natsflags.Flags{User: "web", Password: "example", InboxPrefix: "_INBOX_web"}
	opts, _ := f.Options()
	ctx, denied, stop := natsflags.FailFast(context.Background())
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := bus.Connect(ctx, srv.ClientURL(), append(opts, denied)...)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()

	_, err = conn.NATS().RequestWithContext(ctx, "$JS.API.STREAM.PURGE.JETAGENT_DLQ", nil)
	fmt.Println(err)
	fmt.Println(natsflags.Violation(ctx))
	// Output:
	// context canceled
	// the NATS server refused this user permission to publish "$JS.API.STREAM.PURGE.JETAGENT_DLQ" (see docs/security.md for what each role needs)
}

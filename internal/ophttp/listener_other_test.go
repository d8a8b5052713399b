//go:build !linux

package ophttp_test

import (
	"errors"

	"github.com/jetagent/jetagent/internal/ophttp"
)

func shutdownOwnListener(*ophttp.Server) error { return errors.New("needs pidfd_getfd (Linux)") }

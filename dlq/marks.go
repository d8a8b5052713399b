package dlq

import "context"

// FillReplays sets the Replays count of each entry from its replay mark,
// one direct read per entry: for a page of entries read with
// Filter.WithoutReplays, much cheaper than reading every mark when many
// entries were replayed. It stops at the first failed read.
func (s *Store) FillReplays(ctx context.Context, entries []*Entry) error {
	for _, e := range entries {
		m, err := s.mark(ctx, e)
		if err != nil {
			return err
		}
		e.Replays, e.markRev = m.Count, m.rev
	}
	return nil
}

package state

import (
	"context"
	"testing"

	"github.com/docexec/docexec/executor/document"
	"github.com/docexec/docexec/internal/testenv"
)

// TestARetryAfterALostReplyIsNoRollback plays a batch whose Apply did
// apply but whose reply never came: the writer still holds the offset
// before it, Redis has the batch's. The retry must pass.
func TestARetryAfterALostReplyIsNoRollback(t *testing.T) {
	ctx := context.Background()
	s := New(testenv.Redis(t), Options{Pool: "lost-reply-" + t.Name(), Partition: 0})
	claim, err := s.Claim(ctx, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	updates := []Update{{Doc: document.Document{URL: "u", FetchTime: 1}, Emit: EmitChanged}}
	if _, err := s.Apply(ctx, claim.Epoch, updates, 2, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, claim.Epoch, updates, 4, nil); err != nil {
		t.Fatal(err)
	}
	s.applied = "2" // the reply of the second call was lost
	if _, err := s.Apply(ctx, claim.Epoch, updates, 4, nil); err != nil {
		t.Fatalf("the retry: %v", err)
	}
}

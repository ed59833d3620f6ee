package e2e

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/docexec/docexec/executor/config"
	"github.com/docexec/docexec/executor/kafka"
	"github.com/docexec/docexec/internal/docgen"
)

// TestTheLeaseHoldsUnderFullLoad keeps a partition's leader busy for a
// minute (DOCEXEC_LOAD=5m for longer) at the tightest election timings the
// API allows, with a standby beside it: no leader change may happen that
// nobody asked for. Busy leaders used to lose their Lease about twice a
// minute when lag reports on the Lease raced renewals under client-go's
// default request limit.
func TestTheLeaseHoldsUnderFullLoad(t *testing.T) {
	load := time.Minute
	if d, err := time.ParseDuration(os.Getenv("DOCEXEC_LOAD")); err == nil && d > 0 {
		load = d
	}
	f := newFleet(t, servers{})
	f.docs = docgen.Options{URLs: 2000, MedianTextBytes: 1 << 10, MaxMessageBytes: docgen.MinMaxMessageBytes}
	f.start()
	f.start()
	leader := f.leader("")
	lease := func() (string, int32) {
		l, err := f.kube.CoordinationV1().Leases("default").Get(context.Background(), f.pool+"-p0", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		holder := ""
		if l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		transitions := int32(0)
		if l.Spec.LeaseTransitions != nil {
			transitions = *l.Spec.LeaseTransitions
		}
		return holder, transitions
	}
	_, before := lease()

	client, err := kafka.Connect(kafka.Config{Brokers: f.brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, stop := context.WithTimeout(context.Background(), load)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // input whenever fewer than a few thousand wait: the leader never idles
		defer wg.Done()
		for ctx.Err() == nil {
			end, err1 := client.Offset("in", 0, kafka.Latest)
			committed, _, err2 := client.Committed(config.Group(f.pool), "in", 0)
			if err1 == nil && err2 == nil && end-committed > 5000 {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			if err := f.tryProduce(2000); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	<-ctx.Done()
	wg.Wait()
	holder, after := lease()
	if holder != leader || after != before {
		t.Fatalf("the Lease went from %s to %s (%d transitions) under load, although nobody asked", leader, holder, after-before)
	}
	terms := 0
	for name := range f.procs {
		terms += strings.Count(f.logs[name].String(), "Became the partition's leader")
	}
	if terms != 1 {
		t.Fatalf("%d terms began, want the one", terms)
	}
	t.Logf("%d updates processed in %s under one leader", len(f.inputs), load)
	f.check()
}

package leader_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/docexec/docexec/executor/leader"
	"github.com/docexec/docexec/internal/testenv"
)

var client kubernetes.Interface

func TestMain(m *testing.M) {
	testenv.ControlPlaneMain(m, func(cfg *rest.Config) (err error) {
		client, err = kubernetes.NewForConfig(cfg)
		return err
	}, testenv.WithoutCRD) // Leases only
}

// lease returns an elector of a fresh Lease, as the operator creates it.
func lease(t *testing.T, identity, name string) *leader.Lease {
	testenv.NeedControlPlane(t)
	ctx := context.Background()
	if _, err := client.CoordinationV1().Leases("default").Get(ctx, name, metav1.GetOptions{}); err != nil {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
		if _, err := client.CoordinationV1().Leases("default").Create(ctx, l, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return &leader.Lease{Client: client, Namespace: "default", Name: name, Identity: identity,
		LeaseDuration: 4 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 200 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func TestAStandbyTakesOverAtOnceWhenTheLeaderStops(t *testing.T) {
	name := fmt.Sprintf("p%x", rand.Uint32())
	a, b := lease(t, "a", name), lease(t, "b", name)
	aCtx, stopA := context.WithCancel(context.Background())
	aLeads := make(chan struct{})
	var aStopped atomic.Int64 // when a's work returned, in ns
	aDone := make(chan error, 1)
	go func() {
		_, err := a.Lead(aCtx, func(ctx context.Context) error {
			close(aLeads)
			<-ctx.Done()
			time.Sleep(300 * time.Millisecond) // the last batch and sync
			aStopped.Store(time.Now().UnixNano())
			return nil
		})
		aDone <- err
	}()
	<-aLeads
	bLeads := make(chan time.Time, 1)
	bCtx, stopB := context.WithCancel(context.Background())
	defer stopB()
	go b.Lead(bCtx, func(ctx context.Context) error { bLeads <- time.Now(); <-ctx.Done(); return nil }) //nolint:errcheck
	select {
	case <-bLeads:
		t.Fatal("the standby led while the leader held the Lease")
	case <-time.After(time.Second):
	}
	stopA() // SIGTERM
	if err := <-aDone; err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-bLeads:
		gap := at.Sub(time.Unix(0, aStopped.Load()))
		if gap < 0 {
			t.Fatalf("the standby led %v before the leader's work ended", -gap)
		}
		if gap > 2*time.Second {
			t.Fatalf("the standby took %v to take over, want well under the 4 s lease: the Lease was not released", gap)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the standby never led")
	}
	got, err := client.CoordinationV1().Leases("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil || got.Spec.HolderIdentity == nil || *got.Spec.HolderIdentity != "b" {
		t.Fatalf("lease holder %v (%v), want b", got.Spec.HolderIdentity, err)
	}
}

// TestTheLeaderWritesNothingButItsRenewals watches the Lease while a leader
// works: every change must be a renewal. Anything else written there (a
// lag report, say) races the renewals, and a renewal that loses the race
// loses the Lease.
func TestTheLeaderWritesNothingButItsRenewals(t *testing.T) {
	name := fmt.Sprintf("p%x", rand.Uint32())
	l := lease(t, "a", name)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	leading := make(chan struct{})
	go l.Lead(ctx, func(ctx context.Context) error { close(leading); <-ctx.Done(); return nil }) //nolint:errcheck
	<-leading
	w, err := client.CoordinationV1().Leases("default").Watch(context.Background(), metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var prev *coordinationv1.Lease
	renewals := 0
	for timeout := time.After(3 * time.Second); ; {
		select {
		case ev := <-w.ResultChan():
			cur, ok := ev.Object.(*coordinationv1.Lease)
			if !ok {
				t.Fatalf("watch event %v", ev)
			}
			if prev != nil {
				was, now := prev.DeepCopy(), cur.DeepCopy()
				was.ObjectMeta, now.ObjectMeta = metav1.ObjectMeta{}, metav1.ObjectMeta{}
				was.Spec.RenewTime, now.Spec.RenewTime = nil, nil
				if !equality.Semantic.DeepEqual(was, now) || !equality.Semantic.DeepEqual(prev.Annotations, cur.Annotations) {
					t.Fatalf("a change that is not a renewal:\n%+v\n%+v", prev, cur)
				}
				renewals++
			}
			prev = cur
		case <-timeout:
			if renewals < 5 {
				t.Fatalf("%d renewals in 3 s with a retry period of %s", renewals, l.RetryPeriod)
			}
			return
		}
	}
}

func TestLocalLetsOneLeadAtATimeAndCountsHandovers(t *testing.T) {
	var handovers atomic.Int64
	l := leader.NewLocal(&handovers)
	var inside, most atomic.Int64
	done := make(chan struct{})
	for range 3 {
		go func() {
			defer func() { done <- struct{}{} }()
			l.Lead(context.Background(), func(context.Context) error { //nolint:errcheck
				n := inside.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(20 * time.Millisecond)
				inside.Add(-1)
				return nil
			})
		}()
	}
	for range 3 {
		<-done
	}
	if most.Load() != 1 || handovers.Load() != 2 {
		t.Fatalf("%d led at once, %d handovers; want 1 and 2", most.Load(), handovers.Load())
	}
}

func TestALeaderThatLostItsLeaseStopsAndLeavesTheNewHolderAlone(t *testing.T) {
	name := fmt.Sprintf("p%x", rand.Uint32())
	a := lease(t, "a", name)
	leading := make(chan struct{})
	workEnded := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := a.Lead(context.Background(), func(ctx context.Context) error {
			close(leading)
			<-ctx.Done() // the lost Lease ends the work
			close(workEnded)
			return nil
		})
		done <- err
	}()
	<-leading
	// Another executor takes the Lease (as after a partition of the network).
	ctx := context.Background()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error { // a renewal may come between
		l, err := client.CoordinationV1().Leases("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		l.Spec.HolderIdentity = ptr.To("b")
		l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now().Add(time.Hour)}
		_, err = client.CoordinationV1().Leases("default").Update(ctx, l, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-workEnded:
	case <-time.After(10 * time.Second):
		t.Fatal("the work went on after the Lease was lost")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got, err := client.CoordinationV1().Leases("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil || ptr.Deref(got.Spec.HolderIdentity, "") != "b" {
		t.Fatalf("holder %v after the old leader stopped, want b untouched (%v)", got.Spec.HolderIdentity, err)
	}
}

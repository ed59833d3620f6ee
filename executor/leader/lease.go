package leader

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/ptr"

	"github.com/docexec/docexec/executor/fencing"
)

// Lease is an Elector on a Kubernetes coordination.k8s.io Lease.
type Lease struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string
	// Identity names this executor in the Lease (the pod's name).
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's timings.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
}

// Lead implements Elector. The error of work that failed after the Lease
// was lost wraps fencing.ErrLeaseLost.
func (l *Lease) Lead(ctx context.Context, work func(context.Context) error) (bool, error) {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: l.Namespace, Name: l.Name},
		Client:     l.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: l.Identity},
	}
	// The election runs on its own context: SIGTERM (ctx) must first stop
	// the work, and only then release the Lease.
	electCtx, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()
	leading := make(chan context.Context, 1)
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		// client-go would release the Lease the moment a renewal fails, while
		// the work still runs; Lead releases it itself once the work ended.
		Lock: lock, Name: l.Name, ReleaseOnCancel: false,
		LeaseDuration: l.LeaseDuration, RenewDeadline: l.RenewDeadline, RetryPeriod: l.RetryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(term context.Context) { leading <- term },
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return false, fmt.Errorf("leader: lease %s/%s: %w", l.Namespace, l.Name, err)
	}
	elected := make(chan struct{})
	go func() { defer close(elected); elector.Run(electCtx) }()
	defer func() { stopElection(); <-elected }()

	var term context.Context
	select {
	case <-ctx.Done():
		return false, nil
	case <-elected:
		return false, fmt.Errorf("leader: lease %s/%s: the election ended", l.Namespace, l.Name)
	case term = <-leading:
	}
	// Stop renewing and give the Lease up only after the work ended.
	defer func() {
		stopElection()
		<-elected
		l.release(context.WithoutCancel(ctx))
	}()
	if ctx.Err() != nil { // SIGTERM and the win came together
		return false, nil
	}
	l.Log.Info("Became the partition's leader", "lease", l.Name, "identity", l.Identity)
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	stopOnLoss := context.AfterFunc(term, stopWork)
	defer stopOnLoss()
	err = work(workCtx)
	stopWork()
	if term.Err() != nil && ctx.Err() == nil {
		l.Log.Warn("Lost the partition's leadership", "lease", l.Name, "identity", l.Identity)
		if err != nil {
			err = fmt.Errorf("leader: %w: %w", fencing.ErrLeaseLost, err)
		}
	}
	return true, err
}

// release hands the Lease over at once (as client-go does), unless another
// executor holds it already.
func (l *Lease) release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, l.RenewDeadline)
	defer cancel()
	leases := l.Client.CoordinationV1().Leases(l.Namespace)
	lease, err := leases.Get(ctx, l.Name, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != l.Identity {
		return
	}
	now := metav1.NewMicroTime(time.Now())
	lease.Spec.HolderIdentity = ptr.To("")
	lease.Spec.LeaseDurationSeconds = ptr.To[int32](1)
	lease.Spec.RenewTime, lease.Spec.AcquireTime = &now, &now
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		l.Log.Warn("Could not release the Lease; a standby takes over when it expires", "lease", l.Name, "err", err)
	}
}

// Package controllers holds the DocExecutorPool reconciler: it turns a pool
// into per-partition executor Deployments, PodDisruptionBudgets and Leases,
// and per-pool configuration, RBAC and a metrics Service, and reports what
// it observes in the pool's status.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
)

// DefaultResync is how often a pool is looked at again without news: its
// topic's partition count (when it follows it), the topics' fitness and
// the lag in status are read at this rate.
const DefaultResync = 30 * time.Second

// DefaultConcurrentWrites is how many API writes one pass has in flight at
// once for the partitions' objects. One at a time, a pool of 10,000
// partitions waits for 30,000 round trips in a row before its last
// partition exists; the API server's priority and fairness still decides
// how fast they are served.
const DefaultConcurrentWrites = 16

// DocExecutorPoolReconciler reconciles DocExecutorPools.
type DocExecutorPoolReconciler struct {
	client.Client
	Scheme   *runtime.Scheme
	Recorder record.EventRecorder
	// DefaultImage runs pools that name no image.
	DefaultImage string
	// Topics reads pools' topics.
	Topics Topics
	// Resync is how often a pool is looked at again; DefaultResync when
	// zero.
	Resync time.Duration
	// ConcurrentWrites bounds the API writes a pass has in flight at once;
	// DefaultConcurrentWrites when zero.
	ConcurrentWrites int

	// written finds hand edits of the objects the pools own.
	written writtenHashes
}

// +kubebuilder:rbac:groups=docexec.io,resources=docexecutorpools,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=docexec.io,resources=docexecutorpools/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=docexec.io,resources=docexecutorpools/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=configmaps;serviceaccounts;services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// conflictRetry is how soon a pass that lost a write race runs again.
const conflictRetry = 200 * time.Millisecond

// Reconcile observes a pool's objects, makes them what the spec says, then
// writes the status of what it observed and ran into. A pass with nothing
// to change writes nothing.
//
// Objects of the names a pool needs that are not its own are left
// untouched and reported (Degraded, OwnershipConflict), not returned as an
// error: only a person can resolve them, and the pool comes back at the
// resync. A write that fails is returned (retried with backoff) and
// reported too; the same failure again builds the same status, which is
// not written again, so neither flips a condition nor loops.
//
// A write conflict is routine (the pool or a child changed since the cache
// served it, often by our own previous pass): the pass runs again shortly
// on fresh objects, logged at debug level, not as a reconcile error. So is
// a pass cut short because the operator stops.
func (r *DocExecutorPoolReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	res, err := r.reconcile(ctx, req)
	switch {
	case retryable(err):
		log.FromContext(ctx).V(1).Info("Requeued DocExecutorPool after a write conflict", "err", err.Error())
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		// The operator is stopping; whoever leads next reconciles again.
		log.FromContext(ctx).V(1).Info("Left DocExecutorPool mid-pass: the operator is stopping", "err", err.Error())
		return ctrl.Result{}, nil
	}
	return res, err
}

func (r *DocExecutorPoolReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	var pool docexecv1.DocExecutorPool
	if err := r.Get(ctx, req.NamespacedName, &pool); err != nil {
		if apierrors.IsNotFound(err) {
			r.written.forgetPool(req.NamespacedName)
			forgetPoolMetrics(req.Namespace, req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !pool.DeletionTimestamp.IsZero() {
		r.written.forgetPool(req.NamespacedName)
		forgetPoolMetrics(pool.Namespace, pool.Name)
		return ctrl.Result{}, nil // owned objects go with it (owner references)
	}

	want := r.partitions(ctx, &pool)
	observed, err := r.observe(ctx, &pool)
	if err != nil {
		return ctrl.Result{}, err
	}
	wanted, err := r.plan(&pool, max(want.count, 0))
	if err != nil {
		return ctrl.Result{}, err
	}
	wanted.hashes = wanted.deploymentHashes()

	var out outcome
	if want.count < 0 {
		logger.Info("Left DocExecutorPool as it is: its partition count is unknown", "err", want.err)
	} else {
		out = r.act(ctx, &pool, wanted, observed)
		if retryable(out.err) {
			return ctrl.Result{}, out.err // not a failure to report
		}
	}
	before := pool.Status
	status := buildStatus(&pool, want, observed, wanted.hashes, out)
	recordPoolMetrics(&pool, status)
	statusErr := r.writeStatus(ctx, &pool, status)
	if statusErr == nil {
		for _, e := range statusEvents(before, status) {
			r.Recorder.Event(&pool, e.typ, e.reason, e.message)
		}
	}
	if err := errors.Join(out.err, statusErr); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: r.resync()}, nil
}

// retryable reports a write that raced another and will succeed on fresh
// objects: a conflict, or a create of what the cache did not show yet.
func retryable(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
}

func (r *DocExecutorPoolReconciler) resync() time.Duration {
	if r.Resync > 0 {
		return r.Resync
	}
	return DefaultResync
}

// wanted is how many partitions the pool should run and what is known of
// its topics.
type wanted struct {
	count int32 // -1: unknown (the topic could not be read)
	topic *int32
	info  TopicInfo
	err   error
}

func (r *DocExecutorPoolReconciler) partitions(ctx context.Context, pool *docexecv1.DocExecutorPool) wanted {
	w := wanted{count: -1}
	info, err := r.Topics.Describe(ctx, pool)
	w.info = info // what is known, even with an error (a missing input topic)
	if err != nil {
		w.err = err // in status (and so an event) when the pool depends on it
	} else {
		w.topic = &info.Partitions
	}
	switch {
	case pool.Spec.Partitions != nil:
		w.count = *pool.Spec.Partitions
	case w.topic != nil:
		w.count = *w.topic
	case pool.Status.Partitions > 0:
		w.count = pool.Status.Partitions // keep running what runs
	}
	return w
}

// writeStatus writes status unless the pool has it already.
func (r *DocExecutorPoolReconciler) writeStatus(ctx context.Context, pool *docexecv1.DocExecutorPool, status docexecv1.DocExecutorPoolStatus) error {
	if equality.Semantic.DeepEqual(pool.Status, status) {
		return nil
	}
	pool.Status = status
	if err := r.Status().Update(ctx, pool); err != nil {
		return fmt.Errorf("update status of DocExecutorPool %s/%s: %w", pool.Namespace, pool.Name, err)
	}
	return nil
}

// plan is what the operator wants to exist for a pool.
type plan struct {
	// executorsNeed are the pool's objects the executors run with: their
	// configuration, ServiceAccount, Role and RoleBinding, in that order.
	executorsNeed []client.Object
	// service lists the executors for scraping.
	service     client.Object
	deployments []*appsv1.Deployment // one per partition, in order
	budgets     []*policyv1.PodDisruptionBudget
	hashes      []string // deploymentHashes, once computed
}

func (r *DocExecutorPoolReconciler) plan(pool *docexecv1.DocExecutorPool, partitions int32) (plan, error) {
	cfg, err := executorConfig(pool)
	if err != nil {
		return plan{}, fmt.Errorf("render executor config of DocExecutorPool %s: %w", pool.Name, err)
	}
	cm := configMap(pool, cfg)
	image := pool.Spec.Image
	if image == "" {
		image = r.DefaultImage
	}
	pl := plan{executorsNeed: []client.Object{cm, serviceAccount(pool), role(pool, partitions), roleBinding(pool)}, service: metricsService(pool)}
	for p := range partitions {
		pl.deployments = append(pl.deployments, deployment(pool, p, image, specHash(cm.Data)))
		pl.budgets = append(pl.budgets, podDisruptionBudget(pool, p))
	}
	return pl, nil
}

// deploymentHashes is what each partition's Deployment carries once it is
// up to date.
func (pl plan) deploymentHashes() []string {
	out := make([]string, len(pl.deployments))
	for i, d := range pl.deployments {
		out[i] = specHash(d)
	}
	return out
}

// observed is what exists of a pool.
type observed struct {
	deployments map[int32]*appsv1.Deployment
	leases      map[int32]*coordinationv1.Lease
	budgets     map[int32]*policyv1.PodDisruptionBudget
	// pods are the executor pods' metadata: their names, labels and
	// annotations are all the operator reads of them.
	pods map[int32][]*metav1.PartialObjectMetadata
}

// PodMetadata is how the operator reads executor pods: metadata only, so
// that neither its cache nor its passes hold their specs and status.
func PodMetadata() *metav1.PartialObjectMetadata {
	var m metav1.PartialObjectMetadata
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Pod"))
	return &m
}

// observe lists what exists of a pool. The objects are the cache's own
// (a pass of 10,000 partitions would copy some 30,000 otherwise): read them,
// never change them; copy one before writing it.
func (r *DocExecutorPoolReconciler) observe(ctx context.Context, pool *docexecv1.DocExecutorPool) (observed, error) {
	o := observed{deployments: map[int32]*appsv1.Deployment{}, leases: map[int32]*coordinationv1.Lease{},
		budgets: map[int32]*policyv1.PodDisruptionBudget{}, pods: map[int32][]*metav1.PartialObjectMetadata{}}
	sel := client.MatchingLabels{LabelPool: pool.Name}
	shared := client.UnsafeDisableDeepCopy
	var deps appsv1.DeploymentList
	if err := r.List(ctx, &deps, client.InNamespace(pool.Namespace), sel, shared); err != nil {
		return o, fmt.Errorf("list Deployments of DocExecutorPool %s: %w", pool.Name, err)
	}
	for i := range deps.Items {
		if p, ok := partitionOf(&deps.Items[i]); ok && metav1.IsControlledBy(&deps.Items[i], pool) {
			o.deployments[p] = &deps.Items[i]
		}
	}
	var budgets policyv1.PodDisruptionBudgetList
	if err := r.List(ctx, &budgets, client.InNamespace(pool.Namespace), sel, shared); err != nil {
		return o, fmt.Errorf("list PodDisruptionBudgets of DocExecutorPool %s: %w", pool.Name, err)
	}
	for i := range budgets.Items {
		if p, ok := partitionOf(&budgets.Items[i]); ok && metav1.IsControlledBy(&budgets.Items[i], pool) {
			o.budgets[p] = &budgets.Items[i]
		}
	}
	var leases coordinationv1.LeaseList
	if err := r.List(ctx, &leases, client.InNamespace(pool.Namespace), sel, shared); err != nil {
		return o, fmt.Errorf("list Leases of DocExecutorPool %s: %w", pool.Name, err)
	}
	for i := range leases.Items {
		if p, ok := partitionOf(&leases.Items[i]); ok && claimOf(&leases.Items[i], pool) != claimTheirs {
			o.leases[p] = &leases.Items[i]
		}
	}
	var pods metav1.PartialObjectMetadataList
	pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
	if err := r.List(ctx, &pods, client.InNamespace(pool.Namespace), sel, shared); err != nil {
		return o, fmt.Errorf("list Pods of DocExecutorPool %s: %w", pool.Name, err)
	}
	for i := range pods.Items {
		if p, ok := partitionOf(&pods.Items[i]); ok {
			o.pods[p] = append(o.pods[p], &pods.Items[i])
		}
	}
	return o, nil
}

func partitionOf(obj client.Object) (int32, bool) {
	n, err := strconv.ParseInt(obj.GetLabels()[LabelPartition], 10, 32)
	return int32(n), err == nil
}

// act makes the pool's objects match the spec: the objects the executors
// run with first, then the metrics Service, then every partition's, up to
// ConcurrentWrites requests at once. Objects that are not the pool's are
// left alone and listed in the outcome; while one of those the executors
// run with is not the pool's, the partitions are left as they are. The
// first failed write stops the pass.
func (r *DocExecutorPoolReconciler) act(ctx context.Context, pool *docexecv1.DocExecutorPool, pl plan, o observed) outcome {
	var (
		mu  sync.Mutex
		out outcome
	)
	// resolve records a conflict and lets the pass go on; other errors stop it.
	resolve := func(err error) error {
		var c *conflictError
		if !errors.As(err, &c) {
			return err
		}
		mu.Lock()
		out.conflicts = append(out.conflicts, c.Error())
		mu.Unlock()
		return nil
	}
	defer func() { slices.Sort(out.conflicts) }()
	for i, obj := range pl.executorsNeed {
		// The RoleBinding grants the Role to the ServiceAccount: not when
		// either is someone else's.
		if i == len(pl.executorsNeed)-1 && len(out.conflicts) > 0 {
			break
		}
		if out.err = resolve(r.ensure(ctx, pool, obj, nil)); out.err != nil {
			return out
		}
	}
	out.blocked = len(out.conflicts) > 0
	if out.err = resolve(r.ensure(ctx, pool, pl.service, nil)); out.err != nil || out.blocked {
		return out
	}

	key := client.ObjectKeyFromObject(pool)
	var created atomic.Int32
	out.err = r.each(ctx, len(pl.deployments), func(ctx context.Context, i int) error {
		p := int32(i)
		dep, ok := o.deployments[p]
		if !ok || !current(dep, pl.hashes[i]) || r.written.drifted(key, dep) {
			var seen client.Object // nil: not the pool's, or not there; ensure looks
			if ok {
				seen = dep
			}
			switch err := r.ensure(ctx, pool, pl.deployments[i], seen); {
			case err != nil:
				if err := resolve(err); err != nil {
					return err
				}
			case !ok:
				created.Add(1)
			}
		}
		pdb, ok := o.budgets[p]
		if !ok || !current(pdb, specHash(pl.budgets[i])) || r.written.drifted(key, pdb) {
			var seen client.Object
			if ok {
				seen = pdb
			}
			if err := resolve(r.ensure(ctx, pool, pl.budgets[i], seen)); err != nil {
				return err
			}
		}
		switch l, ok := o.leases[p]; {
		case !ok:
			return resolve(r.ensureLease(ctx, pool, lease(pool, p)))
		case !metav1.IsControlledBy(l, pool):
			return r.adoptLease(ctx, pool, l)
		}
		return nil
	})
	if out.err != nil {
		return out
	}
	partitions := int32(len(pl.deployments))
	if out.err = r.markLeaders(ctx, o); out.err != nil {
		return out
	}
	// Partitions no longer wanted go, with their budget and Lease.
	var gone []int32
	for p := range o.deployments {
		if p >= partitions {
			gone = append(gone, p)
		}
	}
	out.err = r.each(ctx, len(gone), func(ctx context.Context, i int) error {
		p := gone[i]
		pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: partitionName(pool.Name, p), Namespace: pool.Namespace}}
		if b, ok := o.budgets[p]; ok {
			pdb = b
		}
		for _, obj := range []client.Object{o.deployments[p], pdb} {
			if err := r.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("delete partition %d of DocExecutorPool %s: %w", p, pool.Name, err)
			}
			r.written.forget(obj)
		}
		return nil
	})
	if out.err != nil {
		return out
	}
	if created.Load() > 0 || len(gone) > 0 { // every partition in gone is deleted: a failure returned above
		before := int32(len(o.deployments))
		r.Recorder.Eventf(pool, corev1.EventTypeNormal, docexecv1.EventPartitionsScaled, "Scaled from %d to %d partitions", before, before+created.Load()-int32(len(gone)))
	}
	var leases []*coordinationv1.Lease
	for p, l := range o.leases {
		if p >= partitions {
			leases = append(leases, l)
		}
	}
	out.err = r.each(ctx, len(leases), func(ctx context.Context, i int) error {
		if err := r.Delete(ctx, leases[i]); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete Lease %s of DocExecutorPool %s: %w", leases[i].Name, pool.Name, err)
		}
		return nil
	})
	return out
}

// each runs do(0..n-1), up to ConcurrentWrites at once, and returns the
// first error, after which the calls not yet started are skipped and the
// running ones see their context cancelled.
func (r *DocExecutorPoolReconciler) each(ctx context.Context, n int, do func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(r.concurrentWrites())
	for i := range n {
		if ctx.Err() != nil {
			break // a call failed: start no more
		}
		g.Go(func() error { return do(ctx, i) })
	}
	return g.Wait()
}

func (r *DocExecutorPoolReconciler) concurrentWrites() int {
	if r.ConcurrentWrites > 0 {
		return r.ConcurrentWrites
	}
	return DefaultConcurrentWrites
}

// markLeaders gives each partition's leader pod a high deletion cost, so
// that a rollout or scale-down removes the standbys first and hands the
// Lease over once, at the end.
func (r *DocExecutorPoolReconciler) markLeaders(ctx context.Context, o observed) error {
	type mark struct {
		partition int32
		pod       *metav1.PartialObjectMetadata
		value     string // JSON: the cost, or null to remove it
	}
	var marks []mark
	for p, pods := range o.pods {
		holder := ""
		if l, ok := o.leases[p]; ok && l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		for _, pod := range pods {
			want := ""
			if pod.Name == holder {
				want = leaderDeletionCost
			}
			if pod.Annotations[AnnotationDeletionCost] == want {
				continue
			}
			value := "null"
			if want != "" {
				value = strconv.Quote(want)
			}
			marks = append(marks, mark{p, pod, value})
		}
	}
	return r.each(ctx, len(marks), func(ctx context.Context, i int) error {
		m := marks[i]
		// Patch a fresh object: the answer is decoded into it, and m.pod
		// is the cache's.
		pod := PodMetadata()
		pod.Name, pod.Namespace = m.pod.Name, m.pod.Namespace
		patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%s}}}`, AnnotationDeletionCost, m.value))
		if err := r.Patch(ctx, pod, patch); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("mark the leader of partition %d: %w", m.partition, err)
		}
		return nil
	})
}

// current reports whether an observed object, controlled by the pool (the
// caller checked), carries the wanted spec hash: then what the operator
// wants of it did not change. Whether someone else changed it is
// writtenHashes.drifted's question.
func current(obj client.Object, hash string) bool {
	return obj.GetAnnotations()[AnnotationHash] == hash
}

// ensure creates obj, or updates it when what the operator wants of it
// changed (its spec hash) or someone else changed it (drift); an object the
// pool has as wanted is not written. observed is the object as the pass saw
// it (never changed here), or nil to look it up. An object that is not the
// pool's is left alone: ensure returns a *conflictError.
func (r *DocExecutorPoolReconciler) ensure(ctx context.Context, pool *docexecv1.DocExecutorPool, obj, observed client.Object) error {
	hash := specHash(obj)
	annotations := obj.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[AnnotationHash] = hash
	obj.SetAnnotations(annotations)
	if observed == nil {
		existing := obj.DeepCopyObject().(client.Object)
		err := r.Get(ctx, client.ObjectKeyFromObject(obj), existing)
		switch {
		case apierrors.IsNotFound(err):
			return r.create(ctx, pool, obj)
		case err != nil:
			return fmt.Errorf("get %s %s: %w", kindOf(obj), obj.GetName(), err)
		}
		observed = existing
	}
	switch claimOf(observed, pool) {
	case claimTheirs:
		return newConflict(observed)
	case claimOurs:
		if current(observed, hash) && !r.written.drifted(client.ObjectKeyFromObject(pool), observed) {
			return nil
		}
	}
	// Changed, drifted, or left without an owner with the pool's labels
	// (orphaned on a pool's deletion): write the wanted content, keeping
	// what others added to the metadata.
	obj.SetResourceVersion(observed.GetResourceVersion())
	obj.SetLabels(merged(observed.GetLabels(), obj.GetLabels()))
	obj.SetAnnotations(merged(observed.GetAnnotations(), obj.GetAnnotations()))
	obj.SetFinalizers(observed.GetFinalizers())
	obj.SetOwnerReferences(observed.GetOwnerReferences())
	if err := controllerutil.SetControllerReference(pool, obj, r.Scheme); err != nil {
		return err
	}
	if err := r.Update(ctx, obj); err != nil {
		return fmt.Errorf("update %s %s: %w", kindOf(obj), obj.GetName(), err)
	}
	r.written.remember(client.ObjectKeyFromObject(pool), obj)
	return nil
}

// merged is base with over's entries set.
func merged(base, over map[string]string) map[string]string {
	out := make(map[string]string, len(base)+len(over))
	maps.Copy(out, base)
	maps.Copy(out, over)
	return out
}

// ensureLease creates a partition's Lease unless one of its name exists:
// the pass's list shows only those with the pool's labels, and someone
// else's is left alone.
func (r *DocExecutorPoolReconciler) ensureLease(ctx context.Context, pool *docexecv1.DocExecutorPool, l *coordinationv1.Lease) error {
	var existing coordinationv1.Lease
	switch err := r.Get(ctx, client.ObjectKeyFromObject(l), &existing); {
	case apierrors.IsNotFound(err):
		return r.create(ctx, pool, l)
	case err != nil:
		return fmt.Errorf("get Lease %s: %w", l.Name, err)
	}
	switch claimOf(&existing, pool) {
	case claimTheirs:
		return newConflict(&existing)
	case claimAdoptable:
		return r.adoptLease(ctx, pool, &existing)
	}
	return nil
}

// adoptLease makes pool the controller of a Lease left without one, without
// touching what the executors wrote in it.
func (r *DocExecutorPoolReconciler) adoptLease(ctx context.Context, pool *docexecv1.DocExecutorPool, cached *coordinationv1.Lease) error {
	before, l := cached.DeepCopy(), cached.DeepCopy()
	if err := controllerutil.SetControllerReference(pool, l, r.Scheme); err != nil {
		return err
	}
	if err := r.Patch(ctx, l, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("adopt Lease %s: %w", l.Name, err)
	}
	return nil
}

// create creates obj, controlled by pool. AlreadyExists is returned as it
// is: the pass retries on fresh objects.
func (r *DocExecutorPoolReconciler) create(ctx context.Context, pool *docexecv1.DocExecutorPool, obj client.Object) error {
	if err := controllerutil.SetControllerReference(pool, obj, r.Scheme); err != nil {
		return err
	}
	if err := r.Create(ctx, obj); err != nil {
		return fmt.Errorf("create %s %s: %w", kindOf(obj), obj.GetName(), err)
	}
	r.written.remember(client.ObjectKeyFromObject(pool), obj)
	return nil
}

// leaseNews passes Lease updates that change its holder.
var leaseNews = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	before, ok1 := e.ObjectOld.(*coordinationv1.Lease)
	after, ok2 := e.ObjectNew.(*coordinationv1.Lease)
	if !ok1 || !ok2 {
		return true
	}
	return ptr.Deref(before.Spec.HolderIdentity, "") != ptr.Deref(after.Spec.HolderIdentity, "")
}}

// SetupWithManager registers the reconciler, watching the pool and what it
// owns.
func (r *DocExecutorPoolReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Topics == nil {
		return errors.New("controllers: DocExecutorPoolReconciler needs Topics")
	}
	return ctrl.NewControllerManagedBy(mgr).
		// Spec changes only: the pass's own status write is no news (a
		// status that changed on every pass would loop otherwise).
		For(&docexecv1.DocExecutorPool{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&appsv1.Deployment{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		// Leaders renew their Lease every second: only a new holder is
		// news.
		Owns(&coordinationv1.Lease{}, builder.WithPredicates(leaseNews)).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&corev1.Service{}).
		Owns(&rbacv1.Role{}).
		Owns(&rbacv1.RoleBinding{}).
		Named("docexecutorpool").
		Complete(r)
}

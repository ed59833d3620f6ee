package controllers

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
)

// The operator's pool metrics, served on the manager's /metrics beside
// controller-runtime's own (reconcile counts, errors and durations):
// what alerts on pools need, from the status the operator writes.
var (
	poolCondition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "docexec", Name: "pool_condition",
		Help: "1 while the pool's condition (Ready, Progressing, Degraded) is True, else 0.",
	}, []string{"namespace", "pool", "condition"})
	partitionLeader = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "docexec", Name: "pool_partition_led",
		Help: "1 while a ready executor pod holds the partition's Lease, else 0.",
	}, []string{"namespace", "pool", "partition"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(poolCondition, partitionLeader)
}

// partitionsShown is the partitions of each pool (by namespace/name) that
// have a docexec_pool_partition_led series.
var partitionsShown = struct {
	sync.Mutex
	of map[types.NamespacedName]map[int32]bool
}{of: map[types.NamespacedName]map[int32]bool{}}

// recordPoolMetrics sets a pool's metrics from the status it was given;
// partitions gone from it lose their series. Series are set in place, never
// removed and added again: a scrape in between would reset alerts' "for".
func recordPoolMetrics(pool *docexecv1.DocExecutorPool, st docexecv1.DocExecutorPoolStatus) {
	for _, c := range []string{docexecv1.ConditionReady, docexecv1.ConditionProgressing, docexecv1.ConditionDegraded} {
		poolCondition.WithLabelValues(pool.Namespace, pool.Name, c).Set(gaugeOf(meta.IsStatusConditionPresentAndEqual(st.Conditions, c, metav1.ConditionTrue)))
	}
	shown := map[int32]bool{}
	for _, p := range st.PartitionStatuses {
		led := p.ReadyReplicas > 0 && p.Leader != ""
		partitionLeader.WithLabelValues(pool.Namespace, pool.Name, strconv.Itoa(int(p.Partition))).Set(gaugeOf(led))
		shown[p.Partition] = true
	}
	key := types.NamespacedName{Namespace: pool.Namespace, Name: pool.Name}
	partitionsShown.Lock()
	defer partitionsShown.Unlock()
	for p := range partitionsShown.of[key] {
		if !shown[p] {
			partitionLeader.DeleteLabelValues(pool.Namespace, pool.Name, strconv.Itoa(int(p)))
		}
	}
	partitionsShown.of[key] = shown
}

// forgetPoolMetrics removes a pool's series (it was deleted).
func forgetPoolMetrics(namespace, pool string) {
	l := prometheus.Labels{"namespace": namespace, "pool": pool}
	poolCondition.DeletePartialMatch(l)
	partitionLeader.DeletePartialMatch(l)
	partitionsShown.Lock()
	defer partitionsShown.Unlock()
	delete(partitionsShown.of, types.NamespacedName{Namespace: namespace, Name: pool})
}

func gaugeOf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
	"github.com/docexec/docexec/executor/config"
	"github.com/docexec/docexec/executor/kafka"
)

// Labels and annotations the operator sets.
const (
	LabelPool        = "docexec.io/pool"
	LabelPartition   = "docexec.io/partition"
	AnnotationHash   = "docexec.io/spec-hash"
	AnnotationConfig = "docexec.io/config-hash"
	// AnnotationDeletionCost ranks pods for removal by their ReplicaSet
	// (lowest first); the operator sets it on each partition's leader.
	AnnotationDeletionCost = "controller.kubernetes.io/pod-deletion-cost"
	leaderDeletionCost     = "1000"

	configFile = "/etc/docexec/config.yaml"
	tlsDir     = "/etc/docexec/kafka-tls"
	// caKey is the Secret key of a CA certificate, as cert-manager and
	// Kubernetes' own CA bundles name it.
	caKey       = "ca.crt"
	metricsPort = 8080
	managedBy   = "docexec-operator"
	// ExecutorAppName is the app.kubernetes.io/name of executor pods.
	ExecutorAppName   = "docexec-executor"
	extraGraceSeconds = 10
	// DefaultRunAsUser is the uid and gid of executor pods that set none: the
	// nonroot user of the docexec image. Pods set it explicitly because
	// runAsNonRoot alone fails on an image whose user is a name or root.
	DefaultRunAsUser int64 = 65532
)

// Names of the objects a pool owns; partitionName names a partition's
// Deployment, PodDisruptionBudget and Lease alike.
func partitionName(pool string, partition int32) string {
	return fmt.Sprintf("%s-p%d", pool, partition)
}
func configMapName(pool string) string      { return pool + "-config" }
func executorName(pool string) string       { return pool + "-executor" }
func metricsServiceName(pool string) string { return pool + "-metrics" }

func poolLabels(pool string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":       ExecutorAppName,
		"app.kubernetes.io/instance":   pool,
		"app.kubernetes.io/managed-by": managedBy,
		LabelPool:                      pool,
	}
}

func partitionLabels(pool string, partition int32) map[string]string {
	l := poolLabels(pool)
	l[LabelPartition] = strconv.Itoa(int(partition))
	return l
}

// specHash fingerprints what the operator wants of an object, so that an
// unchanged object is not written again.
func specHash(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// executorConfig is the pool's executor configuration (the config file of
// `docexec executor`), less the partition and the secrets, which each pod
// gets from its environment.
func executorConfig(p *docexecv1.DocExecutorPool) ([]byte, error) {
	s := p.Spec
	c := config.Default()
	c.Pool, c.PoolNamespace = p.Name, p.Namespace
	c.Kafka.Brokers = s.Kafka.Brokers
	c.Kafka.InputTopic, c.Kafka.OutputTopic, c.Kafka.DeadLetterTopic = s.Kafka.InputTopic, s.Kafka.OutputTopic, s.Kafka.DeadLetterTopic
	c.Kafka.Group = consumerGroup(p)
	c.Kafka.Format = s.Kafka.Format
	c.Kafka.Compression = s.Kafka.Compression
	c.Kafka.StartOffset = kafka.StartOffset(s.Kafka.StartOffset)
	if s.Kafka.TLS != nil {
		c.Kafka.TLS.Enabled = true
		if s.Kafka.TLS.SecretName != "" {
			c.Kafka.TLS.CAFile = tlsDir + "/" + caKey
		}
		if s.Kafka.TLS.ClientCertSecretName != "" {
			c.Kafka.TLS.CertFile, c.Kafka.TLS.KeyFile = tlsDir+"/"+corev1.TLSCertKey, tlsDir+"/"+corev1.TLSPrivateKeyKey
		}
	}
	if s.Kafka.SASL != nil {
		c.Kafka.SASL.Mechanism, c.Kafka.SASL.Username = s.Kafka.SASL.Mechanism, s.Kafka.SASL.Username
	}
	c.Redis.Addresses = s.Redis.Addresses
	if s.Redis.CleanTTL != nil {
		c.Redis.CleanTTL = config.Duration(s.Redis.CleanTTL.Duration)
	}
	c.Postgres.Table = s.Postgres.Table
	c.Batch.Size = int(s.Batch.Size)
	c.Batch.MaxBytes = int(s.Batch.MaxBytes)
	c.Batch.MaxWait = duration(s.Batch.MaxWait)
	c.Sync.Interval = duration(s.Sync.Interval)
	c.Sync.BatchSize = int(s.Sync.BatchSize)
	c.ShutdownTimeout = duration(s.Failover.ShutdownTimeout)
	c.Leader.LeaseDuration = duration(s.Failover.LeaseDuration)
	c.Leader.RenewDeadline = duration(s.Failover.RenewDeadline)
	c.Leader.RetryPeriod = duration(s.Failover.RetryPeriod)
	c.Listen = fmt.Sprintf(":%d", metricsPort)
	return yaml.Marshal(c)
}

// duration reads an optional duration of the spec; the API server's
// defaults fill them in, so nil only comes from objects not read from it.
func duration(d *metav1.Duration) config.Duration {
	if d == nil {
		return 0
	}
	return config.Duration(d.Duration)
}

func configMap(p *docexecv1.DocExecutorPool, cfg []byte) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: configMapName(p.Name), Namespace: p.Namespace, Labels: poolLabels(p.Name)},
		Data:       map[string]string{"config.yaml": string(cfg)},
	}
}

func serviceAccount(p *docexecv1.DocExecutorPool) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: executorName(p.Name), Namespace: p.Namespace, Labels: poolLabels(p.Name)}}
}

// role lets the executors use their own partitions' Leases and nothing
// else; the operator creates the Leases.
func role(p *docexecv1.DocExecutorPool, partitions int32) *rbacv1.Role {
	names := make([]string, partitions)
	for i := range partitions {
		names[i] = partitionName(p.Name, i)
	}
	r := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: executorName(p.Name), Namespace: p.Namespace, Labels: poolLabels(p.Name)}}
	if partitions > 0 {
		r.Rules = []rbacv1.PolicyRule{{APIGroups: []string{coordinationv1.GroupName}, Resources: []string{"leases"},
			ResourceNames: names, Verbs: []string{"get", "update", "patch"}}}
	}
	return r
}

func roleBinding(p *docexecv1.DocExecutorPool) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: executorName(p.Name), Namespace: p.Namespace, Labels: poolLabels(p.Name)},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: executorName(p.Name)},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: executorName(p.Name), Namespace: p.Namespace}},
	}
}

// metricsService lists every executor pod of the pool for scraping.
func metricsService(p *docexecv1.DocExecutorPool) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: metricsServiceName(p.Name), Namespace: p.Namespace, Labels: poolLabels(p.Name)},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  poolLabels(p.Name),
			Ports:     []corev1.ServicePort{{Name: "metrics", Port: metricsPort, TargetPort: intstr.FromString("metrics")}},
		},
	}
}

func lease(p *docexecv1.DocExecutorPool, partition int32) *coordinationv1.Lease {
	return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: partitionName(p.Name, partition), Namespace: p.Namespace, Labels: partitionLabels(p.Name, partition)}}
}

func podDisruptionBudget(p *docexecv1.DocExecutorPool, partition int32) *policyv1.PodDisruptionBudget {
	// Keep one pod of the partition up; with a single replica that would
	// block every node drain, so then allow the disruption.
	minAvailable := intstr.FromInt32(1)
	if p.Spec.ReplicasPerPartition < 2 {
		minAvailable = intstr.FromInt32(0)
	}
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: partitionName(p.Name, partition), Namespace: p.Namespace, Labels: partitionLabels(p.Name, partition)},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &minAvailable,
			Selector:     &metav1.LabelSelector{MatchLabels: partitionLabels(p.Name, partition)},
		},
	}
}

// deployment runs one partition's replicas. A Deployment (not a
// StatefulSet): the replicas are interchangeable (the Lease, not the pod's
// name, says who leads), and a surge-first rolling update (maxSurge 1,
// maxUnavailable 0) never takes the partition's last ready pod.
func deployment(p *docexecv1.DocExecutorPool, partition int32, image, cfgHash string) *appsv1.Deployment {
	labels := partitionLabels(p.Name, partition)
	podLabels := map[string]string{}
	for k, v := range p.Spec.Pod.Labels {
		podLabels[k] = v
	}
	for k, v := range labels {
		podLabels[k] = v
	}
	annotations := map[string]string{AnnotationConfig: cfgHash}
	for k, v := range p.Spec.Pod.Annotations {
		annotations[k] = v
	}
	replicas := p.Spec.ReplicasPerPartition
	if p.Spec.Paused {
		replicas = 0
	}
	// Long enough for the last batch and sync, then the Lease release.
	grace := int64((time.Duration(duration(p.Spec.Failover.ShutdownTimeout))+time.Duration(duration(p.Spec.Failover.RenewDeadline)))/time.Second) + extraGraceSeconds
	affinity := p.Spec.Pod.Affinity
	if affinity == nil {
		affinity = spreadAcrossNodes(labels)
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: partitionName(p.Name, partition), Namespace: p.Namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxSurge: ptr.To(intstr.FromInt32(1)), MaxUnavailable: ptr.To(intstr.FromInt32(0)),
			}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: annotations},
				Spec: corev1.PodSpec{
					ServiceAccountName:            executorName(p.Name),
					TerminationGracePeriodSeconds: &grace,
					NodeSelector:                  p.Spec.Pod.NodeSelector,
					Tolerations:                   p.Spec.Pod.Tolerations,
					Affinity:                      affinity,
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To(ptr.Deref(p.Spec.Pod.RunAsUser, DefaultRunAsUser)),
						RunAsGroup:     ptr.To(ptr.Deref(p.Spec.Pod.RunAsGroup, DefaultRunAsUser)),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{executorContainer(p, partition, image)},
					Volumes:    volumes(p),
				},
			},
		},
	}
}

// spreadAcrossNodes prefers to put a partition's replicas on different
// nodes, so one node's loss leaves a standby.
func spreadAcrossNodes(labels map[string]string) *corev1.Affinity {
	return &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
			Weight: 100,
			PodAffinityTerm: corev1.PodAffinityTerm{
				TopologyKey:   corev1.LabelHostname,
				LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
			},
		}},
	}}
}

func executorContainer(p *docexecv1.DocExecutorPool, partition int32, image string) corev1.Container {
	env := []corev1.EnvVar{
		{Name: config.EnvName("partition"), Value: strconv.Itoa(int(partition))},
		// The replicas elect the partition's leader with its Lease.
		{Name: config.EnvName("leader.lease"), Value: partitionName(p.Name, partition)},
		{Name: config.EnvName("leader.namespace"), ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		{Name: config.EnvName("leader.identity"), ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: config.EnvName("postgres.dsn"), ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &p.Spec.Postgres.DSNSecretRef}},
	}
	if ref := p.Spec.Redis.PasswordSecretRef; ref != nil {
		env = append(env, corev1.EnvVar{Name: config.EnvName("redis.password"), ValueFrom: &corev1.EnvVarSource{SecretKeyRef: ref}})
	}
	if sasl := p.Spec.Kafka.SASL; sasl != nil {
		env = append(env, corev1.EnvVar{Name: config.EnvName("kafka.sasl.password"), ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &sasl.PasswordSecretRef}})
	}
	mounts := []corev1.VolumeMount{{Name: "config", MountPath: configFile, SubPath: "config.yaml", ReadOnly: true}}
	if kafkaTLSVolume(p) != nil {
		mounts = append(mounts, corev1.VolumeMount{Name: "kafka-tls", MountPath: tlsDir, ReadOnly: true})
	}
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("metrics")}},
			PeriodSeconds: 5, FailureThreshold: 3}
	}
	return corev1.Container{
		Name:           "executor",
		Image:          image,
		Args:           []string{"executor", "--config", configFile},
		Env:            env,
		Ports:          []corev1.ContainerPort{{Name: "metrics", ContainerPort: metricsPort}},
		Resources:      p.Spec.Pod.Resources,
		VolumeMounts:   mounts,
		LivenessProbe:  probe("/healthz"),
		ReadinessProbe: probe("/readyz"),
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			RunAsNonRoot:             ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
}

func volumes(p *docexecv1.DocExecutorPool) []corev1.Volume {
	v := []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: configMapName(p.Name)}}}}}
	if tls := kafkaTLSVolume(p); tls != nil {
		v = append(v, corev1.Volume{Name: "kafka-tls", VolumeSource: corev1.VolumeSource{Projected: tls}})
	}
	return v
}

// kafkaTLSVolume gathers the pool's TLS files from their Secrets into one
// directory, each key named (a missing key stops the pod from starting,
// saying which), and nothing else of those Secrets; nil when there are
// none.
func kafkaTLSVolume(p *docexecv1.DocExecutorPool) *corev1.ProjectedVolumeSource {
	tls := p.Spec.Kafka.TLS
	if tls == nil {
		return nil
	}
	var sources []corev1.VolumeProjection
	from := func(secret string, keys ...string) {
		items := make([]corev1.KeyToPath, len(keys))
		for i, k := range keys {
			items[i] = corev1.KeyToPath{Key: k, Path: k}
		}
		sources = append(sources, corev1.VolumeProjection{Secret: &corev1.SecretProjection{
			LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Items: items}})
	}
	if tls.SecretName != "" {
		from(tls.SecretName, caKey)
	}
	if tls.ClientCertSecretName != "" {
		from(tls.ClientCertSecretName, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	}
	if sources == nil {
		return nil
	}
	return &corev1.ProjectedVolumeSource{Sources: sources}
}

// consumerGroup is the group whose offsets a pool's executors commit.
func consumerGroup(p *docexecv1.DocExecutorPool) string {
	return config.Group(config.Identity(p.Namespace, p.Name))
}

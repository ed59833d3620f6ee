package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DocExecutorPoolSpec describes how one input topic is processed.
//
// +kubebuilder:validation:XValidation:rule="!has(self.failover) || !has(self.failover.renewDeadline) || !has(self.failover.leaseDuration) || duration(self.failover.renewDeadline) < duration(self.failover.leaseDuration)",message="failover.renewDeadline must be shorter than failover.leaseDuration"
// +kubebuilder:validation:XValidation:rule="!has(self.failover) || !has(self.failover.retryPeriod) || !has(self.failover.renewDeadline) || duration(self.failover.retryPeriod) < duration(self.failover.renewDeadline)",message="failover.retryPeriod must be shorter than failover.renewDeadline"
type DocExecutorPoolSpec struct {
	// Kafka says where updates come from and states go.
	Kafka KafkaSpec `json:"kafka"`

	// Partitions is how many partitions of the input topic to run, from 0.
	// Unset: every partition of the topic, followed as the topic grows.
	// +optional
	// +kubebuilder:validation:Minimum=1
	Partitions *int32 `json:"partitions,omitempty"`

	// ReplicasPerPartition is how many identical executor pods serve each
	// partition: one leader, the rest warm standbys.
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=9
	// +optional
	ReplicasPerPartition int32 `json:"replicasPerPartition,omitempty"`

	// Redis is the state cache.
	Redis RedisSpec `json:"redis"`

	// Postgres is the durable copy of the states.
	Postgres PostgresSpec `json:"postgres"`

	// Batch tunes processing batches.
	// +kubebuilder:default={}
	// +optional
	Batch BatchSpec `json:"batch,omitempty"`

	// Sync tunes the sync from Redis to PostgreSQL.
	// +kubebuilder:default={}
	// +optional
	Sync SyncSpec `json:"sync,omitempty"`

	// Failover tunes the leader election of each partition.
	// +kubebuilder:default={}
	// +optional
	Failover FailoverSpec `json:"failover,omitempty"`

	// Paused scales every partition to zero pods and keeps everything else.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// Image is the executor image; the operator's default when empty.
	// +optional
	Image string `json:"image,omitempty"`

	// Pod customises the executor pods.
	// +optional
	Pod PodOverrides `json:"pod,omitempty"`
}

// KafkaSpec says how to reach Kafka and which topics to use.
//
// +kubebuilder:validation:XValidation:rule="self.inputTopic != self.outputTopic",message="kafka.outputTopic must differ from kafka.inputTopic"
// +kubebuilder:validation:XValidation:rule="self.inputTopic != self.deadLetterTopic",message="kafka.deadLetterTopic must differ from kafka.inputTopic"
type KafkaSpec struct {
	// Brokers are host:port seeds.
	// +kubebuilder:validation:MinItems=1
	Brokers []string `json:"brokers"`
	// InputTopic carries the document updates, keyed by url.
	// +kubebuilder:validation:MinLength=1
	InputTopic string `json:"inputTopic"`
	// OutputTopic receives every changed state, same partition as its input.
	// +kubebuilder:validation:MinLength=1
	OutputTopic string `json:"outputTopic"`
	// DeadLetterTopic receives bad input with the reason in a header.
	// +kubebuilder:validation:MinLength=1
	DeadLetterTopic string `json:"deadLetterTopic"`
	// Format is the wire format of input and output.
	// +kubebuilder:validation:Enum=json;protobuf
	// +kubebuilder:default=json
	// +optional
	Format string `json:"format,omitempty"`
	// StartOffset is where a partition that never ran starts.
	// +kubebuilder:validation:Enum=earliest;latest
	// +kubebuilder:default=earliest
	// +optional
	StartOffset string `json:"startOffset,omitempty"`
	// Compression of the batches the executors produce. Batches (after
	// compression) never exceed the topics' max.message.bytes.
	// +kubebuilder:validation:Enum=none;gzip;snappy;lz4;zstd
	// +kubebuilder:default=lz4
	// +optional
	Compression string `json:"compression,omitempty"`
	// TLS encrypts connections to the brokers.
	// +optional
	TLS *KafkaTLS `json:"tls,omitempty"`
	// SASL authenticates to the brokers.
	// +optional
	SASL *KafkaSASL `json:"sasl,omitempty"`
}

// KafkaTLS configures TLS from Secrets in the pool's namespace. Executors
// mount their keys as files; the operator reads them to discover the
// input topic's partitions, so it needs to get Secrets.
type KafkaTLS struct {
	// SecretName names a Secret whose ca.crt is the CA that signed the
	// brokers. Empty: the system's roots.
	// +optional
	SecretName string `json:"secretName,omitempty"`
	// ClientCertSecretName names a Secret whose tls.crt and tls.key (the
	// keys of a kubernetes.io/tls Secret, as cert-manager writes them)
	// authenticate the executors and the operator to brokers that require
	// client certificates (mutual TLS). It may be the same Secret as
	// secretName. Empty: no client certificate.
	// +optional
	ClientCertSecretName string `json:"clientCertSecretName,omitempty"`
}

// KafkaSASL configures SASL authentication. The password reaches executors
// by environment from the Secret, never through the executor ConfigMap;
// the operator reads it from the Secret to discover partitions.
type KafkaSASL struct {
	// Mechanism is the SASL mechanism.
	// +kubebuilder:validation:Enum=PLAIN;SCRAM-SHA-256;SCRAM-SHA-512
	// +kubebuilder:default=PLAIN
	// +optional
	Mechanism string `json:"mechanism,omitempty"`
	// Username is the SASL user.
	// +kubebuilder:validation:MinLength=1
	Username string `json:"username"`
	// PasswordSecretRef selects the password in a Secret in the pool's
	// namespace.
	PasswordSecretRef corev1.SecretKeySelector `json:"passwordSecretRef"`
}

// RedisSpec says how to reach Redis.
type RedisSpec struct {
	// Addresses are host:port of a server, or seeds of a cluster. Redis must
	// not evict keys (maxmemory-policy noeviction).
	// +kubebuilder:validation:MinItems=1
	Addresses []string `json:"addresses"`
	// PasswordSecretRef selects the password in a Secret.
	// +optional
	PasswordSecretRef *corev1.SecretKeySelector `json:"passwordSecretRef,omitempty"`
	// CleanTTL lets synced states expire from Redis; unset or 0s keeps them.
	// Redis counts it in whole seconds.
	// +kubebuilder:validation:XValidation:rule="duration(self) == duration('0s') || duration(self) >= duration('1s')",message="redis.cleanTTL must be 0s (keep synced states) or at least 1s"
	// +optional
	CleanTTL *metav1.Duration `json:"cleanTTL,omitempty"`
}

// PostgresSpec says how to reach PostgreSQL.
type PostgresSpec struct {
	// DSNSecretRef selects the connection string in a Secret.
	DSNSecretRef corev1.SecretKeySelector `json:"dsnSecretRef"`
	// Table holds the documents.
	// +kubebuilder:default=documents
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_]{0,53}$`
	// +optional
	Table string `json:"table,omitempty"`
}

// BatchSpec tunes processing batches.
type BatchSpec struct {
	// Size is the most messages in one batch.
	// +kubebuilder:default=500
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	Size int32 `json:"size,omitempty"`
	// MaxBytes closes a batch at the message that brings its values to that
	// many bytes (so a batch holds at most MaxBytes plus one message): it
	// bounds the executor's memory when documents are large.
	// +kubebuilder:default=2097152
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxBytes int32 `json:"maxBytes,omitempty"`
	// MaxWait is the longest wait to fill a batch.
	// +kubebuilder:default="20ms"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="batch.maxWait must be positive"
	// +optional
	MaxWait *metav1.Duration `json:"maxWait,omitempty"`
}

// SyncSpec tunes the sync to PostgreSQL.
type SyncSpec struct {
	// Interval is the time between syncs.
	// +kubebuilder:default="1s"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="sync.interval must be positive"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// BatchSize is the states per PostgreSQL transaction.
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=1
	// +optional
	BatchSize int32 `json:"batchSize,omitempty"`
}

// FailoverSpec tunes each partition's leader election.
type FailoverSpec struct {
	// LeaseDuration is how long a standby waits after the leader's last
	// renewal before taking over. At least 2s: below, a busy node's
	// leader misses renewals and loses its Lease for nothing.
	// +kubebuilder:default="5s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('2s')",message="failover.leaseDuration must be at least 2s"
	// +optional
	LeaseDuration *metav1.Duration `json:"leaseDuration,omitempty"`
	// RenewDeadline is how long the leader keeps trying to renew before it
	// steps down. At least 1s.
	// +kubebuilder:default="3s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="failover.renewDeadline must be at least 1s"
	// +optional
	RenewDeadline *metav1.Duration `json:"renewDeadline,omitempty"`
	// RetryPeriod is the time between election attempts, and between the
	// leader's renewals (one API write each). At least 200ms.
	// +kubebuilder:default="1s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('200ms')",message="failover.retryPeriod must be at least 200ms"
	// +optional
	RetryPeriod *metav1.Duration `json:"retryPeriod,omitempty"`
	// ShutdownTimeout bounds the leader's last batch and sync on SIGTERM;
	// the pods' termination grace period is longer.
	// +kubebuilder:default="20s"
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="failover.shutdownTimeout must be positive"
	// +optional
	ShutdownTimeout *metav1.Duration `json:"shutdownTimeout,omitempty"`
}

// PodOverrides customise the executor pods.
type PodOverrides struct {
	// Resources of the executor container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// NodeSelector constrains the nodes the pods run on.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// Tolerations let the pods run on tainted nodes.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// Affinity replaces the default, which spreads a partition's replicas
	// across nodes.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
	// Labels are added to the pods.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations are added to the pods.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// RunAsUser is the uid the executor runs as (runAsNonRoot holds, so it
	// must not be 0). Unset: 65532, the nonroot user of the docexec image;
	// set it for an image whose user is a name or root.
	// +kubebuilder:validation:Minimum=1
	// +optional
	RunAsUser *int64 `json:"runAsUser,omitempty"`
	// RunAsGroup is the gid the executor runs as. Unset: 65532.
	// +kubebuilder:validation:Minimum=0
	// +optional
	RunAsGroup *int64 `json:"runAsGroup,omitempty"`
}

// PartitionStatus is what the operator observed of one partition.
type PartitionStatus struct {
	Partition int32 `json:"partition"`
	// ReadyReplicas counts the partition's ready pods.
	ReadyReplicas int32 `json:"readyReplicas"`
	// Leader is the pod holding the partition's Lease.
	// +optional
	Leader string `json:"leader,omitempty"`
	// Lag is the leader's consumer lag, when it reports one.
	// +optional
	Lag *int64 `json:"lag,omitempty"`
}

// DocExecutorPoolStatus is rebuilt from what the operator observes.
type DocExecutorPoolStatus struct {
	// ObservedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready, Progressing, Degraded.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Partitions is how many partitions the pool runs.
	// +optional
	Partitions int32 `json:"partitions"`
	// ReadyPartitions counts partitions with a ready pod.
	// +optional
	ReadyPartitions int32 `json:"readyPartitions"`
	// Leaders counts partitions whose Lease has a holder.
	// +optional
	Leaders int32 `json:"leaders"`
	// MaxLag is the largest consumer lag of a partition, in messages, when
	// known.
	// +optional
	MaxLag *int64 `json:"maxLag,omitempty"`
	// TopicPartitions is the input topic's partition count, when known.
	// +optional
	TopicPartitions *int32 `json:"topicPartitions,omitempty"`
	// Replicas and ReadyReplicas count executor pods over all partitions.
	// +optional
	Replicas int32 `json:"replicas"`
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`
	// PartitionStatuses lists each partition.
	// +listType=map
	// +listMapKey=partition
	// +optional
	PartitionStatuses []PartitionStatus `json:"partitionStatuses,omitempty"`
}

// DocExecutorPool runs the executors of one input topic: per partition a
// set of identical pods, one leader and warm standbys.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=dxp,categories=docexec
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 50 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="the pool's name must be a DNS label of at most 50 characters starting with a letter: it names Services, Leases and labels"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Partitions",type=integer,JSONPath=`.status.partitions`
// +kubebuilder:printcolumn:name="Ready-Partitions",type=integer,JSONPath=`.status.readyPartitions`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Leaders",type=integer,JSONPath=`.status.leaders`,priority=1
// +kubebuilder:printcolumn:name="Max-Lag",type=integer,JSONPath=`.status.maxLag`,priority=1
// +kubebuilder:printcolumn:name="Paused",type=boolean,JSONPath=`.spec.paused`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type DocExecutorPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   DocExecutorPoolSpec   `json:"spec,omitempty"`
	Status DocExecutorPoolStatus `json:"status,omitempty"`
}

// DocExecutorPoolList is a list of pools.
//
// +kubebuilder:object:root=true
type DocExecutorPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DocExecutorPool `json:"items"`
}

func init() {
	SchemeBuilder.Register(&DocExecutorPool{}, &DocExecutorPoolList{})
}

package testenv

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
)

// Pool returns a DocExecutorPool with the smallest spec the API server
// accepts (placeholder Kafka, Redis and PostgreSQL addresses), changed by
// each of mutate in turn.
func Pool(name, namespace string, mutate ...func(*docexecv1.DocExecutorPoolSpec)) *docexecv1.DocExecutorPool {
	p := &docexecv1.DocExecutorPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: docexecv1.DocExecutorPoolSpec{
			Kafka:    docexecv1.KafkaSpec{Brokers: []string{"kafka:9092"}, InputTopic: "updates", OutputTopic: "states", DeadLetterTopic: "dead"},
			Redis:    docexecv1.RedisSpec{Addresses: []string{"redis:6379"}},
			Postgres: docexecv1.PostgresSpec{DSNSecretRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "pg"}, Key: "dsn"}},
		},
	}
	for _, f := range mutate {
		if f != nil {
			f(&p.Spec)
		}
	}
	return p
}

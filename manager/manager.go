// Package manager is `docexec manager`: the operator process. It runs the
// DocExecutorPool reconciler under controller-runtime with leader election
// for itself, Prometheus metrics and health probes.
package manager

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/go-logr/logr"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	docexecv1 "github.com/docexec/docexec/api/v1alpha1"
	"github.com/docexec/docexec/controllers"
	"github.com/docexec/docexec/internal/cli"
	"github.com/docexec/docexec/internal/memlimit"
)

// DefaultImage is the executor image of pools that name none, unless
// --executor-image says otherwise.
const DefaultImage = "docexec/docexec:latest"

// Scheme knows the built-in kinds and DocExecutorPool.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(docexecv1.AddToScheme(s))
	return s
}

// Main runs the operator until ctx ends and returns the exit code.
func Main(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.SetOutput(stderr)
	metricsAddr := fs.String("metrics-bind-address", ":8443", "address of /metrics (0 disables)")
	metricsSecure := fs.Bool("metrics-secure", true, "serve /metrics over HTTPS to callers the API server authenticates and authorizes (get on the non-resource URL /metrics); false: plain HTTP to anyone")
	metricsCertDir := fs.String("metrics-cert-dir", "", "directory of tls.crt and tls.key for /metrics (default: a self-signed certificate)")
	probeAddr := fs.String("health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	leaderElect := fs.Bool("leader-elect", true, "elect one active operator among replicas")
	electionNamespace := fs.String("leader-election-namespace", "", "namespace of the leader election Lease (default: the pod's own, or out of a cluster the kubeconfig context's)")
	image := fs.String("executor-image", DefaultImage, "executor image of pools that name none")
	watch := fs.String("watch-namespaces", "", "comma-separated namespaces whose pools to manage (default: every namespace); the operator then needs rights in those only")
	pprofAddr := fs.String("pprof-bind-address", "0", "address of /debug/pprof (0 disables)")
	opts := zap.Options{}
	opts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return cli.Usage(stderr, "manager", err)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts), zap.WriteTo(stderr)))
	log := ctrl.Log.WithName("manager")
	log.Info("Go heap's soft memory limit", "limit", memlimit.Set())
	stopping := func() bool { return ctx.Err() != nil }

	cfg, err := ctrl.GetConfig()
	if err != nil {
		log.Error(err, "Found no Kubernetes configuration")
		return cli.ExitFailed
	}
	if *leaderElect && *electionNamespace == "" {
		if *electionNamespace, err = outOfClusterNamespace(); err != nil {
			log.Error(err, "Found no namespace for the leader election Lease: set --leader-election-namespace")
			return cli.ExitFailed
		}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  Scheme(),
		Logger:                  quietStop(ctrl.Log, stopping),
		Metrics:                 metricsOptions(*metricsAddr, *metricsSecure, *metricsCertDir),
		HealthProbeBindAddress:  *probeAddr,
		LeaderElection:          *leaderElect,
		LeaderElectionID:        "docexec-operator.docexec.io",
		LeaderElectionNamespace: *electionNamespace,
		// Hand the Lease over on a graceful stop (a rollout, a drain) rather
		// than make the next operator wait for it to expire. Safe: Main
		// returns and the process exits as soon as the manager has stopped.
		LeaderElectionReleaseOnCancel: true,
		PprofBindAddress:              *pprofAddr,
		Cache: cache.Options{
			DefaultNamespaces: namespaces(*watch),
			// The operator reads only executor pods, and only their
			// metadata: cache that, not every pod.
			ByObject: map[client.Object]cache.ByObject{
				controllers.PodMetadata(): {Label: labels.SelectorFromSet(labels.Set{"app.kubernetes.io/name": controllers.ExecutorAppName})},
			},
			// Nothing reads managedFields, and with 10,000 partitions they
			// are a good part of what the cache would hold. Updates omit
			// them, so the API server keeps them as they are.
			DefaultTransform: cache.TransformStripManagedFields(),
		},
	})
	if err != nil {
		log.Error(err, "Failed to create the manager")
		return cli.ExitFailed
	}
	r := &controllers.DocExecutorPoolReconciler{
		Client: mgr.GetClient(), Scheme: mgr.GetScheme(), Recorder: mgr.GetEventRecorderFor("docexec-operator"),
		DefaultImage: *image, Topics: &controllers.KafkaTopics{Secrets: mgr.GetAPIReader()},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		log.Error(err, "Failed to set up the DocExecutorPool controller")
		return cli.ExitFailed
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "Failed to add the health check")
		return cli.ExitFailed
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		log.Error(err, "Failed to add the ready check")
		return cli.ExitFailed
	}
	log.Info("Operator started", "executorImage", *image)
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "Operator stopped")
		return cli.ExitFailed
	}
	return cli.ExitOK
}

// stopNoiseErr is what controller-runtime (v0.25) may log at error level
// on a graceful stop of an elected manager: cancelling the election runs
// its OnStoppedLeading, whose "leader election lost" reaches the stop
// procedure's error log (kubernetes-sigs/controller-runtime#3535).
const stopNoiseErr = "leader election lost"

// quietStop passes every log line on, but once we are stopping it turns
// the errors that our own stop causes into debug lines: that one, and any
// caused by cancelling (client-go's election logs "Error retrieving lease
// lock: context canceled" when the stop cuts a renewal short). A lease lost
// while running still ends mgr.Start with an error, which Main logs.
func quietStop(base logr.Logger, stopping func() bool) logr.Logger {
	sink := base.GetSink()
	if cd, ok := sink.(logr.CallDepthLogSink); ok {
		sink = cd.WithCallDepth(1) // report our caller's caller, not us
	}
	return logr.New(quietSink{LogSink: sink, stopping: stopping})
}

type quietSink struct {
	logr.LogSink
	stopping func() bool
}

func (s quietSink) Error(err error, msg string, kv ...any) {
	if err != nil && (errors.Is(err, context.Canceled) || err.Error() == stopNoiseErr) && s.stopping() {
		if s.LogSink.Enabled(1) {
			s.LogSink.Info(1, msg, append(kv, "err", err.Error())...)
		}
		return
	}
	s.LogSink.Error(err, msg, kv...)
}

func (s quietSink) WithValues(kv ...any) logr.LogSink {
	return quietSink{LogSink: s.LogSink.WithValues(kv...), stopping: s.stopping}
}

func (s quietSink) WithName(name string) logr.LogSink {
	return quietSink{LogSink: s.LogSink.WithName(name), stopping: s.stopping}
}

// inClusterNamespaceFile is where a pod finds its namespace.
const inClusterNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// outOfClusterNamespace is where the operator's Lease goes when none is
// named: in a pod "" (controller-runtime reads the pod's own), on a laptop
// the kubeconfig context's namespace ("default" when it names none), the
// way kubectl picks one.
func outOfClusterNamespace() (string, error) {
	if _, err := os.Stat(inClusterNamespaceFile); err == nil {
		return "", nil
	}
	ns, _, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{}).Namespace()
	if err != nil {
		return "", fmt.Errorf("read the kubeconfig's namespace: %w", err)
	}
	return ns, nil
}

// metricsOptions serves /metrics at addr. Secure, it is HTTPS, and only to
// callers the API server authenticates and authorizes (authorizedOnly), as
// kubebuilder's scaffolds do: what the operator reports (pools, partitions,
// errors) is for the monitoring system, not for every pod of the cluster.
func metricsOptions(addr string, secure bool, certDir string) metricsserver.Options {
	o := metricsserver.Options{BindAddress: addr}
	if secure {
		o.SecureServing, o.CertDir = true, certDir
		o.FilterProvider = authorizedOnly
	}
	return o
}

// namespaces is the cache's view of --watch-namespaces: nil for every
// namespace.
func namespaces(list string) map[string]cache.Config {
	if strings.TrimSpace(list) == "" {
		return nil
	}
	m := map[string]cache.Config{}
	for _, ns := range strings.Split(list, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			m[ns] = cache.Config{}
		}
	}
	return m
}

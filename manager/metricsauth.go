package manager

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// authorizedOnly is the secure /metrics filter: a request must carry a
// bearer token that the API server authenticates (TokenReview) and whose
// user may get the request's non-resource URL (SubjectAccessReview), the
// way kube-apiserver's own /metrics is guarded. controller-runtime ships
// such a filter, but it brings k8s.io/apiserver and with it gRPC and
// OpenTelemetry into the one binary that executors run too; two reviews
// and a cache are all it takes.
func authorizedOnly(c *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	cs, err := kubernetes.NewForConfigAndClient(c, httpClient)
	if err != nil {
		return nil, err
	}
	a := &reviewer{client: cs, decisions: map[string]decision{}}
	return func(log logr.Logger, next http.Handler) (http.Handler, error) {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || token == "" {
				http.Error(w, "Unauthorized: a bearer token is required", http.StatusUnauthorized)
				return
			}
			status, err := a.review(r.Context(), token, strings.ToLower(r.Method), r.URL.Path)
			if err != nil {
				log.Error(err, "Could not review a metrics request")
				http.Error(w, "the API server could not review the request", http.StatusInternalServerError)
				return
			}
			if status != http.StatusOK {
				http.Error(w, http.StatusText(status), status)
				return
			}
			next.ServeHTTP(w, r)
		}), nil
	}, nil
}

// decisionTTL is how long a review is reused: a scraper asks every 15-60 s,
// and each review would be two API requests.
const decisionTTL = time.Minute

// reviewer asks the API server about tokens and remembers its answers.
type reviewer struct {
	client    kubernetes.Interface
	mu        sync.Mutex
	decisions map[string]decision // by token, verb and path
}

type decision struct {
	status int
	until  time.Time
}

// review returns 200 for a token whose user may verb path, 401 for a token
// the API server does not know, 403 for a user it does not allow.
func (a *reviewer) review(ctx context.Context, token, verb, path string) (int, error) {
	key := verb + " " + path + " " + token
	a.mu.Lock()
	d, ok := a.decisions[key]
	a.mu.Unlock()
	if ok && time.Now().Before(d.until) {
		return d.status, nil
	}
	status, err := a.ask(ctx, token, verb, path)
	if err != nil {
		return 0, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.decisions) >= 1000 { // tokens rotate: forget them all now and then
		clear(a.decisions)
	}
	a.decisions[key] = decision{status: status, until: time.Now().Add(decisionTTL)}
	return status, nil
}

func (a *reviewer) ask(ctx context.Context, token, verb, path string) (int, error) {
	tr, err := a.client.AuthenticationV1().TokenReviews().Create(ctx,
		&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return 0, err
	}
	if !tr.Status.Authenticated {
		return http.StatusUnauthorized, nil
	}
	u := tr.Status.User
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
		NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
	}}, metav1.CreateOptions{})
	if err != nil {
		return 0, err
	}
	if !sar.Status.Allowed {
		return http.StatusForbidden, nil
	}
	return http.StatusOK, nil
}

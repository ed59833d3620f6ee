package executor_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/docexec/docexec/executor"
)

func TestProfilesAreServedOnlyWhenAskedFor(t *testing.T) {
	for _, profiles := range []bool{false, true} {
		srv := httptest.NewServer(executor.Handler(prometheus.NewRegistry(), func() []string { return nil }, profiles))
		resp, err := http.Get(srv.URL + "/debug/pprof/heap")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		srv.Close()
		if want := map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[profiles]; resp.StatusCode != want {
			t.Fatalf("profiles %v: /debug/pprof/heap answered %d, want %d", profiles, resp.StatusCode, want)
		}
	}
}

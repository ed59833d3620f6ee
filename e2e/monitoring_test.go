package e2e

import (
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// everyMonitoringOption turns on every part of the chart's monitoring.
var everyMonitoringOption = []string{
	"--set", "monitoring.serviceMonitor.enabled=true",
	"--set", "monitoring.prometheusRule.enabled=true",
	"--set", "monitoring.dashboard.enabled=true",
	"--set", "monitoring.labels.release=prometheus",
}

// TestTheShippedMonitoringUsesOnlyMetricsThatAreServed renders the chart
// with every monitoring option on (TestHelmInstallsTheChart lints it),
// parses its alerts with Prometheus' own rule parser and its dashboard's
// queries with its PromQL parser, then scrapes a running executor and a
// running operator: every metric an alert or a panel names must be served
// by one of them.
func TestTheShippedMonitoringUsesOnlyMetricsThatAreServed(t *testing.T) {
	f := newFleet(t, servers{})
	c := f.c
	manifest := c.run("helm", append([]string{"template", "t", "charts/docexec", "--namespace", "docexec"}, everyMonitoringOption...)...)
	rules, dashboard, monitors := monitoringObjects(t, manifest)
	if monitors != 2 {
		t.Fatalf("%d ServiceMonitors, want the operator's and the executors'", monitors)
	}
	promql := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.Parse(rules, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("the PrometheusRule does not parse: %v\n%s", errs, rules)
	}
	used := map[string][]string{} // metric → where
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			for _, name := range metricNames(t, promql, r.Expr) {
				used[name] = append(used[name], "alert "+r.Alert)
			}
		}
	}
	if len(used) == 0 {
		t.Fatal("the alerts name no metric")
	}
	for title, expr := range dashboardQueries(t, dashboard) {
		for _, name := range metricNames(t, promql, expr) {
			used[name] = append(used[name], "panel "+title)
		}
	}

	// An executor that processed a stream, and an operator running a pool.
	executor := f.start()
	f.leader("")
	f.produce(500)
	f.waitCommitted()
	c.run("kubectl", "apply", "-k", "config/crd")
	c.established("crd/docexecutorpools.docexec.io")
	operator := freeAddr(t)
	c.startOperator(c.kubeconfig, "--metrics-bind-address="+operator, "--metrics-secure=false")
	c.run("kubectl", "create", "namespace", "demo")
	c.run("kubectl", "apply", "-n", "demo", "-k", "config/samples")
	c.run("kubectl", "patch", "dxp", "docs", "-n", "demo", "--type", "merge", "-p", `{"spec":{"partitions":2}}`)
	var served map[string]bool
	c.eventually("the operator serves the metrics of pool docs", func() bool {
		served = mustScrape(t, "http://"+operator+"/metrics").names()
		return served["docexec_pool_partition_led"] && served["controller_runtime_reconcile_time_seconds_bucket"]
	})
	for name := range mustScrape(t, "http://"+f.listen[executor]+"/metrics").names() {
		served[name] = true
	}
	var missing []string
	for name, where := range used {
		if !served[name] {
			missing = append(missing, name+" (in "+strings.Join(slices.Compact(where), ", ")+")")
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Fatalf("metrics that neither the executor nor the operator serves:\n%s", strings.Join(missing, "\n"))
	}
}

// monitoringObjects returns, from a rendered chart, the PrometheusRule's
// groups (as a Prometheus rule file), the dashboard's JSON and how many
// ServiceMonitors there are.
func monitoringObjects(t *testing.T, manifest string) (rules, dashboard []byte, serviceMonitors int) {
	t.Helper()
	for _, doc := range strings.Split(manifest, "\n---") {
		var obj struct {
			Kind string            `json:"kind"`
			Spec json.RawMessage   `json:"spec"`
			Data map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("a document of the chart: %v\n%s", err, doc)
		}
		switch {
		case obj.Kind == "PrometheusRule":
			r, err := yaml.JSONToYAML(obj.Spec)
			if err != nil {
				t.Fatal(err)
			}
			rules = r
		case obj.Kind == "ServiceMonitor":
			serviceMonitors++
		case obj.Kind == "ConfigMap" && obj.Data["docexec.json"] != "":
			dashboard = []byte(obj.Data["docexec.json"])
		}
	}
	if rules == nil || dashboard == nil {
		t.Fatalf("the chart with every monitoring option on rendered no PrometheusRule or no dashboard:\n%s", manifest)
	}
	return rules, dashboard, serviceMonitors
}

// grafanaVariables are the dashboard's variables that stand for a range,
// replaced by one to parse its queries as PromQL.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h")

// dashboardQueries returns the queries of the dashboard's panels, by title.
func dashboardQueries(t *testing.T, dashboard []byte) map[string]string {
	t.Helper()
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dashboard, &d); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	queries := map[string]string{}
	for _, p := range d.Panels {
		for i, target := range p.Targets {
			queries[p.Title+" #"+string(rune('A'+i))] = grafanaVariables.Replace(target.Expr)
		}
	}
	if len(queries) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	return queries
}

// metricNames returns the metrics expr selects.
func metricNames(t *testing.T, p parser.Parser, expr string) []string {
	t.Helper()
	e, err := p.ParseExpr(expr)
	if err != nil {
		t.Fatalf("%q does not parse: %v", expr, err)
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if v, ok := n.(*parser.VectorSelector); ok {
			names = append(names, v.Name)
		}
		return nil
	})
	return names
}

// names returns the metric names of scraped series.
func (m metrics) names() map[string]bool {
	names := map[string]bool{}
	for series := range m {
		name, _, _ := strings.Cut(series, "{")
		names[name] = true
	}
	return names
}

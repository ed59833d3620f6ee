// Command apidocs writes docs/api.md, the reference of DocExecutorPool's
// fields, from the generated CRD, and of its conditions, their reasons and
// its events' reasons, from the constants of api/v1alpha1/conditions.go
// and their comments (so the reference cannot drift from the API):
//
//	go run ./hack/apidocs config/crd/bases/docexec.io_docexecutorpools.yaml api/v1alpha1/conditions.go > docs/api.md
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"sort"
	"strconv"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// opaque are Kubernetes types documented by Kubernetes: listed, not expanded.
var opaque = map[string]string{
	"spec.pod.affinity":    "[Affinity](https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#scheduling)",
	"spec.pod.resources":   "[ResourceRequirements](https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#resources)",
	"spec.pod.tolerations": "[Toleration](https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#scheduling) list",
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: apidocs CRD.yaml conditions.go")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	v := crd.Spec.Versions[0]
	fmt.Printf("# %s reference (%s/%s)\n\n", crd.Spec.Names.Kind, crd.Spec.Group, v.Name)
	fmt.Printf("Generated from the CRD by `make docs`; do not edit. Short name: `%s`.\n\n", strings.Join(crd.Spec.Names.ShortNames, "`, `"))
	for _, rule := range v.Schema.OpenAPIV3Schema.XValidations {
		fmt.Printf("- Rule: %s\n", rule.Message)
	}
	fmt.Println()
	root := v.Schema.OpenAPIV3Schema.Properties
	for _, section := range []string{"spec", "status"} {
		s := root[section]
		fmt.Printf("## %s\n\n", section)
		for _, rule := range s.XValidations {
			fmt.Printf("- Rule: %s\n", rule.Message)
		}
		fmt.Printf("\n| field | type | default | description |\n|---|---|---|---|\n")
		walk(section, s)
		fmt.Println()
	}
	if err := constants(os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// constants documents each const block of file: its comment's first
// sentence is a heading, the rest an introduction, and each constant a row
// of its value and its comment (less its name).
func constants(file string) error {
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ParseComments)
	if err != nil {
		return err
	}
	fmt.Printf("## conditions and events\n\n")
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST || gd.Doc == nil {
			continue
		}
		heading, rest, _ := strings.Cut(oneLine(gd.Doc.Text()), ". ")
		fmt.Printf("### %s\n\n", strings.TrimSuffix(heading, "."))
		if rest != "" {
			fmt.Printf("%s\n\n", rest)
		}
		fmt.Printf("| value | meaning |\n|---|---|\n")
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			lit, ok := vs.Values[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return fmt.Errorf("%s: %s is not a string literal", file, vs.Names[0])
			}
			value, err := strconv.Unquote(lit.Value)
			if err != nil {
				return err
			}
			meaning := strings.TrimPrefix(oneLine(vs.Doc.Text()), vs.Names[0].Name+" ")
			fmt.Printf("| `%s` | %s |\n", value, strings.ReplaceAll(meaning, "|", "\\|"))
		}
		fmt.Println()
	}
	return nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func walk(path string, s apiextensionsv1.JSONSchemaProps) {
	names := make([]string, 0, len(s.Properties))
	for name := range s.Properties {
		names = append(names, name)
	}
	sort.Strings(names)
	required := map[string]bool{}
	for _, r := range s.Required {
		required[r] = true
	}
	for _, name := range names {
		p := s.Properties[name]
		field := path + "." + name
		typ := p.Type
		if link, ok := opaque[field]; ok {
			typ = link
		} else if p.Type == "array" && p.Items != nil && p.Items.Schema != nil {
			typ = p.Items.Schema.Type + " list"
		}
		if p.Enum != nil {
			var values []string
			for _, e := range p.Enum {
				values = append(values, strings.Trim(string(e.Raw), `"`))
			}
			typ += " (" + strings.Join(values, ", ") + ")"
		}
		if required[name] {
			typ += ", required"
		}
		def := ""
		if p.Default != nil {
			def = "`" + string(p.Default.Raw) + "`"
		}
		desc := strings.Join(strings.Fields(p.Description), " ")
		for _, rule := range p.XValidations {
			desc += " Rule: " + rule.Message + "."
		}
		if p.Minimum != nil || p.Maximum != nil {
			desc += fmt.Sprintf(" Range: %s.", bounds(p))
		}
		fmt.Printf("| `%s` | %s | %s | %s |\n", field, typ, def, strings.ReplaceAll(desc, "|", "\\|"))
		if _, ok := opaque[field]; ok {
			continue
		}
		if p.Type == "object" && len(p.Properties) > 0 {
			walk(field, p)
		}
		if p.Type == "array" && p.Items != nil && p.Items.Schema != nil && len(p.Items.Schema.Properties) > 0 {
			walk(field+"[]", *p.Items.Schema)
		}
	}
}

func bounds(p apiextensionsv1.JSONSchemaProps) string {
	lo, hi := "", ""
	if p.Minimum != nil {
		lo = fmt.Sprint(*p.Minimum)
	}
	if p.Maximum != nil {
		hi = fmt.Sprint(*p.Maximum)
	}
	return lo + ".." + hi
}

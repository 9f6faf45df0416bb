// promql-names parses every PromQL expression of a Grafana dashboard (each "expr" field) or of
// a Prometheus rule file (each "expr" field of a rule) and prints the metric names they select,
// one per line, sorted. It fails, naming the expression, on the first one that does not parse.
// Grafana's interval variables are replaced by a duration first, as Grafana does before a query.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: promql-names FILE.json|FILE.yaml...")
		os.Exit(2)
	}
	names := map[string]bool{}
	for _, path := range os.Args[1:] {
		exprs, err := expressions(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(1)
		}
		if len(exprs) == 0 {
			fmt.Fprintf(os.Stderr, "%s: no expressions found\n", path)
			os.Exit(1)
		}
		for _, e := range exprs {
			if err := collect(e, names); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %q does not parse: %v\n", path, e, err)
				os.Exit(1)
			}
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		fmt.Println(n)
	}
}

// expressions reads the file as JSON or YAML and returns the string value of every "expr" key.
func expressions(path string) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc any
	if strings.HasSuffix(path, ".json") {
		err = json.Unmarshal(raw, &doc)
	} else {
		err = yaml.Unmarshal(raw, &doc)
	}
	if err != nil {
		return nil, err
	}
	var out []string
	walk(doc, &out)
	return out, nil
}

func walk(node any, out *[]string) {
	switch n := node.(type) {
	case map[string]any:
		for k, v := range n {
			if s, ok := v.(string); ok && k == "expr" {
				*out = append(*out, s)
				continue
			}
			walk(v, out)
		}
	case []any:
		for _, v := range n {
			walk(v, out)
		}
	}
}

var grafanaIntervals = strings.NewReplacer(
	"$__rate_interval", "5m", "${__rate_interval}", "5m",
	"$__interval", "1m", "${__interval}", "1m",
	"$__range", "1h", "${__range}", "1h",
)

func collect(expr string, names map[string]bool) error {
	parsed, err := parser.NewParser(parser.Options{}).ParseExpr(grafanaIntervals.Replace(expr))
	if err != nil {
		return err
	}
	parser.Inspect(parsed, func(node parser.Node, _ []parser.Node) error {
		if v, ok := node.(*parser.VectorSelector); ok {
			if v.Name == "" {
				err = fmt.Errorf("a selector without a metric name: %s", v)
			}
			names[v.Name] = true
		}
		return nil
	})
	return err
}

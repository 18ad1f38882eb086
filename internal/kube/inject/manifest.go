package inject

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	yamlutil "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// templatePaths is where each kind keeps the Pod (template) to change.
var templatePaths = map[string][]string{
	"Pod":                   nil,
	"Deployment":            {"spec", "template"},
	"StatefulSet":           {"spec", "template"},
	"DaemonSet":             {"spec", "template"},
	"ReplicaSet":            {"spec", "template"},
	"ReplicationController": {"spec", "template"},
	"Job":                   {"spec", "template"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template"},
}

// Result counts what a manifest run changed.
type Result struct {
	Changed, Unchanged int
}

// Manifests rewrites every Pod and Pod template in the YAML (or JSON)
// stream in with change (Config.Patch to inject, UninjectPatch to remove),
// writing every document to out in order: documents without Pods are
// copied as they are, List items are walked. A document that cannot be
// changed fails the whole run, naming it.
func Manifests(in io.Reader, out io.Writer, change func(*corev1.Pod) ([]Op, error)) (Result, error) {
	var res Result
	r := yamlutil.NewYAMLReader(bufio.NewReader(in))
	first := true
	for n := 1; ; n++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("document %d: %w", n, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			return res, fmt.Errorf("document %d: %w", n, err)
		}
		var doc map[string]any
		if err := json.Unmarshal(js, &doc); err != nil || doc == nil {
			return res, fmt.Errorf("document %d: not an object", n)
		}
		changed, err := changeObject(doc, change, &res)
		if err != nil {
			return res, fmt.Errorf("document %d (%v %v): %w", n, doc["kind"], name(doc), err)
		}
		if !first {
			io.WriteString(out, "---\n")
		}
		first = false
		if !changed {
			out.Write(bytes.TrimLeft(raw, "\n"))
			if !bytes.HasSuffix(raw, []byte("\n")) {
				io.WriteString(out, "\n")
			}
			continue
		}
		y, err := yaml.Marshal(doc)
		if err != nil {
			return res, err
		}
		out.Write(y)
	}
}

func name(doc map[string]any) any {
	md, _ := doc["metadata"].(map[string]any)
	return md["name"]
}

// changeObject changes doc's Pod (template), or each item of a List.
func changeObject(doc map[string]any, change func(*corev1.Pod) ([]Op, error), res *Result) (bool, error) {
	kind, _ := doc["kind"].(string)
	if items, ok := doc["items"].([]any); ok && kind == "List" {
		some := false
		for i, it := range items {
			obj, ok := it.(map[string]any)
			if !ok {
				continue
			}
			changed, err := changeObject(obj, change, res)
			if err != nil {
				return false, fmt.Errorf("item %d: %w", i, err)
			}
			some = some || changed
		}
		return some, nil
	}
	path, ok := templatePaths[kind]
	if !ok {
		return false, nil
	}
	tmpl := doc
	for _, k := range path {
		next, ok := tmpl[k].(map[string]any)
		if !ok {
			return false, fmt.Errorf("no %v", path)
		}
		tmpl = next
	}
	for _, k := range []string{"metadata", "spec"} {
		if _, ok := tmpl[k].(map[string]any); !ok {
			tmpl[k] = map[string]any{}
		}
	}
	js, _ := json.Marshal(map[string]any{"metadata": tmpl["metadata"], "spec": tmpl["spec"]})
	var pod corev1.Pod
	if err := json.Unmarshal(js, &pod); err != nil {
		return false, err
	}
	ops, err := change(&pod)
	if err != nil {
		return false, err
	}
	if len(ops) == 0 {
		res.Unchanged++
		return false, nil
	}
	if err := Apply(tmpl, ops); err != nil {
		return false, err
	}
	res.Changed++
	return true, nil
}

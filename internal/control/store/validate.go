package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/util/validation"
)

// MaxAnnotationBytes bounds an object's annotations, keys and values
// together (Kubernetes' limit).
const MaxAnnotationBytes = 256 << 10

// Validate runs the generic checks and then kinds.Check, which may fill
// defaults in r.Spec. Every failure is (or wraps) a *ValidationError.
func Validate(r *Resource, kinds Kinds) error {
	var errs []error
	add := func(field string, reasons ...string) {
		if len(reasons) > 0 {
			errs = append(errs, &ValidationError{Field: field, Reason: strings.Join(reasons, "; ")})
		}
	}
	if r.APIVersion == "" {
		add("apiVersion", "required")
	}
	switch {
	case r.Kind == "":
		add("kind", "required")
	case strings.Contains(r.Kind, "/"):
		add("kind", "must not contain '/'")
	}
	m := &r.Metadata
	if m.Name == "" {
		add("metadata.name", "required")
	} else {
		add("metadata.name", validation.IsDNS1123Subdomain(m.Name)...)
	}
	switch {
	case r.Kind == "":
	case !kinds.Known(r.Kind): // not "not namespaced": say which kinds there are
		var ve *ValidationError
		switch err := kinds.Check(r); {
		case errors.As(err, &ve):
			errs = append(errs, err)
		case err != nil:
			errs = append(errs, &ValidationError{Reason: err.Error()})
		default:
			add("kind", "unknown")
		}
	case kinds.Namespaced(r.Kind) && m.Namespace == "":
		add("metadata.namespace", "required for namespaced kind "+r.Kind)
	case kinds.Namespaced(r.Kind):
		add("metadata.namespace", validation.IsDNS1123Label(m.Namespace)...)
	case m.Namespace != "":
		add("metadata.namespace", "must be empty: kind "+r.Kind+" is not namespaced")
	}
	for _, k := range slices.Sorted(maps.Keys(m.Labels)) {
		add(fmt.Sprintf("metadata.labels[%q]", k), content.IsLabelKey(k)...)
		add(fmt.Sprintf("metadata.labels[%q]", k), content.IsLabelValue(m.Labels[k])...)
	}
	size := 0
	for _, k := range slices.Sorted(maps.Keys(m.Annotations)) {
		add(fmt.Sprintf("metadata.annotations[%q]", k), content.IsLabelKey(k)...)
		size += len(k) + len(m.Annotations[k])
	}
	if size > MaxAnnotationBytes {
		add("metadata.annotations", fmt.Sprintf("%d bytes in all: must be at most %d KiB", size, MaxAnnotationBytes>>10))
	}
	if len(r.Spec) > 0 && !json.Valid(r.Spec) {
		add("spec", "must be valid JSON")
	}
	if len(r.Status) > 0 && !json.Valid(r.Status) {
		add("status", "must be valid JSON")
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := kinds.Check(r); err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) {
			return err
		}
		return &ValidationError{Reason: err.Error()}
	}
	if len(r.Spec) > 0 && !json.Valid(r.Spec) {
		return &ValidationError{Field: "spec", Reason: "must be valid JSON after defaulting"}
	}
	return nil
}

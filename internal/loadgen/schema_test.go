package loadgen

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// validate checks doc against the subset of JSON Schema report.schema.json
// uses: type, required, properties, additionalProperties, items, enum,
// const, minimum, maximum and local $ref. It returns one line per problem.
func validate(root, schema map[string]any, doc any, path string) []string {
	if ref, ok := schema["$ref"].(string); ok {
		target := any(root)
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			m, _ := target.(map[string]any)
			target = m[part]
		}
		s, ok := target.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: $ref %s resolves to nothing", path, ref)}
		}
		return validate(root, s, doc, path)
	}
	var errs []string
	if typ, ok := schema["type"].(string); ok && !hasType(doc, typ) {
		return []string{fmt.Sprintf("%s: %v is not of type %s", path, doc, typ)}
	}
	if c, ok := schema["const"]; ok && c != doc {
		errs = append(errs, fmt.Sprintf("%s: %v, want const %v", path, doc, c))
	}
	if enum, ok := schema["enum"].([]any); ok && !slices.Contains(enum, doc) {
		errs = append(errs, fmt.Sprintf("%s: %v not in %v", path, doc, enum))
	}
	if n, ok := doc.(float64); ok {
		if lo, ok := schema["minimum"].(float64); ok && n < lo {
			errs = append(errs, fmt.Sprintf("%s: %v < minimum %v", path, n, lo))
		}
		if hi, ok := schema["maximum"].(float64); ok && n > hi {
			errs = append(errs, fmt.Sprintf("%s: %v > maximum %v", path, n, hi))
		}
	}
	if obj, ok := doc.(map[string]any); ok {
		for _, r := range asSlice(schema["required"]) {
			if _, ok := obj[r.(string)]; !ok {
				errs = append(errs, fmt.Sprintf("%s: lacks required %q", path, r))
			}
		}
		props, _ := schema["properties"].(map[string]any)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if ps, ok := props[k].(map[string]any); ok {
				errs = append(errs, validate(root, ps, obj[k], path+"."+k)...)
			} else if ap, ok := schema["additionalProperties"].(map[string]any); ok {
				errs = append(errs, validate(root, ap, obj[k], path+"."+k)...)
			} else if props != nil {
				errs = append(errs, fmt.Sprintf("%s: property %q is not in the schema", path, k))
			}
		}
	}
	if arr, ok := doc.([]any); ok {
		if items, ok := schema["items"].(map[string]any); ok {
			for i, v := range arr {
				errs = append(errs, validate(root, items, v, fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	}
	return errs
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func hasType(v any, typ string) bool {
	switch typ {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		n, ok := v.(float64)
		return ok && n == math.Trunc(n)
	case "boolean":
		_, ok := v.(bool)
		return ok
	}
	return false
}

package deploy

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Pod is what the StatefulSet gives the container of one of its pods, with
// the environment and the arguments resolved as the kubelet resolves them.
type Pod struct {
	Name, Namespace string
	Container       *corev1.Container
	Command, Args   []string
	// Env in the manifest's order, values resolved.
	Env []corev1.EnvVar
}

// Pod renders the pod of ordinal i in the kustomization's namespace:
// its name is <statefulset>-<i>, field references and resource
// references are resolved, and $(VAR) is expanded in env values (from the
// variables before it), command and args, with Kubernetes' rules.
func (k *Kubernetes) Pod(i int) (*Pod, error) {
	sts := k.StatefulSet
	if sts == nil || len(sts.Spec.Template.Spec.Containers) != 1 {
		return nil, fmt.Errorf("want a StatefulSet with one container")
	}
	c := &sts.Spec.Template.Spec.Containers[0]
	p := &Pod{Name: fmt.Sprintf("%s-%d", sts.Name, i), Namespace: k.Kustomization.Namespace, Container: c}
	vars := map[string]string{}
	for _, e := range c.Env {
		v, err := p.envValue(e, vars)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		vars[e.Name] = v
		p.Env = append(p.Env, corev1.EnvVar{Name: e.Name, Value: v})
	}
	for _, s := range c.Command {
		p.Command = append(p.Command, Expand(s, vars))
	}
	for _, s := range c.Args {
		p.Args = append(p.Args, Expand(s, vars))
	}
	return p, nil
}

func (p *Pod) envValue(e corev1.EnvVar, vars map[string]string) (string, error) {
	if e.ValueFrom == nil {
		return Expand(e.Value, vars), nil
	}
	switch {
	case e.ValueFrom.FieldRef != nil:
		switch e.ValueFrom.FieldRef.FieldPath {
		case "metadata.name":
			return p.Name, nil
		case "metadata.namespace":
			return p.Namespace, nil
		}
		return "", fmt.Errorf("field %s is not resolved here", e.ValueFrom.FieldRef.FieldPath)
	case e.ValueFrom.ResourceFieldRef != nil:
		ref := e.ValueFrom.ResourceFieldRef
		res := p.Container.Resources.Limits
		name, ok := strings.CutPrefix(ref.Resource, "limits.")
		if !ok {
			res = p.Container.Resources.Requests
			name, ok = strings.CutPrefix(ref.Resource, "requests.")
		}
		q, set := res[corev1.ResourceName(name)]
		if !ok || !set {
			return "", fmt.Errorf("resource %s is not set on the container", ref.Resource)
		}
		divisor := int64(1)
		if !ref.Divisor.IsZero() {
			divisor = ref.Divisor.Value()
		}
		// The kubelet rounds up to a whole number of divisors.
		return strconv.FormatInt((q.Value()+divisor-1)/divisor, 10), nil
	}
	return "", fmt.Errorf("valueFrom is not resolved here")
}

// Expand replaces $(NAME) in s by vars[NAME] as Kubernetes does: an
// unknown name stays as written, and $$ is a literal $.
func Expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
				name := s[i+2 : i+2+end]
				if v, ok := vars[name]; ok {
					b.WriteString(v)
				} else {
					b.WriteString(s[i : i+3+end])
				}
				i += 2 + end
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Package deploy holds leasekeeper's deployment files, the systemd unit
// (systemd/) and the Kubernetes manifests (kubernetes/), and reads them
// into their types, strictly, for the tests that check them: the
// manifests' own test here, and integration's test that starts three
// nodes with exactly what the StatefulSet gives its pods.
package deploy

import (
	"embed"
	"fmt"
	"path"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

//go:embed kubernetes/*.yaml systemd/lease-node.service systemd/lease-node.env
var files embed.FS

// File returns one of the deployment files, by its path under deploy/.
func File(name string) ([]byte, error) { return files.ReadFile(name) }

// Kustomization is the part of kustomize's Kustomization that
// kubernetes/kustomization.yaml uses; a field it does not know fails the
// decoding, so a typo cannot pass unseen.
type Kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels"`
	Resources []string `json:"resources"`
	Images    []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// Kubernetes is deploy/kubernetes, decoded.
type Kubernetes struct {
	Kustomization Kustomization
	Namespace     *corev1.Namespace
	// Services by name.
	Services            map[string]*corev1.Service
	StatefulSet         *appsv1.StatefulSet
	PodDisruptionBudget *policyv1.PodDisruptionBudget
	// Files are the manifest files other than the kustomization, sorted.
	Files []string
}

// LoadKubernetes decodes every manifest of deploy/kubernetes into its
// Kubernetes type. Unknown or duplicate fields, kinds other than those
// expected and a second object of a kind meant once are errors.
func LoadKubernetes() (*Kubernetes, error) {
	entries, err := files.ReadDir("kubernetes")
	if err != nil {
		return nil, err
	}
	k := &Kubernetes{Services: map[string]*corev1.Service{}}
	for _, e := range entries {
		name := path.Join("kubernetes", e.Name())
		data, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		if e.Name() == "kustomization.yaml" {
			if err := yaml.UnmarshalStrict(data, &k.Kustomization); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			continue
		}
		k.Files = append(k.Files, e.Name())
		if strings.Contains(string(data), "\n---") {
			return nil, fmt.Errorf("%s: one object per file", name)
		}
		if err := k.decode(name, data); err != nil {
			return nil, err
		}
	}
	sort.Strings(k.Files)
	return k, nil
}

func (k *Kubernetes) decode(name string, data []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(data, &tm); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	var obj any
	var seen bool
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		seen, k.Namespace = k.Namespace != nil, &corev1.Namespace{}
		obj = k.Namespace
	case "v1 Service":
		obj = &corev1.Service{}
	case "apps/v1 StatefulSet":
		seen, k.StatefulSet = k.StatefulSet != nil, &appsv1.StatefulSet{}
		obj = k.StatefulSet
	case "policy/v1 PodDisruptionBudget":
		seen, k.PodDisruptionBudget = k.PodDisruptionBudget != nil, &policyv1.PodDisruptionBudget{}
		obj = k.PodDisruptionBudget
	default:
		return fmt.Errorf("%s: unexpected %s %s", name, tm.APIVersion, tm.Kind)
	}
	if seen {
		return fmt.Errorf("%s: a second %s", name, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(data, obj); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if svc, ok := obj.(*corev1.Service); ok {
		if _, dup := k.Services[svc.Name]; dup {
			return fmt.Errorf("%s: a second Service %s", name, svc.Name)
		}
		k.Services[svc.Name] = svc
	}
	return nil
}

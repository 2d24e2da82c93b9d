package deploy

import (
	"fmt"
	"net"
	"path"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func load(t *testing.T) *Kubernetes {
	t.Helper()
	k, err := LoadKubernetes()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestManifestsDecodeStrictly: every file decodes into its Kubernetes
// type, and the decoding does fail on an unknown field, a misspelt one and
// a value of the wrong type.
func TestManifestsDecodeStrictly(t *testing.T) {
	k := load(t)
	if k.Namespace == nil || k.StatefulSet == nil || k.PodDisruptionBudget == nil || len(k.Services) != 2 {
		t.Fatalf("decoded namespace %v, statefulset %v, pdb %v, %d services; want one each and 2 services",
			k.Namespace != nil, k.StatefulSet != nil, k.PodDisruptionBudget != nil, len(k.Services))
	}
	good, err := File("kubernetes/statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]string{
		"unknown field":  strings.Replace(string(good), "  replicas: 3\n", "  replicas: 3\n  replica: 3\n", 1),
		"misspelt probe": strings.Replace(string(good), "readinessProbe:", "readynessProbe:", 1),
		"wrong type":     strings.Replace(string(good), "replicas: 3", "replicas: three", 1),
	} {
		if bad == string(good) {
			t.Fatalf("%s: the edit did not apply", name)
		}
		k2 := &Kubernetes{Services: map[string]*corev1.Service{}}
		if err := k2.decode(name, []byte(bad)); err == nil {
			t.Errorf("%s: decoded without an error", name)
		}
	}
}

// TestKustomizationListsEveryManifest: kubectl apply -k applies every file,
// each once, and the image it renames is the container's.
func TestKustomizationListsEveryManifest(t *testing.T) {
	k := load(t)
	kz := k.Kustomization
	if kz.APIVersion != "kustomize.config.k8s.io/v1beta1" || kz.Kind != "Kustomization" {
		t.Errorf("kustomization is %s %s", kz.APIVersion, kz.Kind)
	}
	res := slices.Clone(kz.Resources)
	slices.Sort(res)
	if !slices.Equal(res, k.Files) {
		t.Errorf("resources %v, want the files %v", res, k.Files)
	}
	if kz.Namespace == "" || k.Namespace.Name != kz.Namespace {
		t.Errorf("kustomization namespace %q, Namespace object %q: want equal and set", kz.Namespace, k.Namespace.Name)
	}
	image := k.StatefulSet.Spec.Template.Spec.Containers[0].Image
	if len(kz.Images) != 1 || kz.Images[0].Name != image {
		t.Errorf("images %+v do not rename the container's image %q", kz.Images, image)
	}
}

// flagValue returns the value of --name=value (or "true" for a bare
// --name) in args.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if a == "--"+name {
			return "true", true
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func containerPort(t *testing.T, c *corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container has no port %q", name)
	return 0
}

// TestStatefulSetWiring: the parts of the manifests that must agree do.
func TestStatefulSetWiring(t *testing.T) {
	k := load(t)
	sts := k.StatefulSet
	spec := sts.Spec.Template.Spec
	c := &spec.Containers[0]
	podLabels := labels.Set(sts.Spec.Template.Labels)

	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", sts.Spec.Replicas)
	}
	if sts.Spec.PodManagementPolicy != "Parallel" {
		t.Errorf("podManagementPolicy %q: a new cluster's first pod is never ready alone, so OrderedReady never starts the second", sts.Spec.PodManagementPolicy)
	}
	sel, err := metav1.LabelSelectorAsSelector(sts.Spec.Selector)
	if err != nil || !sel.Matches(podLabels) {
		t.Errorf("statefulset selector %v does not select its pods %v", sts.Spec.Selector, podLabels)
	}

	peers := k.Services[sts.Spec.ServiceName]
	if peers == nil || peers.Spec.ClusterIP != corev1.ClusterIPNone || !peers.Spec.PublishNotReadyAddresses {
		t.Fatalf("serviceName %q: want a headless Service publishing not-ready addresses", sts.Spec.ServiceName)
	}
	for name, svc := range k.Services {
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) || len(svc.Spec.Selector) == 0 {
			t.Errorf("service %s selector %v does not select the pods", name, svc.Spec.Selector)
		}
		for _, p := range svc.Spec.Ports {
			if port := containerPort(t, c, p.TargetPort.String()); port != p.Port {
				t.Errorf("service %s port %s: %d, container port %d", name, p.Name, p.Port, port)
			}
		}
	}

	// The addresses the node binds are the container's ports.
	pod, err := k.Pod(1)
	if err != nil {
		t.Fatal(err)
	}
	fqdn := fmt.Sprintf("%s.%s.%s.svc.cluster.local", pod.Name, sts.Spec.ServiceName, pod.Namespace)
	for flag, port := range map[string]string{"grpc-addr": "grpc", "raft-addr": "raft", "http-addr": "http"} {
		v, ok := flagValue(pod.Args, flag)
		host, p, err := net.SplitHostPort(v)
		if !ok || err != nil {
			t.Errorf("--%s %q: want host:port", flag, v)
			continue
		}
		if want := fmt.Sprint(containerPort(t, c, port)); p != want {
			t.Errorf("--%s port %s, container port %s is %s", flag, p, port, want)
		}
		if flag != "http-addr" && host != fqdn {
			t.Errorf("--%s host %s, want the pod's DNS name %s (peers reach it there)", flag, host, fqdn)
		}
	}
	if id, _ := flagValue(pod.Args, "id"); id != pod.Name {
		t.Errorf("--id %q, want the pod name %q", id, pod.Name)
	}
	var wantPeers []string
	for i := range int(*sts.Spec.Replicas) {
		name := fmt.Sprintf("%s-%d", sts.Name, i)
		wantPeers = append(wantPeers, fmt.Sprintf("%s=%s.%s.%s.svc.cluster.local:%d", name, name, sts.Spec.ServiceName, pod.Namespace, containerPort(t, c, "raft")))
	}
	if peersArg, _ := flagValue(pod.Args, "peers"); peersArg != strings.Join(wantPeers, ",") {
		t.Errorf("--peers %q, want every replica: %q", peersArg, strings.Join(wantPeers, ","))
	}
	if _, ok := flagValue(pod.Args, "bootstrap"); !ok {
		t.Error("no --bootstrap: a new cluster would never start")
	}
	for _, a := range append(slices.Clone(pod.Args), pod.Command...) {
		if strings.Contains(a, "$(") {
			t.Errorf("argument %q keeps an unresolved $(VAR)", a)
		}
	}
	for _, e := range pod.Env {
		if strings.Contains(e.Value, "$(") {
			t.Errorf("env %s=%q keeps an unresolved $(VAR)", e.Name, e.Value)
		}
	}

	// Probes: the paths lease-node serves on --http-addr.
	for name, probe := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
		if probe == nil || probe.HTTPGet == nil {
			t.Errorf("probe for %s: want an httpGet", name)
			continue
		}
		if probe.HTTPGet.Path != name || probe.HTTPGet.Port.String() != "http" {
			t.Errorf("probe %s:%s, want %s on the http port", probe.HTTPGet.Path, probe.HTTPGet.Port.String(), name)
		}
	}

	// Mounts: the data dir is the persistent volume, TLS files come
	// from the Secret's keys.
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("%d volume claim templates, want 1", len(sts.Spec.VolumeClaimTemplates))
	}
	claim := sts.Spec.VolumeClaimTemplates[0]
	if dir, _ := flagValue(pod.Args, "data-dir"); mounts[claim.Name].MountPath != dir {
		t.Errorf("--data-dir %q, the persistent volume %s is mounted at %q", dir, claim.Name, mounts[claim.Name].MountPath)
	}
	var secret *corev1.SecretVolumeSource
	for _, v := range spec.Volumes {
		if v.Name == "tls" {
			secret = v.Secret
		}
	}
	if secret == nil || secret.SecretName == "" {
		t.Fatal("no tls volume from a Secret")
	}
	for flag, key := range map[string]string{"tls-cert": "tls.crt", "tls-key": "tls.key", "tls-ca": "ca.crt"} {
		if v, _ := flagValue(pod.Args, flag); v != path.Join(mounts["tls"].MountPath, key) {
			t.Errorf("--%s %q, want the Secret's %s under %s", flag, v, key, mounts["tls"].MountPath)
		}
	}

	// Anti-affinity keeps two nodes off one machine; the budget lets one
	// go at a time.
	aa := spec.Affinity.PodAntiAffinity
	if aa == nil || len(aa.RequiredDuringSchedulingIgnoredDuringExecution) == 0 {
		t.Fatal("no required pod anti-affinity")
	}
	term := aa.RequiredDuringSchedulingIgnoredDuringExecution[0]
	if s, err := metav1.LabelSelectorAsSelector(term.LabelSelector); err != nil || term.TopologyKey != "kubernetes.io/hostname" || !s.Matches(podLabels) {
		t.Errorf("anti-affinity %+v: want the pods kept apart by hostname", term)
	}
	pdb := k.PodDisruptionBudget.Spec
	if s, err := metav1.LabelSelectorAsSelector(pdb.Selector); err != nil || !s.Matches(podLabels) || pdb.MaxUnavailable == nil || pdb.MaxUnavailable.IntValue() != 1 {
		t.Errorf("pod disruption budget %+v: want maxUnavailable 1 over the pods", pdb)
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "x", "B": "y"}
	for in, want := range map[string]string{
		"$(A).$(B)": "x.y", "$(C)": "$(C)", "$$(A)": "$(A)", "a$": "a$", "$(A": "$(A", "$A": "$A", "": "",
	} {
		if got := Expand(in, vars); got != want {
			t.Errorf("Expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPodResolvesReferences(t *testing.T) {
	k := load(t)
	pod, err := k.Pod(2)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range pod.Env {
		got[e.Name] = e.Value
	}
	want := map[string]string{
		"POD_NAME": "leasekeeper-2", "POD_NAMESPACE": "leasekeeper",
		"POD_FQDN":                "leasekeeper-2.leasekeeper-peers.leasekeeper.svc.cluster.local",
		"LEASE_NODE_MEMORY_LIMIT": fmt.Sprint(pod.Container.Resources.Limits.Memory().Value()),
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %q, want %q", name, got[name], v)
		}
	}
}

package deploy_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ollama/ollama/envconfig"
	"github.com/ollamamax/ollamamax/pkg/job"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// The KEDA and Prometheus operator objects are decoded into these local
// structs, strictly, with the fields their CRDs have that the manifests may
// use: KEDA's ScaledObject and TriggerAuthentication (keda.sh/v1alpha1,
// KEDA 2.15 and later), the Prometheus operator's ServiceMonitor. A field
// these lack is a typo or a field this test does not check yet.

type scaledObject struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		ScaleTargetRef struct {
			APIVersion             string `json:"apiVersion,omitempty"`
			Kind                   string `json:"kind,omitempty"`
			Name                   string `json:"name"`
			EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
		} `json:"scaleTargetRef"`
		PollingInterval       *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod        *int32 `json:"cooldownPeriod,omitempty"`
		InitialCooldownPeriod *int32 `json:"initialCooldownPeriod,omitempty"`
		IdleReplicaCount      *int32 `json:"idleReplicaCount,omitempty"`
		MinReplicaCount       *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount       *int32 `json:"maxReplicaCount,omitempty"`
		Fallback              *struct {
			FailureThreshold int32  `json:"failureThreshold"`
			Replicas         int32  `json:"replicas"`
			Behavior         string `json:"behavior,omitempty"`
		} `json:"fallback,omitempty"`
		Advanced *struct {
			RestoreToOriginalReplicaCount bool `json:"restoreToOriginalReplicaCount,omitempty"`
			HorizontalPodAutoscalerConfig *struct {
				Name     string                                         `json:"name,omitempty"`
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
			ScalingModifiers *struct {
				Formula          string `json:"formula"`
				Target           string `json:"target"`
				ActivationTarget string `json:"activationTarget,omitempty"`
				MetricType       string `json:"metricType,omitempty"`
			} `json:"scalingModifiers,omitempty"`
		} `json:"advanced,omitempty"`
		Triggers []trigger `json:"triggers"`
	} `json:"spec"`
}

type trigger struct {
	Type              string            `json:"type"`
	Name              string            `json:"name,omitempty"`
	Metadata          map[string]string `json:"metadata"`
	UseCachedMetrics  bool              `json:"useCachedMetrics,omitempty"`
	MetricType        string            `json:"metricType,omitempty"`
	AuthenticationRef *struct {
		Name string `json:"name"`
		Kind string `json:"kind,omitempty"`
	} `json:"authenticationRef,omitempty"`
}

// jetStreamMetadata is every metadata key of KEDA's nats-jetstream scaler
// (pkg/scalers/nats_jetstream_scaler.go, KEDA 2.17 and later): a key it
// does not read is a typo.
var jetStreamMetadata = map[string]bool{
	"natsServerMonitoringEndpoint": true, "account": true, "accountID": true, "stream": true, "consumer": true,
	"lagThreshold": true, "activationLagThreshold": true, "useHttps": true,
}

type triggerAuthentication struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef,omitempty"`
		Env []struct {
			Parameter     string `json:"parameter"`
			Name          string `json:"name"`
			ContainerName string `json:"containerName,omitempty"`
		} `json:"env,omitempty"`
	} `json:"spec"`
}

type serviceMonitor struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path,omitempty"`
			Interval string `json:"interval,omitempty"`
			Scheme   string `json:"scheme,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// kustomization is the part of kustomize's Kustomization the manifests use.
type kustomization struct {
	metav1.TypeMeta `json:",inline"`
	Namespace       string   `json:"namespace,omitempty"`
	Resources       []string `json:"resources,omitempty"`
	Patches         []struct {
		Path   string `json:"path"`
		Target *struct {
			Group   string `json:"group,omitempty"`
			Version string `json:"version,omitempty"`
			Kind    string `json:"kind,omitempty"`
			Name    string `json:"name,omitempty"`
		} `json:"target,omitempty"`
	} `json:"patches,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images,omitempty"`
}

// natsValues is the part of the NATS chart's values (chart 2.14.2,
// helm/charts/nats/values.yaml of nats-io/k8s) that k8s/nats/values.yaml
// sets, by the chart's key names. Helm ignores a key its chart does not
// have, so a misspelt one would silently fall back to the default.
type natsValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool `json:"enabled"`
			Replicas int  `json:"replicas"`
		} `json:"cluster"`
		JetStream struct {
			Enabled   bool `json:"enabled"`
			FileStore struct {
				Enabled bool   `json:"enabled"`
				Dir     string `json:"dir"`
				PVC     struct {
					Enabled bool   `json:"enabled"`
					Size    string `json:"size"`
				} `json:"pvc"`
			} `json:"fileStore"`
			Merge map[string]any `json:"merge"`
		} `json:"jetstream"`
		Leafnodes struct {
			Enabled bool `json:"enabled"`
			Port    int  `json:"port"`
		} `json:"leafnodes"`
		Monitor struct {
			Enabled bool `json:"enabled"`
			Port    int  `json:"port"`
		} `json:"monitor"`
		Resolver struct {
			Enabled bool   `json:"enabled"`
			Dir     string `json:"dir"`
			PVC     struct {
				Enabled bool   `json:"enabled"`
				Size    string `json:"size"`
			} `json:"pvc"`
			Merge map[string]any `json:"merge"`
		} `json:"resolver"`
		Merge map[string]any `json:"merge"`
	} `json:"config"`
	PodTemplate struct {
		TopologySpreadConstraints map[string]corev1.TopologySpreadConstraint `json:"topologySpreadConstraints"`
	} `json:"podTemplate"`
	NatsBox struct {
		Enabled bool `json:"enabled"`
	} `json:"natsBox"`
}

// The names the chart gives a release named nats, which the manifests use:
// the client service, the headless service (pod DNS for the scaler) and the
// client port.
const (
	natsRelease  = "nats"
	natsHeadless = natsRelease + "-headless"
	natsPort     = 4222
)

// object is one decoded manifest.
type object struct {
	kind, name string
	obj        any
}

// objects is what one kustomization renders, by kind.
type objects struct {
	namespace    string
	statefulSets []*appsv1.StatefulSet
	services     []*corev1.Service
	pdbs         []*policyv1.PodDisruptionBudget
	scaled       []*scaledObject
	triggerAuths []*triggerAuthentication
	monitors     []*serviceMonitor
	all          []object
}

// decodeObject decodes one YAML document strictly into the type its
// apiVersion and kind name.
func decodeObject(doc []byte) (object, error) {
	var head metav1.TypeMeta
	var meta struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return object{}, err
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return object{}, err
	}
	var into any
	switch head.APIVersion + " " + head.Kind {
	case "apps/v1 StatefulSet":
		into = &appsv1.StatefulSet{}
	case "apps/v1 Deployment":
		into = &appsv1.Deployment{}
	case "v1 Service":
		into = &corev1.Service{}
	case "v1 ConfigMap":
		into = &corev1.ConfigMap{}
	case "policy/v1 PodDisruptionBudget":
		into = &policyv1.PodDisruptionBudget{}
	case "keda.sh/v1alpha1 ScaledObject":
		into = &scaledObject{}
	case "keda.sh/v1alpha1 TriggerAuthentication":
		into = &triggerAuthentication{}
	case "monitoring.coreos.com/v1 ServiceMonitor":
		into = &serviceMonitor{}
	default:
		return object{}, fmt.Errorf("no type for apiVersion %q kind %q", head.APIVersion, head.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		return object{}, fmt.Errorf("%s %s: %w", head.Kind, meta.Metadata.Name, err)
	}
	if meta.Metadata.Name == "" {
		return object{}, fmt.Errorf("%s without a name", head.Kind)
	}
	return object{kind: head.Kind, name: meta.Metadata.Name, obj: into}, nil
}

// splitDocs splits a YAML stream on its "---" lines, dropping empty documents.
func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	for doc := range strings.SplitSeq("\n"+string(data), "\n---") {
		if i := strings.IndexByte(doc, '\n'); i >= 0 && strings.TrimSpace(doc[:i]) == "" {
			doc = doc[i+1:]
		}
		if strings.TrimSpace(stripComments(doc)) != "" {
			docs = append(docs, []byte(doc))
		}
	}
	return docs
}

func stripComments(doc string) string {
	var b strings.Builder
	for l := range strings.SplitSeq(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// render returns the objects of the kustomization in dir: as kubectl
// kustomize renders them where kubectl is installed, else (the base only)
// its resources read as they are, with its namespace.
func render(t *testing.T, dir string) *objects {
	t.Helper()
	k := readKustomization(t, dir)
	var data []byte
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		var stderr bytes.Buffer
		c := exec.Command(kubectl, "kustomize", dir)
		c.Stderr = &stderr
		if data, err = c.Output(); err != nil {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
		}
	} else {
		for _, r := range k.Resources {
			if st, err := os.Stat(filepath.Join(dir, r)); err == nil && st.IsDir() {
				t.Skipf("kubectl is not installed, and %s builds on %s: only the base is checked without it", dir, r)
			}
			b, err := os.ReadFile(filepath.Join(dir, r))
			if err != nil {
				t.Fatal(err)
			}
			data = append(append(data, "\n---\n"...), b...)
		}
	}
	o := &objects{namespace: k.Namespace}
	for _, doc := range splitDocs(data) {
		obj, err := decodeObject(doc)
		if err != nil {
			t.Errorf("%s: %v", dir, err)
			continue
		}
		o.all = append(o.all, obj)
		switch v := obj.obj.(type) {
		case *appsv1.StatefulSet:
			o.statefulSets = append(o.statefulSets, v)
			if o.namespace == "" {
				o.namespace = v.Namespace
			}
		case *corev1.Service:
			o.services = append(o.services, v)
		case *policyv1.PodDisruptionBudget:
			o.pdbs = append(o.pdbs, v)
		case *scaledObject:
			o.scaled = append(o.scaled, v)
		case *triggerAuthentication:
			o.triggerAuths = append(o.triggerAuths, v)
		case *serviceMonitor:
			o.monitors = append(o.monitors, v)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return o
}

func readKustomization(t *testing.T, dir string) kustomization {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	return k
}

// kustomizations are the directories under k8s/ with a kustomization.yaml.
func kustomizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir("k8s", func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "kustomization.yaml" {
			dirs = append(dirs, filepath.Dir(path))
		}
		return err
	})
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no kustomizations under k8s/: %v", err)
	}
	return dirs
}

// TestKustomizationsListEveryFile checks that each kustomization lists every
// YAML file beside it, as a resource or a patch, and that everything it
// lists exists: a manifest left out would never be applied.
func TestKustomizationsListEveryFile(t *testing.T) {
	for _, dir := range kustomizations(t) {
		t.Run(dir, func(t *testing.T) {
			k := readKustomization(t, dir)
			if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
				t.Errorf("apiVersion %q kind %q, want kustomize.config.k8s.io/v1beta1 Kustomization", k.APIVersion, k.Kind)
			}
			listed := map[string]bool{}
			for _, r := range k.Resources {
				listed[r] = true
			}
			for _, p := range k.Patches {
				listed[p.Path] = true
			}
			for r := range listed {
				if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
					t.Errorf("lists %s: %v", r, err)
				}
			}
			files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range files {
				if name := filepath.Base(f); name != "kustomization.yaml" && !listed[name] {
					t.Errorf("%s is not listed in its kustomization.yaml", name)
				}
			}
		})
	}
}

// pod is a workload's pod template with the workload's name and kind.
type pod struct {
	owner string
	spec  *corev1.PodSpec
	meta  *metav1.ObjectMeta
}

func (o *objects) pods() []pod {
	var ps []pod
	for _, s := range o.statefulSets {
		ps = append(ps, pod{"StatefulSet " + s.Name, &s.Spec.Template.Spec, &s.Spec.Template.ObjectMeta})
	}
	return ps
}

// containers are the pod's containers and its init containers, sidecars
// included.
func (p pod) containers() []*corev1.Container {
	var cs []*corev1.Container
	for i := range p.spec.InitContainers {
		cs = append(cs, &p.spec.InitContainers[i])
	}
	for i := range p.spec.Containers {
		cs = append(cs, &p.spec.Containers[i])
	}
	return cs
}

// port finds the container port that a probe or service names.
func (p pod) port(ref intstr.IntOrString) *corev1.ContainerPort {
	for _, c := range p.containers() {
		for i, cp := range c.Ports {
			if ref.Type == intstr.String && cp.Name == ref.StrVal || ref.Type == intstr.Int && cp.ContainerPort == ref.IntVal {
				return &c.Ports[i]
			}
		}
	}
	return nil
}

func (o *objects) selected(t *testing.T, sel *metav1.LabelSelector) []pod {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	var ps []pod
	for _, p := range o.pods() {
		if !s.Empty() && s.Matches(labels.Set(p.meta.Labels)) {
			ps = append(ps, p)
		}
	}
	return ps
}

// ourBinary is the OllamaMax binary a container runs, or "".
func ourBinary(c *corev1.Container) string {
	if len(c.Command) == 0 {
		return ""
	}
	switch b := filepath.Base(c.Command[0]); b {
	case "dispatcher", "worker", "ollamaq":
		return b
	}
	return ""
}

// envRef matches the $(NAME) references Kubernetes expands in args and env.
var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// shellRef matches the $NAME references of a shell command line.
var shellRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)

func env(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// listenPort is the port of a host:port address.
func listenPort(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return int32(n)
}

// ollamaVersion is the version of the Ollama module in go.mod, whose API
// the simulator and the wire formats follow.
func ollamaVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/ollama/ollama v(\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no github.com/ollama/ollama in go.mod")
	}
	return string(m[1])
}

// The addresses each binary serves probes and scrapes on, by the variable
// that sets them.
var listenVars = map[string][]string{
	"dispatcher": {"OLLAMAMAX_LISTEN", "OLLAMAMAX_METRICS_LISTEN"},
	"worker":     {"OLLAMAMAX_WORKER_LISTEN"},
}

// The probe paths of the binaries' own HTTP servers.
var probePaths = map[string]map[string]bool{
	"liveness":  {"/healthz": true},
	"startup":   {"/healthz": true},
	"readiness": {"/readyz": true},
}

// TestManifests decodes every object that the kustomizations under k8s/
// render strictly into the Kubernetes API types (the KEDA and Prometheus
// operator ones into local structs), and checks what the cluster would
// only find out at run time: flags and variables the binaries do not know,
// probes on ports or paths they do not serve, services whose targetPort is
// no container port, selectors that select nothing, a ScaledObject whose
// consumers are not the ones the workers create for the models they pull.
func TestManifests(t *testing.T) {
	type binary struct {
		flags map[string]bool
		text  string
	}
	bins := map[string]binary{}
	knownOllama := envconfig.AsMap()
	docs, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	values := readNATSValues(t)

	for _, dir := range kustomizations(t) {
		t.Run(dir, func(t *testing.T) {
			o := render(t, dir)
			if o.namespace == "" {
				t.Error("no namespace")
			}
			secrets := map[string]bool{}
			for _, p := range o.pods() {
				for _, c := range p.containers() {
					name := p.owner + " " + c.Name
					for _, e := range c.Env {
						if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
							secrets[e.ValueFrom.SecretKeyRef.Name] = true
						}
					}
					refs := map[string]bool{}
					for _, s := range append(append(slices.Clone(c.Args), c.Command...), envValues(c)...) {
						for _, m := range envRef.FindAllStringSubmatch(s, -1) {
							refs[m[1]] = true
						}
					}
					if ourBinary(c) == "" && c.Image != "" && !strings.HasPrefix(c.Image, "ollama/ollama:") {
						t.Errorf("%s: image %s is neither OllamaMax nor Ollama", name, c.Image)
					}
					switch bin := ourBinary(c); {
					case bin != "":
						b, ok := bins[bin]
						if !ok {
							b.flags, b.text = help(t, bin)
							bins[bin] = b
						}
						for i := 0; i < len(c.Args); i++ {
							a := c.Args[i]
							if !strings.HasPrefix(a, "-") {
								t.Errorf("%s: argument %q is not a flag", name, a)
								continue
							}
							flag, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
							if !b.flags[flag] {
								t.Errorf("%s: %s does not know %s", name, bin, a)
							}
							if !hasValue && i+1 < len(c.Args) && !strings.HasPrefix(c.Args[i+1], "-") {
								i++ // --flag value
							}
						}
						for _, e := range c.Env {
							if !refs[e.Name] && !strings.Contains(b.text, e.Name) {
								t.Errorf("%s: env %s: %s --help does not mention it, nor does the container refer to it", name, e.Name, bin)
							}
						}
						checkProbes(t, name, p, c, bin)
						if u := env(c, "NATS_URL"); u != fmt.Sprintf("nats://%s:%d", natsRelease, natsPort) {
							t.Errorf("%s: NATS_URL %q, want the chart's client service nats://%s:%d", name, u, natsRelease, natsPort)
						}
					case strings.HasPrefix(c.Image, "ollama/ollama:"):
						if got, want := strings.TrimPrefix(c.Image, "ollama/ollama:"), ollamaVersion(t); got != want {
							t.Errorf("%s: image %s, want ollama/ollama:%s, the Ollama whose API the project follows", name, c.Image, want)
						}
						var shellRefs []string
						for _, s := range append(slices.Clone(c.Command), c.Args...) {
							for _, m := range shellRef.FindAllStringSubmatch(s, -1) {
								shellRefs = append(shellRefs, m[1])
							}
						}
						for _, e := range c.Env {
							if _, ok := knownOllama[e.Name]; !ok && !refs[e.Name] && !slices.Contains(shellRefs, e.Name) {
								t.Errorf("%s: env %s is not an Ollama setting (envconfig), nor used by the container", name, e.Name)
							}
						}
					}
				}
				for _, v := range p.spec.Volumes {
					if v.Secret != nil {
						secrets[v.Secret.SecretName] = true
					}
				}
			}
			checkWorkers(t, o)
			checkServices(t, o)
			checkScaledObjects(t, o, values, secrets)
			for s := range secrets {
				if !bytes.Contains(docs, []byte("kubectl create secret generic "+s)) {
					t.Errorf("Secret %s is used, but docs/deploy.md never says how to create it (kubectl create secret generic %s)", s, s)
				}
			}
		})
	}
}

func envValues(c *corev1.Container) []string {
	var vs []string
	for _, e := range c.Env {
		vs = append(vs, e.Value)
	}
	return vs
}

// checkProbes checks that the probes of an OllamaMax container are HTTP
// GETs of the paths its binary serves, on a named container port that
// the binary listens on.
func checkProbes(t *testing.T, name string, p pod, c *corev1.Container, bin string) {
	t.Helper()
	listening := map[int32]bool{}
	for _, v := range listenVars[bin] {
		if addr := env(c, v); addr != "" {
			listening[listenPort(t, addr)] = true
		}
	}
	for _, cp := range c.Ports {
		if !listening[cp.ContainerPort] {
			t.Errorf("%s: container port %s (%d) is none that %s listens on (%v)", name, cp.Name, cp.ContainerPort, bin, listenVars[bin])
		}
	}
	if bin == "ollamaq" {
		return
	}
	for kind, pr := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		if pr == nil {
			if kind != "startup" {
				t.Errorf("%s: no %s probe", name, kind)
			}
			continue
		}
		if pr.HTTPGet == nil {
			t.Errorf("%s: %s probe is not an HTTP GET", name, kind)
			continue
		}
		if !probePaths[kind][pr.HTTPGet.Path] {
			t.Errorf("%s: %s probe on %s, want one of %v", name, kind, pr.HTTPGet.Path, probePaths[kind])
		}
		if pr.HTTPGet.Port.Type != intstr.String {
			t.Errorf("%s: %s probe on port %s: name the container port", name, kind, pr.HTTPGet.Port.String())
		}
		cp := p.port(pr.HTTPGet.Port)
		switch {
		case cp == nil:
			t.Errorf("%s: %s probe on port %s, which no container has", name, kind, pr.HTTPGet.Port.String())
		case !slices.Contains(c.Ports, *cp):
			t.Errorf("%s: %s probe on port %s of another container", name, kind, pr.HTTPGet.Port.String())
		}
		if pr.HTTPGet.Scheme == corev1.URISchemeHTTPS && env(c, "OLLAMAMAX_TLS_CERT") == "" {
			t.Errorf("%s: %s probe over HTTPS without OLLAMAMAX_TLS_CERT", name, kind)
		}
	}
}

// The worker's pod: the Ollama it talks to is in the pod, with the same
// slots.
func checkWorkers(t *testing.T, o *objects) {
	t.Helper()
	for _, p := range o.pods() {
		for _, c := range p.containers() {
			if ourBinary(c) != "worker" {
				continue
			}
			name := p.owner + " " + c.Name
			host := env(c, "OLLAMA_HOST")
			var ollama *corev1.Container
			for _, oc := range p.containers() {
				if strings.HasPrefix(oc.Image, "ollama/ollama:") && len(oc.Command) == 0 {
					ollama = oc
				}
			}
			if ollama == nil {
				t.Errorf("%s: no Ollama server in its pod", name)
				continue
			}
			if got := env(ollama, "OLLAMA_HOST"); got != host || host == "" {
				t.Errorf("%s: OLLAMA_HOST %q, but its pod's Ollama listens on %q", name, host, got)
			}
			if got, want := env(ollama, "OLLAMA_NUM_PARALLEL"), env(c, "OLLAMA_NUM_PARALLEL"); got != want || want == "" {
				t.Errorf("%s: OLLAMA_NUM_PARALLEL %q, its Ollama's %q: the worker takes as many jobs as Ollama runs at once", name, want, got)
			}
			if ollama.RestartPolicy == nil || *ollama.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Errorf("%s: Ollama is not a native sidecar (an init container with restartPolicy Always), so it may stop before the worker drains", name)
			}
			if ollama.StartupProbe == nil || ollama.LivenessProbe == nil {
				t.Errorf("%s: its Ollama has no startup or liveness probe", name)
			}
			gpu := ollama.Resources.Limits[corev1.ResourceName("nvidia.com/gpu")]
			if !gpu.IsZero() && (p.spec.Affinity == nil || p.spec.Affinity.NodeAffinity == nil || len(p.spec.Tolerations) == 0) {
				t.Errorf("%s: a GPU limit without GPU node affinity and tolerations", name)
			}
			if grace, ok := strings.CutSuffix(env(c, "OLLAMAMAX_GRACE"), "s"); ok {
				g, _ := strconv.Atoi(grace)
				if p.spec.TerminationGracePeriodSeconds == nil || *p.spec.TerminationGracePeriodSeconds <= int64(g) {
					t.Errorf("%s: terminationGracePeriodSeconds %v does not outlast the worker's grace %ss", name, p.spec.TerminationGracePeriodSeconds, grace)
				}
			}
		}
	}
}

// checkServices checks that each Service and PDB selects a workload's pods,
// that each targetPort is one of their container ports, and that each
// StatefulSet's serviceName is a headless Service of the set.
func checkServices(t *testing.T, o *objects) {
	t.Helper()
	services := map[string]*corev1.Service{}
	for _, s := range o.services {
		services[s.Name] = s
		pods := o.selected(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
		if len(pods) == 0 {
			t.Errorf("Service %s selects no pods", s.Name)
		}
		for _, sp := range s.Spec.Ports {
			target := sp.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(sp.Port)
			}
			if target.Type != intstr.String {
				t.Errorf("Service %s port %s: targetPort %s, want a container port's name", s.Name, sp.Name, target.String())
			}
			for _, p := range pods {
				if p.port(target) == nil {
					t.Errorf("Service %s port %s: targetPort %s is no container port of %s", s.Name, sp.Name, target.String(), p.owner)
				}
			}
		}
	}
	for _, pdb := range o.pdbs {
		if len(o.selected(t, pdb.Spec.Selector)) == 0 {
			t.Errorf("PodDisruptionBudget %s selects no pods", pdb.Name)
		}
	}
	for _, m := range o.monitors {
		sel, err := metav1.LabelSelectorAsSelector(&m.Spec.Selector)
		if err != nil || sel.Empty() {
			t.Errorf("ServiceMonitor %s: selector %v: %v", m.Metadata.Name, m.Spec.Selector, err)
			continue
		}
		for _, e := range m.Spec.Endpoints {
			if !slices.ContainsFunc(o.services, func(s *corev1.Service) bool {
				return sel.Matches(labels.Set(s.Labels)) && slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port })
			}) {
				t.Errorf("ServiceMonitor %s: no Service it selects has a port %s", m.Metadata.Name, e.Port)
			}
		}
	}
	for _, ss := range o.statefulSets {
		if !labels.SelectorFromSet(ss.Spec.Selector.MatchLabels).Matches(labels.Set(ss.Spec.Template.Labels)) {
			t.Errorf("StatefulSet %s: its selector does not match its pod template", ss.Name)
		}
		svc := services[ss.Spec.ServiceName]
		switch {
		case svc == nil:
			t.Errorf("StatefulSet %s: serviceName %s is no Service of the set", ss.Name, ss.Spec.ServiceName)
		case svc.Spec.ClusterIP != corev1.ClusterIPNone:
			t.Errorf("StatefulSet %s: serviceName %s is not headless", ss.Name, ss.Spec.ServiceName)
		}
	}
}

// modelsOf returns the canonical models the pull container of the
// StatefulSet named name pulls (its MODELS), and its workers' slots.
func modelsOf(t *testing.T, o *objects, name string) (models []string, slots string) {
	t.Helper()
	for _, p := range o.pods() {
		if p.owner != "StatefulSet "+name {
			continue
		}
		for _, c := range p.containers() {
			if ms := env(c, "MODELS"); ms != "" {
				for m := range strings.FieldsSeq(ms) {
					cm, err := job.CanonicalModel(m)
					if err != nil {
						t.Fatalf("MODELS of %s: %v", name, err)
					}
					models = append(models, cm)
				}
			}
			if ourBinary(c) == "worker" {
				slots = env(c, "OLLAMA_NUM_PARALLEL")
			}
		}
	}
	return models, slots
}

var formulaIdent = regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_]*`)

// checkScaledObjects checks the KEDA scaling of the GPU workers: a
// nats-jetstream trigger on each consumer the workers create for the models
// they pull, at the monitoring endpoint of the NATS chart's headless
// service, for the account a TriggerAuthentication gives; the formula adds
// them all, with the workers' slots as its target; down to zero.
func checkScaledObjects(t *testing.T, o *objects, values natsValues, secrets map[string]bool) {
	t.Helper()
	auths := map[string]*triggerAuthentication{}
	for _, a := range o.triggerAuths {
		auths[a.Metadata.Name] = a
		for _, r := range a.Spec.SecretTargetRef {
			secrets[r.Name] = true
		}
	}
	if len(o.scaled) == 0 {
		t.Error("no ScaledObject")
	}
	for _, so := range o.scaled {
		name := "ScaledObject " + so.Metadata.Name
		ref := so.Spec.ScaleTargetRef
		if ref.APIVersion != "apps/v1" || ref.Kind != "StatefulSet" || !slices.ContainsFunc(o.statefulSets, func(s *appsv1.StatefulSet) bool { return s.Name == ref.Name }) {
			t.Errorf("%s: scaleTargetRef %s %s %s is no StatefulSet of the set", name, ref.APIVersion, ref.Kind, ref.Name)
		}
		if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount != 0 {
			t.Errorf("%s: minReplicaCount %v, want 0 (scale to zero)", name, so.Spec.MinReplicaCount)
		}
		if so.Spec.MaxReplicaCount == nil || *so.Spec.MaxReplicaCount < 1 {
			t.Errorf("%s: maxReplicaCount %v", name, so.Spec.MaxReplicaCount)
		}
		models, slots := modelsOf(t, o, ref.Name)
		if len(models) == 0 {
			t.Fatalf("%s: StatefulSet %s pulls no MODELS", name, ref.Name)
		}
		var want []string
		for _, m := range models {
			for _, c := range job.Classes {
				want = append(want, job.ConsumerName(m, c))
			}
		}
		endpoint := fmt.Sprintf("%s.%s.svc.cluster.local:%d", natsHeadless, o.namespace, values.Config.Monitor.Port)
		var got, names []string
		for i, tr := range so.Spec.Triggers {
			tname := fmt.Sprintf("%s trigger %d (%s)", name, i, tr.Name)
			if tr.Type != "nats-jetstream" {
				t.Errorf("%s: type %s, want nats-jetstream", tname, tr.Type)
				continue
			}
			for k := range tr.Metadata {
				if !jetStreamMetadata[k] {
					t.Errorf("%s: metadata %s is none that the nats-jetstream scaler reads", tname, k)
				}
			}
			md := tr.Metadata
			if md["stream"] != job.Stream {
				t.Errorf("%s: stream %q, want %s", tname, md["stream"], job.Stream)
			}
			if md["natsServerMonitoringEndpoint"] != endpoint {
				t.Errorf("%s: natsServerMonitoringEndpoint %q, want the chart's headless service %s (the scaler finds a consumer's leader as <server>.<endpoint>)", tname, md["natsServerMonitoringEndpoint"], endpoint)
			}
			if md["useHttps"] == "true" {
				t.Errorf("%s: useHttps, but the chart's monitor port is plain HTTP", tname)
			}
			for _, k := range []string{"lagThreshold", "activationLagThreshold"} {
				if _, err := strconv.ParseInt(md[k], 10, 64); err != nil {
					t.Errorf("%s: %s %q: %v", tname, k, md[k], err)
				}
			}
			switch a := tr.AuthenticationRef; {
			case md["account"] != "" || md["accountID"] != "":
				t.Errorf("%s: the account in the metadata: it is the site's OLLAMAMAX account key, from a TriggerAuthentication", tname)
			case a == nil || auths[a.Name] == nil:
				t.Errorf("%s: no TriggerAuthentication of the set gives its accountID", tname)
			case !slices.ContainsFunc(auths[a.Name].Spec.SecretTargetRef, func(r struct {
				Parameter string `json:"parameter"`
				Name      string `json:"name"`
				Key       string `json:"key"`
			}) bool {
				return r.Parameter == "accountID"
			}):
				// Not account: /jsz names an operator-mode account by its
				// JWT's name, which the scaler matches account against.
				t.Errorf("%s: TriggerAuthentication %s gives no accountID (the OLLAMAMAX account's public key)", tname, a.Name)
			}
			got = append(got, md["consumer"])
			names = append(names, tr.Name)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: consumers %v, want those the workers create for %v: %v", name, got, models, want)
		}
		sm := so.Spec.Advanced
		if sm == nil || sm.ScalingModifiers == nil {
			t.Errorf("%s: no scalingModifiers: with one trigger per consumer the HPA would take the largest lag, not their sum", name)
			continue
		}
		mod := sm.ScalingModifiers
		idents := formulaIdent.FindAllString(mod.Formula, -1)
		slices.Sort(idents)
		slices.Sort(names)
		if !slices.Equal(slices.Compact(idents), names) || !regexp.MustCompile(`^[A-Za-z0-9_ +]+$`).MatchString(mod.Formula) {
			t.Errorf("%s: formula %q, want the sum of its triggers %v", name, mod.Formula, names)
		}
		if mod.Target != slots {
			t.Errorf("%s: target %q, want the workers' slots (OLLAMA_NUM_PARALLEL %q): one pod per that many jobs waiting or running", name, mod.Target, slots)
		}
		if mod.ActivationTarget != "0" || cmpOr(mod.MetricType, "AverageValue") != "AverageValue" {
			t.Errorf("%s: activationTarget %q metricType %q, want 0 (any job wakes the pods) and AverageValue", name, mod.ActivationTarget, mod.MetricType)
		}
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func readNATSValues(t *testing.T) natsValues {
	t.Helper()
	b, err := os.ReadFile("k8s/nats/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v natsValues
	if err := yaml.UnmarshalStrict(b, &v); err != nil {
		t.Fatalf("k8s/nats/values.yaml: %v", err)
	}
	return v
}

// TestNATSValues checks the Helm values of the NATS chart for what the
// fleet needs: three clustered servers (JetStream needs a quorum), file
// storage, the monitoring port the scaler reads, a full resolver, room
// for 8 MiB requests; and no auth of their own besides what
// auth-values.jq adds (operator mode: no users, no accounts block).
func TestNATSValues(t *testing.T) {
	v := readNATSValues(t)
	c := v.Config
	checks := []struct {
		name      string
		got, want any
	}{
		{"cluster", c.Cluster.Enabled, true},
		{"cluster replicas", c.Cluster.Replicas, 3},
		{"JetStream", c.JetStream.Enabled, true},
		{"file storage", c.JetStream.FileStore.Enabled && c.JetStream.FileStore.PVC.Enabled, true},
		{"JetStream domain", c.JetStream.Merge["domain"], "ollamamax"},
		{"monitor", c.Monitor.Enabled, true},
		{"monitor port", c.Monitor.Port, 8222},
		{"resolver", c.Resolver.Enabled && c.Resolver.PVC.Enabled, true},
		{"resolver type", c.Resolver.Merge["type"], "full"},
		{"resolver allow_delete", c.Resolver.Merge["allow_delete"], false},
		{"max_payload", c.Merge["max_payload"], "<< 8MB >>"},
		{"leaf node port", c.Leafnodes.Port, 7422},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	for _, k := range []string{"operator", "system_account", "resolver_preload", "accounts", "authorization", "no_auth_user"} {
		if _, ok := c.Merge[k]; ok {
			t.Errorf("config.merge.%s is set here: operator mode comes from auth-values.jq, and plain users must not exist", k)
		}
	}
}

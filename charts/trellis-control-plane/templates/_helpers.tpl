{{/* The images' version: image.version, or the chart's appVersion. */}}
{{- define "trellis.version" -}}
{{- default .Chart.AppVersion .Values.image.version -}}
{{- end -}}

{{- define "trellis.controlImage" -}}
{{ .Values.image.registry }}/trellis-control:{{ include "trellis.version" . }}
{{- end -}}

{{- define "trellis.proxyImage" -}}
{{ .Values.image.registry }}/trellis-proxy:{{ include "trellis.version" . }}
{{- end -}}

{{/* Labels of every object; "component" names the control-plane component. */}}
{{- define "trellis.labels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/part-of: trellis
app.kubernetes.io/version: {{ include "trellis.version" .root }}
trellis.dev/control-plane-ns: {{ include "trellis.namespace" .root }}
{{- end -}}

{{- define "trellis.replicas" -}}
{{- if .Values.ha }}3{{ else }}1{{ end -}}
{{- end -}}

{{/*
The Pod template's common part: ServiceAccount, anti-affinity in HA, the
hardened security context. Called with (dict "root" $ "component" NAME).
*/}}
{{- define "trellis.podSpec" -}}
serviceAccountName: trellis-{{ .component }}
automountServiceAccountToken: true
enableServiceLinks: false
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  seccompProfile: {type: RuntimeDefault}
{{- if .root.Values.ha }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels: {app.kubernetes.io/name: {{ .component }}, app.kubernetes.io/part-of: trellis}
{{- end }}
{{- end -}}

{{/* A control-plane container's common part. */}}
{{- define "trellis.container" -}}
image: {{ include "trellis.controlImage" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
resources:
{{ toYaml .root.Values.resources | indent 2 }}
readinessProbe:
  httpGet: {path: /ready, port: admin}
  periodSeconds: 2
livenessProbe:
  httpGet: {path: /live, port: admin}
  periodSeconds: 10
  failureThreshold: 3
{{- end -}}

{{/* A PodDisruptionBudget for a component, in HA. */}}
{{- define "trellis.pdb" -}}
{{- if .root.Values.ha }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: trellis-{{ .component }}
  namespace: {{ include "trellis.namespace" .root }}
  labels:
{{ include "trellis.labels" . | indent 4 }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels: {app.kubernetes.io/name: {{ .component }}, app.kubernetes.io/part-of: trellis}
{{- end }}
{{- end -}}

{{/* Proxies verify the control plane as spiffe://<trust-domain>/ns/trellis/sa/...: it runs in namespace trellis. */}}
{{- define "trellis.namespace" -}}
{{- if ne .Release.Namespace "trellis" -}}
{{- fail (printf "the Trellis control plane runs in namespace trellis (proxies verify it as spiffe://<trust-domain>/ns/trellis/...), not %q" .Release.Namespace) -}}
{{- end -}}
trellis
{{- end -}}

{{/*
The Prometheus the metrics API queries: prometheus.url, else the one this
chart deploys (prometheus.enabled), else none ("": the destination
service's embedded store scrapes the proxies).
*/}}
{{- define "trellis.prometheusURL" -}}
{{- if .Values.prometheus.url -}}
{{ .Values.prometheus.url }}
{{- else if .Values.prometheus.enabled -}}
http://trellis-prometheus.{{ include "trellis.namespace" . }}.svc.{{ .Values.clusterDomain }}:9090
{{- end -}}
{{- end -}}

{{/*
The scrape job of every meshed Pod's proxy: its admin port (the container
port trellis-admin of the container trellis-proxy) on each Pod behind a
Service, labelled as the metrics API's queries expect — namespace,
service, workload (the Deployment, else the Pod's controller, else the
Pod) and pod (<pod>.<service>, one instance per Service it backs). Copy
it into your own Prometheus to use --prometheus-url.
*/}}
{{- define "trellis.prometheusConfig" -}}
global:
  scrape_interval: {{ .Values.prometheus.scrapeInterval }}
  evaluation_interval: {{ .Values.prometheus.scrapeInterval }}
scrape_configs:
- job_name: trellis-proxy
  metrics_path: /metrics
  kubernetes_sd_configs:
  - role: endpointslice
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_container_name, __meta_kubernetes_pod_container_port_name]
    regex: trellis-proxy;trellis-admin
    action: keep
  - source_labels: [__meta_kubernetes_namespace]
    target_label: namespace
  - source_labels: [__meta_kubernetes_service_name]
    target_label: service
  - source_labels: [__meta_kubernetes_pod_name, __meta_kubernetes_service_name]
    separator: .
    target_label: pod
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: workload
  - source_labels: [__meta_kubernetes_pod_controller_name]
    regex: (.+)
    target_label: workload
  - source_labels: [__meta_kubernetes_pod_controller_kind, __meta_kubernetes_pod_controller_name, __meta_kubernetes_pod_label_pod_template_hash]
    regex: ReplicaSet;(.+)-[^-]+;.+
    target_label: workload
{{- end -}}

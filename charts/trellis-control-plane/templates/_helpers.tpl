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

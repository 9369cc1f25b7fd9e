{{/* Labels of every object; app.kubernetes.io/component is added per object. */}}
{{- define "phalanx.labels" -}}
app.kubernetes.io/name: phalanx
app.kubernetes.io/part-of: phalanx
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The controller pods' selector: fixed, a Deployment's selector cannot change. */}}
{{- define "phalanx.selector" -}}
app.kubernetes.io/name: phalanx
app.kubernetes.io/component: controller
{{- end }}

{{/* A policy setting: a name as it is, a {name, params} map as JSON. */}}
{{- define "phalanx.policy" -}}
{{- if kindIs "string" . }}{{ . | quote }}{{ else }}{{ toJson . | quote }}{{ end }}
{{- end }}

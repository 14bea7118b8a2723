{{/* Names and labels shared by every object. */}}
{{- define "fedbroker.name" -}}
{{- .Release.Name | trunc 57 | trimSuffix "-" -}}
{{- end -}}

{{- define "fedbroker.labels" -}}
app.kubernetes.io/name: fedbroker
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "fedbroker.selector" -}}
app.kubernetes.io/name: fedbroker
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: broker
{{- end -}}

{{- define "fedbroker.redisSelector" -}}
app.kubernetes.io/name: fedbroker
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{/* The replay store's URL as the broker's config names it. */}}
{{- define "fedbroker.redisUrl" -}}
{{- if .Values.redis.bundled -}}
redis://{{ if .Values.redis.passwordSecret.name }}:${REDIS_PASSWORD}@{{ end }}{{ include "fedbroker.name" . }}-redis:6379/0
{{- else -}}
{{- required "redis.url is required when redis.bundled is false" .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{/* Restricted container security context, shared by every container. */}}
{{- define "fedbroker.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Chart name, truncated to a DNS label. */}}
{{- define "distsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name for the chart's own objects. */}}
{{- define "distsync.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "distsync.labels" -}}
app.kubernetes.io/name: {{ include "distsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: distsync
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "distsync.operatorSelector" -}}
app.kubernetes.io/name: {{ include "distsync.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "distsync.redisSelector" -}}
app.kubernetes.io/name: {{ include "distsync.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "distsync.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "distsync.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "distsync.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Namespaces the operator watches (a list; the release namespace by default). */}}
{{- define "distsync.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- join "," .Values.operator.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* The Redis URL handed to the operator for spec.redis.mode InChart (empty: none). */}}
{{- define "distsync.redisUrl" -}}
{{- if .Values.redis.externalUrl -}}
{{- .Values.redis.externalUrl -}}
{{- else if .Values.redis.enabled -}}
{{- printf "redis://%s-redis.%s.svc.%s:6379/0" (include "distsync.fullname" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}
{{- end -}}

{{/* The node pod defaults handed to the operator (JSON): the `nodes` values, with the chart's
imagePullSecrets unless nodes.imagePullSecrets is set. */}}
{{- define "distsync.nodePodDefaults" -}}
{{- $d := deepCopy .Values.nodes -}}
{{- if not $d.imagePullSecrets -}}
{{- $_ := set $d "imagePullSecrets" .Values.imagePullSecrets -}}
{{- end -}}
{{- toJson $d -}}
{{- end -}}

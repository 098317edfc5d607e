{{/*
Names and labels shared by every template. Names are cut to 63 characters because
Kubernetes label values and DNS-1123 names allow no more.
*/}}

{{- define "pyncette-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pyncette-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Cluster-scoped objects (ClusterRole, ClusterRoleBinding) carry the release namespace in their
name, so that releases with the same name in two namespaces do not collide.
*/}}
{{- define "pyncette-operator.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "pyncette-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pyncette-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pyncette-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pyncette-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pyncette-operator.labels" -}}
helm.sh/chart: {{ include "pyncette-operator.chart" . }}
{{ include "pyncette-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: pyncette
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pyncette-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pyncette-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pyncette-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The namespaces the operator serves in namespaced mode, as a JSON list (use fromJsonArray):
watch.namespaces, plus the release namespace only when watch.releaseNamespace asks for it.
*/}}
{{- define "pyncette-operator.watchNamespaces" -}}
{{- $namespaces := .Values.watch.namespaces | default list }}
{{- if .Values.watch.releaseNamespace }}
{{- $namespaces = append $namespaces .Release.Namespace }}
{{- end }}
{{- $namespaces | uniq | toJson }}
{{- end }}

{{/*
"true" when the backend lives in one Pod and cannot be shared by replicas: no URL and no Secret
(the embedded SQLite file), a sqlite:// URL or memory://. A URL behind existingSecret cannot be
seen here and is taken as a shared backend.
*/}}
{{- define "pyncette-operator.isSqlite" -}}
{{- if or (hasPrefix "sqlite:" .Values.backend.url) (hasPrefix "memory:" .Values.backend.url) }}true
{{- else if and (not .Values.backend.url) (not .Values.backend.existingSecret.name) }}true
{{- end }}
{{- end }}

{{/*
Checks the schema cannot express with a readable message; they repeat the schema's rules so that
a chart rendered with --skip-schema-validation still refuses them.
*/}}
{{- define "pyncette-operator.validate" -}}
{{- if and (include "pyncette-operator.isSqlite" .) (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "replicaCount=%d needs a shared backend: SQLite (and memory://) keep the schedule in one Pod. Set backend.url (redis://, postgresql://, mysql://, dynamodb://) or backend.existingSecret.name, or use replicaCount=1." (int .Values.replicaCount)) }}
{{- end }}
{{- if and .Values.backend.url .Values.backend.existingSecret.name }}
{{- fail "backend.url and backend.existingSecret.name are both set: give the backend URL one way only." }}
{{- end }}
{{- if and .Values.watch.allNamespaces .Values.watch.namespaces }}
{{- fail "watch.allNamespaces=true and watch.namespaces are both set: choose cluster-wide or a list of namespaces." }}
{{- end }}
{{- if not (or .Values.watch.allNamespaces .Values.watch.namespaces .Values.watch.releaseNamespace) }}
{{- fail (printf "watch: name the namespaces whose PyncetteTasks the operator runs (--set watch.namespaces={team-a}) or set watch.allNamespaces=true. The release namespace %s is not served unless you set watch.releaseNamespace=true: it holds the operator's ServiceAccount and the backend Secret, which the Pod of a PyncetteTask created there could use." .Release.Namespace) }}
{{- end }}
{{- end }}

{{/*
What the operator does in a watched namespace: follow PyncetteTasks and write their status, run
their Pods, and report Events. Kept in one place for both RBAC modes.
*/}}
{{- define "pyncette-operator.rules" -}}
- apiGroups: ["pyncette.dev"]
  resources: ["pyncettetasks"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["pyncette.dev"]
  resources: ["pyncettetasks/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
selfheal.name: the chart name, overridable; truncated to 63 characters because
Kubernetes label values and DNS-1123 names stop there.
*/}}
{{- define "selfheal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
selfheal.fullname: one name for every object of a release, unique per release and
at most 63 characters (DNS-1123 label limit); a release already named after the chart
is not repeated (`selfheal`, not `selfheal-selfheal`).
*/}}
{{- define "selfheal.fullname" -}}
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
selfheal.chart: chart name and version as a label value ("+" is not allowed there).
*/}}
{{- define "selfheal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
selfheal.labels: the recommended app.kubernetes.io labels on every object, so
`kubectl get all -l app.kubernetes.io/instance=<release>` finds the whole install.
*/}}
{{- define "selfheal.labels" -}}
helm.sh/chart: {{ include "selfheal.chart" . }}
{{ include "selfheal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: selfheal
{{- end }}

{{/*
selfheal.selectorLabels: the immutable subset used in selectors (a Deployment's
selector cannot change after creation, so no version or chart label here).
*/}}
{{- define "selfheal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "selfheal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
selfheal.serviceAccountName: the ServiceAccount the Deployment runs as and the
bindings name, whether the chart creates it or it is given.
*/}}
{{- define "selfheal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "selfheal.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
selfheal.image: repository with the digest when one is given (immutable), else the
tag (default: the chart's appVersion, so chart and operator versions move together).
*/}}
{{- define "selfheal.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
selfheal.jiraSecretName: the Secret with the Jira credentials, "" when none; an
existing Secret wins over one created from values.
*/}}
{{- define "selfheal.jiraSecretName" -}}
{{- if .Values.jira.url }}
{{- if .Values.jira.existingSecret }}
{{- .Values.jira.existingSecret }}
{{- else if .Values.jira.token }}
{{- printf "%s-jira" (include "selfheal.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
selfheal.watchNamespaces: the namespaces to watch, checked once: namespaced RBAC
without namespaces would grant nothing and leave an operator that sees nothing.
*/}}
{{- define "selfheal.watchNamespaces" -}}
{{- if and .Values.rbac.namespaced (not .Values.watchNamespaces) }}
{{- fail "rbac.namespaced=true needs watchNamespaces: the namespaces to grant access in and to watch (e.g. --set 'watchNamespaces={shop,payments}')" }}
{{- end }}
{{- toJson (.Values.watchNamespaces | uniq) }}
{{- end }}

{{/*
selfheal.crd: a CRD from files/crds (a byte-identical copy of crds/*.yaml, the API's
source of truth) with the release labels and, when crds.keep, the keep policy
inserted into its metadata. Its spec is untouched.
*/}}
{{- define "selfheal.crd" -}}
{{- $root := .root }}
{{- $text := $root.Files.Get (printf "files/crds/%s" .file) }}
{{- if not $text }}
{{- fail (printf "files/crds/%s is missing: run hack/render-manifests.sh to copy crds/ into the chart" .file) }}
{{- end }}
{{- $meta := "metadata:\n" }}
{{- if $root.Values.crds.keep }}
{{- $meta = printf "%s  annotations:\n    helm.sh/resource-policy: keep\n" $meta }}
{{- end }}
{{- $labels := printf "  labels:\n    helm.sh/chart: %s\n    app.kubernetes.io/instance: %s\n    app.kubernetes.io/managed-by: %s\n" (include "selfheal.chart" $root) $root.Release.Name $root.Release.Service }}
{{- $text = regexReplaceAll "(?m)^metadata:\\n" $text $meta }}
{{- regexReplaceAll "(?m)^  labels:\\n" $text $labels }}
{{- end }}

{{/*
selfheal.leaseName: the leader election Lease, one per release (two releases in one
namespace must not elect one leader between them); checked once with its timings, as
the operator would refuse them at start (client-go's rules).
*/}}
{{- define "selfheal.leaseName" -}}
{{- $le := .Values.leaderElection }}
{{- if and (gt (int .Values.replicaCount) 1) (not $le.enabled) }}
{{- fail (printf "replicaCount=%d with leaderElection.enabled=false: the replicas would act side by side; enable leader election or run one replica" (int .Values.replicaCount)) }}
{{- end }}
{{- if le (float64 $le.leaseDuration) (float64 $le.renewDeadline) }}
{{- fail "leaderElection.leaseDuration must be greater than leaderElection.renewDeadline" }}
{{- end }}
{{- if le (float64 $le.renewDeadline) (mulf 1.2 $le.retryPeriod) }}
{{- fail "leaderElection.renewDeadline must be greater than 1.2 x leaderElection.retryPeriod" }}
{{- end }}
{{- default (include "selfheal.fullname" .) $le.leaseName | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
selfheal.shardName: the full name, with `-shard-<i>` when sharded (unsharded names stay
as they were, so an upgrade keeps the Deployment); the full name is cut first so the
suffix always survives the 63-character limit and shards never collide.
*/}}
{{- define "selfheal.shardName" -}}
{{- $fullname := include "selfheal.fullname" .root }}
{{- if gt (int .root.Values.shards) 1 }}
{{- printf "%s-shard-%d" ($fullname | trunc 52 | trimSuffix "-") (int .shard) }}
{{- else }}
{{- $fullname }}
{{- end }}
{{- end }}

{{/*
selfheal.shardLabels: the pod label naming its shard (in selectors too, so two shards'
Deployments never select each other's pods); nothing when unsharded, since a
Deployment's selector cannot change after creation.
*/}}
{{- define "selfheal.shardLabels" -}}
{{- if gt (int .root.Values.shards) 1 }}
selfheal.dev/shard: {{ .shard | int | toString | quote }}
{{- end }}
{{- end }}

{{/*
selfheal.leaseNames: every Lease the release campaigns for, as a JSON list: the one
Lease, or one per shard named as the operator names it (sharding.Shard.lease_name).
*/}}
{{- define "selfheal.leaseNames" -}}
{{- $lease := include "selfheal.leaseName" . }}
{{- $total := int .Values.shards }}
{{- $names := list }}
{{- if gt $total 1 }}
{{- range $i := until $total }}
{{- $names = append $names (printf "%s-shard-%d-of-%d" $lease $i $total) }}
{{- end }}
{{- else }}
{{- $names = list $lease }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/*
selfheal.alertsServiceName: the webhook receiver's Service, `<fullname>-alerts`, with
`-shard-<i>` when sharded; a DNS-1035 label, so cut to 63 characters before the suffix.
*/}}
{{- define "selfheal.alertsServiceName" -}}
{{- $base := printf "%s-alerts" (include "selfheal.fullname" .root) }}
{{- if gt (int .root.Values.shards) 1 }}
{{- printf "%s-shard-%d" ($base | trunc 52 | trimSuffix "-") (int .shard) }}
{{- else }}
{{- $base | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

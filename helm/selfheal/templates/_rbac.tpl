{{/*
selfheal.rules: the operator's permissions on workloads and its own API, the same
list for the ClusterRole (cluster-wide) and for each namespace's Role (namespaced).
No wildcards. Each rule names the code that needs it; a rule for a feature that is
switched off (rbac.actions.*, rbac.evidence.*) is not rendered. tests/e2e/test_rbac_e2e.py
runs a whole remediation with exactly these rules and fails on any 403.
*/}}
{{- define "selfheal.rules" -}}
{{- $a := .Values.rbac.actions }}
# Pods: the light Pod watcher (clients/podwatch.py, a paged list and a watch) lists and
# watches them; evidence/collect.py gets the crashing pod and lists the workload's pods.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
{{- if .Values.rbac.evidence.logs }}
# Container logs (current and previous) for the ticket: evidence/collect.py `_logs`.
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
{{- end }}
{{- if .Values.rbac.evidence.dependencies }}
# Services and their EndpointSlices: the ticket names the failing dependency found in
# the stack, logs and env, with its ready endpoints (evidence/dependencies.py); a policy
# with remediation.dependencies checks them before a step (remediation/dependency_probe.py).
# Without them that check reads "unknown": Wait then holds the step, Escalate acts.
- apiGroups: [""]
  resources: [services]
  verbs: [list]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list]
{{- end }}
{{- if .Values.rbac.evidence.configChanges }}
# ConfigMaps the pod references: which changed since the last healthy revision, by
# name and key only (evidence/collect.py). Secrets are named, never read.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
{{- end }}
# Events: create for the driver's Events on the workload and the Remediation
# (remediation/driver.py) and kopf.warn on an invalid policy (handlers/policies.py);
# list for the evidence's events of the Deployment and Pod (evidence/collect.py `_events`).
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
# Deployments: kopf index `deployments` lists and watches them (and evidence/dependencies.py,
# to map a dependency's Service to its workload); get for the actions'
# reads and the evidence snapshot. patch only when an action writes the Deployment
# itself: rollback (actions/rollback.py, the pod template) or restart
# (actions/restart.py, the restartedAt annotation).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch{{ if or $a.rollback $a.restart }}, patch{{ end }}]
{{- if $a.scale }}
# The scale subresource: actions/scale.py reads and patches spec.replicas through it
# (scale and its revert after recovery) when no HPA owns the Deployment.
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, patch]
# HPAs: actions/scale.py lists them to find the one targeting the Deployment, then
# raises (and later reverts) its minReplicas instead of fighting it; get re-reads it
# after a conflict (actions/result.py `lost_race`).
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, patch]
{{- end }}
# ReplicaSets: kopf indexes `rs_owner` and `rs_by_deployment` list and watch them;
# actions/rollback.py lists a Deployment's revisions; the evidence gets the pod's
# ReplicaSet and lists the rollout history.
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [get, list, watch]
# StatefulSets and DaemonSets: kopf indexes `statefulsets` and `daemonsets` list and
# watch them (handlers/watch.py); get for the actions' reads and the evidence. patch
# when rollback (actions/revisions.py, the pod template) or restart (actions/restart.py)
# may write them.
- apiGroups: [apps]
  resources: [statefulsets, daemonsets]
  verbs: [get, list, watch{{ if or $a.rollback $a.restart }}, patch{{ end }}]
{{- if $a.scale }}
# A StatefulSet's scale subresource: actions/scale.py, as for Deployments.
- apiGroups: [apps]
  resources: [statefulsets/scale]
  verbs: [get, patch]
{{- end }}
# ControllerRevisions, the history of StatefulSets and DaemonSets: kopf index
# `controller_revisions` (handlers/watch.py), actions/revisions.py lists them for a
# rollback, the evidence lists the rollout history. Never one by name: no get.
- apiGroups: [apps]
  resources: [controllerrevisions]
  verbs: [list, watch]
{{- if $a.rollback }}
# Deleting pods, one at a time: a rollback of an OnDelete StatefulSet or DaemonSet, or
# of a StatefulSet stuck on an unready pod (actions/revisions.py `replace_pods`); each
# delete carries the pod's uid as a precondition.
- apiGroups: [""]
  resources: [pods]
  verbs: [delete]
{{- end }}
# HealingPolicies: kopf's handlers list and watch them (handlers/policies.py) and patch
# kopf's progress annotations (AnnotationsProgressStorage under selfheal.dev); the
# reconciler gets one to confirm it is gone before closing its incidents (reconciler.py).
- apiGroups: [selfheal.dev]
  resources: [healingpolicies]
  verbs: [get, list, watch, patch]
# HealingPolicy status: Ready condition, trigger health, counts (handlers/policies.py).
- apiGroups: [selfheal.dev]
  resources: [healingpolicies/status]
  verbs: [patch]
# Remediations: kopf index `remediations` lists and watches them; the driver gets one
# on resume and creates it (creating it is the lock against acting twice); the
# retention sweep deletes Resolved and Closed ones past `retention` (driver.prune);
# evidence/dependencies.py lists them to name a dependency's own open incident.
- apiGroups: [selfheal.dev]
  resources: [remediations]
  verbs: [get, list, watch, create, delete]
# Remediation status: the machine's whole state after every transition (driver.py `_save`).
- apiGroups: [selfheal.dev]
  resources: [remediations/status]
  verbs: [patch]
{{- end }}

{{/*
selfheal.clusterReadRules: cluster-scoped reads kopf's observers make
(kopf/_core/reactor/observation.py): CRDs in every mode, to notice API changes
while running; Namespaces in namespaced mode, to notice a watched one being created.
*/}}
{{- define "selfheal.clusterReadRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if .Values.rbac.namespaced }}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- end }}

{{/*
Chart name, cut to 63 characters (the DNS label limit of Kubernetes names).
*/}}
{{- define "fraudstack.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or the release alone when it already holds the chart name.
*/}}
{{- define "fraudstack.fullname" -}}
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
Name of one component's objects: <fullname>-<component>, cut so the whole stays within 63.
Usage: include "fraudstack.componentName" (list . "inference")
*/}}
{{- define "fraudstack.componentName" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $suffix := printf "-%s" $component }}
{{- $prefix := include "fraudstack.fullname" $root | trunc (int (sub 63 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s%s" $prefix $suffix }}
{{- end }}

{{- define "fraudstack.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: only what never changes over the life of a release. No version here: a
Deployment's selector is immutable, so a version in it would break every upgrade.
*/}}
{{- define "fraudstack.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fraudstack.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Full labels: selector labels plus what describes the release (versions, chart, manager).
*/}}
{{- define "fraudstack.labels" -}}
helm.sh/chart: {{ include "fraudstack.chart" . }}
{{ include "fraudstack.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fraudstack
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Per-component labels. Usage: include "fraudstack.componentSelectorLabels" (list . "inference")
*/}}
{{- define "fraudstack.componentSelectorLabels" -}}
{{ include "fraudstack.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "fraudstack.componentLabels" -}}
{{ include "fraudstack.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
ServiceAccount of the data-plane pods.
*/}}
{{- define "fraudstack.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fraudstack.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference. Usage: include "fraudstack.image" (list . .Values.inference.image)
Every image of the chart, fraudstack's own and the bundled Redis and Kafka, goes through here:
its own registry, else image.registry; its own tag, else image.tag, else the chart's appVersion
(the bundled Redis and Kafka set their own tags). A tag that holds a digest ("1.2.3@sha256:...",
as skaffold writes) is used as is.
*/}}
{{- define "fraudstack.image" -}}
{{- $root := index . 0 }}
{{- $image := index . 1 }}
{{- $tag := $image.tag | default $root.Values.image.tag | default $root.Chart.AppVersion }}
{{- $repository := $image.repository }}
{{- with ($image.registry | default $root.Values.image.registry) }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- printf "%s:%s" $repository (toString $tag) }}
{{- end }}

{{/*
Addresses of the data services: in-chart when enabled, external otherwise.
*/}}
{{- define "fraudstack.redisHost" -}}
{{- if .Values.redis.enabled }}
{{- include "fraudstack.componentName" (list . "redis") }}
{{- else }}
{{- required "redis.host is required when redis.enabled is false" .Values.redis.host }}
{{- end }}
{{- end }}

{{- define "fraudstack.kafkaBootstrap" -}}
{{- if .Values.kafka.enabled }}
{{- printf "%s:9092" (include "fraudstack.componentName" (list . "kafka")) }}
{{- else }}
{{- required "kafka.bootstrap (host:port) is required when kafka.enabled is false" .Values.kafka.bootstrap }}
{{- end }}
{{- end }}

{{- define "fraudstack.redisSecretName" -}}
{{- .Values.redis.auth.existingSecret | default (include "fraudstack.componentName" (list . "redis")) }}
{{- end }}

{{- define "fraudstack.ingestApiKeySecretName" -}}
{{- .Values.ingest.auth.existingSecret | default (include "fraudstack.componentName" (list . "ingest")) }}
{{- end }}

{{/*
Environment of the ingest container only: the API key POST /v1/transactions requires, from its
Secret (no key, and no check, when ingest.auth.enabled is false).
*/}}
{{- define "fraudstack.ingestEnv" -}}
{{- if .Values.ingest.auth.enabled }}
- name: FRAUDSTACK_INGEST_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "fraudstack.ingestApiKeySecretName" . }}
      key: {{ .Values.ingest.auth.existingSecretKey }}
{{- end }}
{{- end }}

{{/*
Environment shared by every fraudstack container: the settings ConfigMap, and the Redis URL
assembled from the password Secret. Kubernetes expands $(FRAUDSTACK_REDIS_PASSWORD) because
it is declared before the URL, so the password never sits in the ConfigMap.
*/}}
{{- define "fraudstack.env" -}}
- name: FRAUDSTACK_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "fraudstack.redisSecretName" . }}
      key: {{ .Values.redis.auth.existingSecretPasswordKey }}
- name: FRAUDSTACK_REDIS_URL
{{- if .Values.redis.cluster }}
{{- if .Values.redis.enabled }}
{{- fail "redis.cluster needs an external Redis Cluster: set redis.enabled=false and redis.host" }}
{{- end }}
{{- if ne (int .Values.redis.database) 0 }}
{{- fail "redis.cluster: a Redis Cluster has only database 0" }}
{{- end }}
  value: {{ printf "redis+cluster://:$(FRAUDSTACK_REDIS_PASSWORD)@%s:%d" (include "fraudstack.redisHost" .) (int .Values.redis.port) | quote }}
{{- else }}
  value: {{ printf "redis://:$(FRAUDSTACK_REDIS_PASSWORD)@%s:%d/%d" (include "fraudstack.redisHost" .) (int .Values.redis.port) (int .Values.redis.database) | quote }}
{{- end }}
{{- end }}

{{- define "fraudstack.envFrom" -}}
- configMapRef:
    name: {{ include "fraudstack.componentName" (list . "config") }}
{{- end }}

{{/*
Pod annotations that roll the pods when the settings or the Redis password change.
*/}}
{{- define "fraudstack.checksumAnnotations" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}

{{/*
The data volume (offline store and model registry) for pods that read or write it.
*/}}
{{- define "fraudstack.dataVolume" -}}
- name: data
{{- if .Values.storage.enabled }}
  persistentVolumeClaim:
    claimName: {{ .Values.storage.existingClaim | default (include "fraudstack.componentName" (list . "data")) }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}

{{/*
Probes on the service's HTTP port: /healthz says the process lives, /readyz that its
dependencies (Redis, Kafka, the model) answer. Usage: include "fraudstack.probes" "http"
*/}}
{{- define "fraudstack.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ . }}}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: {{ . }}}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: {{ . }}}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
{{- end }}

{{/*
Guards that make a bad combination of values fail at render time, with the reason.
*/}}
{{- define "fraudstack.validate" -}}
{{- if and .Values.aggregate.enabled (gt (int .Values.aggregate.replicaCount) (int .Values.kafka.partitions)) }}
{{- fail (printf "aggregate.replicaCount (%d) exceeds kafka.partitions (%d): a consumer group gives each partition to one member, so the extra replicas would sit idle" (int .Values.aggregate.replicaCount) (int .Values.kafka.partitions)) }}
{{- end }}
{{- if and .Values.snapshot.enabled (gt (int .Values.snapshot.replicaCount) (int .Values.kafka.partitions)) }}
{{- fail (printf "snapshot.replicaCount (%d) exceeds kafka.partitions (%d)" (int .Values.snapshot.replicaCount) (int .Values.kafka.partitions)) }}
{{- end }}
{{- if and .Values.inference.autoscaling.enabled (gt (int .Values.inference.autoscaling.minReplicas) (int .Values.inference.autoscaling.maxReplicas)) }}
{{- fail "inference.autoscaling.minReplicas must not exceed maxReplicas" }}
{{- end }}
{{- end }}

{{/*
NetworkPolicy peers: the pods of the given components of this release (same namespace).
Usage: include "fraudstack.componentPeers" (list . (list "aggregate" "inference"))
*/}}
{{- define "fraudstack.componentPeers" -}}
{{- $root := index . 0 }}
{{- range $component := index . 1 }}
- podSelector:
    matchLabels:
      {{- include "fraudstack.componentSelectorLabels" (list $root $component) | nindent 6 }}
{{- end }}
{{- end }}

{{/*
Pod template shared by the fraudstack services. Usage:
  include "fraudstack.podTemplate" (dict "root" $ "component" "ingest" "values" .Values.ingest
    "args" (list "ingest") "port" 8000 "portName" "http" "data" false "dataReadOnly" false "extraEnv" (list)
    "extraVolumes" (list) "restartPolicy" "" "topologySpreadConstraints" (list) "initArgs" (list))
"initArgs": the arguments of an init container of the same image, when the service must wait.
"preStopSleep": seconds a Service-backed pod keeps serving after it is told to stop.
*/}}
{{- define "fraudstack.podTemplate" -}}
{{- $root := .root }}
{{- $values := .values -}}
metadata:
  labels:
    {{- include "fraudstack.componentLabels" (list $root .component) | nindent 4 }}
  annotations:
    {{- include "fraudstack.checksumAnnotations" $root | nindent 4 }}
    {{- with $values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "fraudstack.serviceAccountName" $root }}
  automountServiceAccountToken: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- with .restartPolicy }}
  restartPolicy: {{ . }}
  {{- end }}
  {{- with .initArgs }}
  # Waits for what the service cannot start without (inference: a published model), so the
  # pod stays not Ready meanwhile instead of crash-looping into ever longer back-offs.
  initContainers:
    - name: {{ printf "%s-wait" $.component }}
      image: {{ include "fraudstack.image" (list $root $values.image) | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: ["fraudstack"]
      args:
        {{- toYaml . | nindent 8 }}
      envFrom:
        {{- include "fraudstack.envFrom" $root | nindent 8 }}
      env:
        {{- include "fraudstack.env" $root | nindent 8 }}
      resources:
        requests: {cpu: 10m, memory: 64Mi}
        limits: {memory: 256Mi}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if $.data }}
        - name: data
          mountPath: /data
          readOnly: true
        {{- end }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ include "fraudstack.image" (list $root $values.image) | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: ["fraudstack"]
      args:
        {{- toYaml .args | nindent 8 }}
      {{- if .port }}
      ports:
        - name: {{ .portName }}
          containerPort: {{ .port }}
          protocol: TCP
      {{- end }}
      envFrom:
        {{- include "fraudstack.envFrom" $root | nindent 8 }}
      env:
        {{- include "fraudstack.env" $root | nindent 8 }}
        {{- with .extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if .port }}
      {{- include "fraudstack.probes" .portName | nindent 6 }}
      {{- end }}
      {{- if .preStopSleep }}
      # A deleted pod leaves the Service's endpoints while it gets SIGTERM; until kube-proxy
      # on every node has dropped it, connections still arrive. Keep serving them meanwhile.
      lifecycle:
        preStop:
          exec:
            command: ["sleep", {{ .preStopSleep | quote }}]
      {{- end }}
      resources:
        {{- toYaml $values.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        # The root filesystem is read-only; Python and its libraries get a scratch /tmp.
        - name: tmp
          mountPath: /tmp
        {{- if .data }}
        - name: data
          mountPath: /data
          {{- if .dataReadOnly }}
          readOnly: true
          {{- end }}
        {{- end }}
        {{- range .extraVolumes }}
        - name: {{ .name }}
          mountPath: {{ .mountPath }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir: {}
    {{- if .data }}
    {{- include "fraudstack.dataVolume" $root | nindent 4 }}
    {{- end }}
    {{- range .extraVolumes }}
    - name: {{ .name }}
      emptyDir:
        {{- toYaml .emptyDir | nindent 8 }}
    {{- end }}
  {{- with $values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

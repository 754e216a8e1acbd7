{{/* Names and labels. */}}
{{- define "otel-rl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "otel-rl.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "otel-rl.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "otel-rl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "otel-rl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "otel-rl.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "otel-rl.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "otel-rl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "otel-rl.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "otel-rl.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
Cross-field checks the JSON schema cannot express. Each fails with
"[ERROR] <values path>: <rule>. <fix>".
*/}}
{{- define "otel-rl.validate" -}}
{{- $v := .Values -}}
{{- if and (gt (int $v.replicas) 1) (eq $v.mode "deployment") $v.persistence.enabled (ne $v.persistence.accessMode "ReadWriteMany") -}}
{{- fail "[ERROR] replicas: more than one Deployment replica cannot share a ReadWriteOnce volume. Set mode=statefulset (a volume per replica) or persistence.accessMode=ReadWriteMany." -}}
{{- end -}}
{{- if and (gt (int $v.replicas) 1) (not $v.gateway.enabled) -}}
{{- fail "[ERROR] replicas: several replicas need run-id routing so all ranks of a run meet on one replica. Set gateway.enabled=true and send trainers to the gateway, or use replicas=1." -}}
{{- end -}}
{{- if and $v.tensorboard.enabled (not $v.persistence.enabled) -}}
{{- fail "[ERROR] tensorboard.enabled: TensorBoard reads the collector's volume, which needs persistence. Set persistence.enabled=true." -}}
{{- end -}}
{{- if and $v.tensorboard.enabled (ne $v.persistence.accessMode "ReadWriteMany") -}}
{{- fail "[ERROR] tensorboard.enabled: a second pod can mount the data volume only with ReadWriteMany. Set persistence.accessMode=ReadWriteMany (an RWX StorageClass) or tensorboard.enabled=false." -}}
{{- end -}}
{{- if and $v.tensorboard.enabled (eq $v.mode "statefulset") -}}
{{- fail "[ERROR] tensorboard.enabled: with mode=statefulset each replica has its own volume, so one TensorBoard cannot read them all. Use mode=deployment with persistence.accessMode=ReadWriteMany, or tensorboard.enabled=false." -}}
{{- end -}}
{{- if and $v.tensorboard.enabled (not $v.backends.tensorboard.enabled) -}}
{{- fail "[ERROR] tensorboard.enabled: nothing writes TensorBoard files. Set backends.tensorboard.enabled=true." -}}
{{- end -}}
{{- if and $v.backends.wandb.enabled (eq $v.backends.wandb.mode "online") (not $v.backends.wandb.existingSecret) -}}
{{- fail "[ERROR] backends.wandb.existingSecret: online mode needs the API key. Create a Secret with the key and set backends.wandb.existingSecret (never put the key in values), or use mode=offline." -}}
{{- end -}}
{{- if and $v.backends.swanlab.enabled (eq $v.backends.swanlab.mode "cloud") (not $v.backends.swanlab.existingSecret) -}}
{{- fail "[ERROR] backends.swanlab.existingSecret: cloud mode needs the API key. Create a Secret with the key and set backends.swanlab.existingSecret, or use mode=offline." -}}
{{- end -}}
{{- if and $v.backends.mlflow.enabled (not (regexMatch "^https?://" $v.backends.mlflow.trackingUri)) -}}
{{- fail "[ERROR] backends.mlflow.trackingUri: must be an http(s) tracking server URI when backends.mlflow.enabled. Set it, e.g. http://mlflow.mlflow.svc:5000." -}}
{{- end -}}
{{- if and $v.spool.enabled (not $v.persistence.enabled) -}}
{{- fail "[ERROR] spool.enabled: the spool lives on the data volume, and without persistence it is an emptyDir that a restart empties, so acknowledged data would be lost. Set persistence.enabled=true, or spool.enabled=false to run without a spool knowingly." -}}
{{- end -}}
{{- if and $v.metrics.serviceMonitor.enabled (not $v.backends.prometheus.enabled) -}}
{{- fail "[ERROR] metrics.serviceMonitor.enabled: there is no training-metrics endpoint to scrape. Set backends.prometheus.enabled=true." -}}
{{- end -}}
{{- if and $v.podDisruptionBudget.enabled (ge (int $v.podDisruptionBudget.minAvailable) (int $v.replicas)) (gt (int $v.replicas) 1) -}}
{{- fail "[ERROR] podDisruptionBudget.minAvailable: must be below replicas or no pod can ever be evicted. Lower it or raise replicas." -}}
{{- end -}}
{{- $ports := list (int $v.service.grpcPort) (int $v.service.httpPort) (int $v.backends.prometheus.port) -}}
{{- if ne (len ($ports | uniq)) 3 -}}
{{- fail "[ERROR] service.grpcPort: service.grpcPort, service.httpPort and backends.prometheus.port must differ. Change one of them." -}}
{{- end -}}
{{- end -}}

{{/* The collector's own config file (collector/collector.example.yaml documents every key). */}}
{{- define "otel-rl.collectorConfig" -}}
{{- $v := .Values -}}
receivers:
  http: {enabled: true, host: 0.0.0.0, port: {{ $v.service.httpPort }}}
  grpc: {enabled: true, host: 0.0.0.0, port: {{ $v.service.grpcPort }}}
  health: {enabled: true, host: 0.0.0.0, port: {{ $v.service.healthPort }}}
{{- if $v.auth.existingSecret }}
auth: {token_file: /var/run/secrets/otel-rl/auth/{{ $v.auth.tokenKey }}, metrics: {{ $v.auth.metrics }}}
{{- end }}
{{- if $v.tls.existingSecret }}
tls: {cert_file: /var/run/secrets/otel-rl/tls/tls.crt, key_file: /var/run/secrets/otel-rl/tls/tls.key}
{{- end }}
limits:
  max_request_bytes: {{ int $v.collector.maxRequestBytes }}
  max_decompressed_bytes: {{ int $v.collector.maxDecompressedBytes }}
  max_queue_points: {{ int $v.collector.maxQueuePoints }}
  max_connections: {{ int $v.collector.maxConnections }}
  idle_timeout_s: {{ $v.collector.idleTimeoutSeconds }}
  read_timeout_s: {{ $v.collector.readTimeoutSeconds }}
  workers: {{ int $v.collector.workers }}
  max_pending_requests: {{ int $v.collector.maxPendingRequests }}
  header_timeout_s: {{ $v.collector.headerTimeoutSeconds }}
  max_connections_per_client: {{ int $v.collector.maxConnectionsPerClient }}
  max_pending_handshakes: {{ int $v.collector.maxPendingHandshakes }}
  max_log_records: {{ int $v.collector.maxLogRecords }}
  max_table_columns: {{ int $v.collector.maxTableColumns }}
  max_table_cells: {{ int $v.collector.maxTableCells }}
  max_media_bytes: {{ int $v.collector.maxMediaBytes }}
  max_resource_blocks: {{ int $v.collector.maxResourceBlocks }}
  max_request_objects: {{ int $v.collector.maxRequestObjects }}
  max_json_bytes: {{ int $v.collector.maxJsonBytes }}
reduce:
  gauge: {{ $v.collector.reduceGauge }}
  counter: {{ $v.collector.reduceCounter }}
  timeout_s: {{ $v.collector.reduceTimeoutSeconds }}
  max_pending: {{ int $v.collector.reduceMaxPending }}
  rules: {{- if $v.collector.reduceRules }}
  {{- range $pattern, $op := $v.collector.reduceRules }}
    {{ $pattern | quote }}: {{ $op }}
  {{- end }}
  {{- else }} {}
  {{- end }}
tensorboard: {enabled: {{ $v.backends.tensorboard.enabled }}, log_dir: {{ $v.persistence.mountPath }}/runs, max_open_files: {{ int $v.collector.maxOpenFiles }}}
wandb: {enabled: {{ $v.backends.wandb.enabled }}, mode: {{ $v.backends.wandb.mode }}, project: {{ $v.backends.wandb.project | quote }}{{ if $v.backends.wandb.entity }}, entity: {{ $v.backends.wandb.entity | quote }}{{ end }}, dir: {{ $v.persistence.mountPath }}, max_open_runs: {{ int $v.collector.maxOpenWandbRuns }}}
swanlab: {enabled: {{ $v.backends.swanlab.enabled }}, mode: {{ $v.backends.swanlab.mode }}, project: {{ $v.backends.swanlab.project | quote }}, logdir: {{ $v.persistence.mountPath }}/swanlog}
mlflow: {enabled: {{ $v.backends.mlflow.enabled }}, tracking_uri: {{ default "http://127.0.0.1:5000" $v.backends.mlflow.trackingUri | quote }}, experiment: {{ $v.backends.mlflow.experiment | quote }}}
mlflow_traces: {enabled: {{ and $v.backends.mlflow.enabled $v.backends.mlflow.traces }}, tracking_uri: {{ default "http://127.0.0.1:5000" $v.backends.mlflow.trackingUri | quote }}, experiment: {{ $v.backends.mlflow.experiment | quote }}}
prometheus: {enabled: {{ $v.backends.prometheus.enabled }}, host: 0.0.0.0, port: {{ $v.backends.prometheus.port }}}
{{- if and $v.spool.enabled $v.persistence.enabled }}
spool: {dir: {{ $v.persistence.mountPath }}/spool, max_bytes: {{ int $v.spool.maxBytes }}, checkpoint_interval_s: {{ $v.spool.checkpointIntervalSeconds }}}
{{- end }}
{{- end -}}

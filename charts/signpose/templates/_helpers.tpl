{{/* Names, labels and the shared secret/endpoint lookups. */}}

{{- define "signpose.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "signpose.fullname" -}}
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

{{- define "signpose.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "signpose.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: signpose
{{- end -}}

{{/* selectorLabels: (dict "ctx" $ "component" "mlflow") */}}
{{- define "signpose.selectorLabels" -}}
app.kubernetes.io/name: {{ include "signpose.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "signpose.image" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}


{{/*
A generated secret value, the same everywhere in one render and kept across upgrades:
the live Secret's value when `lookup` finds it, else a random alphanumeric string cached in
.Values.__generated so that every template using it (e.g. MinIO's root password and the
pipeline's S3 secret) sees the same value.
Args: (dict "ctx" $ "secret" NAME "key" KEY "length" N)
*/}}
{{- define "signpose.generated" -}}
{{- $ctx := .ctx -}}
{{- if not (hasKey $ctx.Values "__generated") -}}
{{- $_ := set $ctx.Values "__generated" (dict) -}}
{{- end -}}
{{- $cache := get $ctx.Values "__generated" -}}
{{- $id := printf "%s/%s" .secret .key -}}
{{- if not (hasKey $cache $id) -}}
{{- $value := "" -}}
{{- $live := lookup "v1" "Secret" $ctx.Release.Namespace .secret -}}
{{- if and $live $live.data (hasKey $live.data .key) -}}
{{- $value = index $live.data .key | b64dec -}}
{{- else -}}
{{- $value = randAlphaNum (int .length) -}}
{{- end -}}
{{- $_ := set $cache $id $value -}}
{{- end -}}
{{- get $cache $id -}}
{{- end -}}

{{/* ---------- MLflow ---------- */}}
{{- define "signpose.mlflow.fullname" -}}{{ include "signpose.fullname" . }}-mlflow{{- end -}}
{{- define "signpose.mlflow.authSecretName" -}}
{{- default (printf "%s-auth" (include "signpose.mlflow.fullname" .)) .Values.mlflow.auth.existingSecret -}}
{{- end -}}
{{- define "signpose.mlflow.adminPassword" -}}
{{- if .Values.mlflow.auth.adminPassword -}}{{ .Values.mlflow.auth.adminPassword }}
{{- else -}}{{ include "signpose.generated" (dict "ctx" . "secret" (include "signpose.mlflow.authSecretName" .) "key" "MLFLOW_TRACKING_PASSWORD" "length" 24) }}
{{- end -}}
{{- end -}}
{{/* The basic-auth app's Flask secret key: Secret name and key. */}}
{{- define "signpose.mlflow.flaskSecretName" -}}
{{- default (printf "%s-flask" (include "signpose.mlflow.fullname" .)) .Values.mlflow.auth.flaskSecretKey.existingSecret -}}
{{- end -}}
{{- define "signpose.mlflow.flaskSecretKeyKey" -}}
{{- if .Values.mlflow.auth.flaskSecretKey.existingSecret -}}{{ .Values.mlflow.auth.flaskSecretKey.existingSecretKey }}{{- else -}}MLFLOW_FLASK_SERVER_SECRET_KEY{{- end -}}
{{- end -}}
{{/* Looked up in the live Secret first (signpose.generated), so an upgrade keeps the key. */}}
{{- define "signpose.mlflow.flaskSecretKey" -}}
{{- include "signpose.generated" (dict "ctx" . "secret" (include "signpose.mlflow.flaskSecretName" .) "key" "MLFLOW_FLASK_SERVER_SECRET_KEY" "length" 48) -}}
{{- end -}}
{{/* The pipeline's and the read-only MLflow users: Secret names and passwords. */}}
{{- define "signpose.mlflow.pipelineSecretName" -}}
{{- default (printf "%s-pipeline" (include "signpose.mlflow.fullname" .)) .Values.mlflow.auth.pipelineUser.existingSecret -}}
{{- end -}}
{{- define "signpose.mlflow.pipelinePassword" -}}
{{- if .Values.mlflow.auth.pipelineUser.password -}}{{ .Values.mlflow.auth.pipelineUser.password }}
{{- else -}}{{ include "signpose.generated" (dict "ctx" . "secret" (include "signpose.mlflow.pipelineSecretName" .) "key" "MLFLOW_TRACKING_PASSWORD" "length" 32) }}
{{- end -}}
{{- end -}}
{{- define "signpose.mlflow.readerSecretName" -}}
{{- default (printf "%s-viewer" (include "signpose.mlflow.fullname" .)) .Values.mlflow.auth.readOnlyUser.existingSecret -}}
{{- end -}}
{{- define "signpose.mlflow.readerPassword" -}}
{{- if .Values.mlflow.auth.readOnlyUser.password -}}{{ .Values.mlflow.auth.readOnlyUser.password }}
{{- else -}}{{ include "signpose.generated" (dict "ctx" . "secret" (include "signpose.mlflow.readerSecretName" .) "key" "MLFLOW_TRACKING_PASSWORD" "length" 32) }}
{{- end -}}
{{- end -}}
{{/* True when the hook Job creates MLflow users (auth on and a pipeline user wanted). */}}
{{- define "signpose.mlflow.managesUsers" -}}
{{- if and .Values.mlflow.auth.enabled .Values.mlflow.auth.pipelineUser.enabled -}}true{{- end -}}
{{- end -}}
{{- define "signpose.mlflow.serviceAccountName" -}}
{{- if .Values.mlflow.serviceAccount.create -}}
{{- default (include "signpose.mlflow.fullname" .) .Values.mlflow.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.mlflow.serviceAccount.name -}}
{{- end -}}
{{- end -}}
{{- define "signpose.mlflow.serviceHost" -}}
{{- printf "%s.%s.svc.cluster.local" (include "signpose.mlflow.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- define "signpose.mlflow.url" -}}
{{- printf "http://%s:%v" (include "signpose.mlflow.serviceHost" .) .Values.mlflow.service.port -}}
{{- end -}}

{{/* ---------- Database ---------- */}}
{{- define "signpose.postgresql.fullname" -}}{{ include "signpose.fullname" . }}-postgresql{{- end -}}
{{- define "signpose.db.secretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- default (include "signpose.postgresql.fullname" .) .Values.postgresql.auth.existingSecret -}}
{{- else -}}
{{- default (printf "%s-external-db" (include "signpose.fullname" .)) .Values.externalDatabase.existingSecret -}}
{{- end -}}
{{- end -}}
{{- define "signpose.db.secretKey" -}}
{{- if .Values.postgresql.enabled -}}POSTGRES_PASSWORD{{- else -}}{{ .Values.externalDatabase.existingSecretPasswordKey }}{{- end -}}
{{- end -}}
{{- define "signpose.db.host" -}}
{{- if .Values.postgresql.enabled -}}{{ include "signpose.postgresql.fullname" . }}.{{ .Release.Namespace }}.svc.cluster.local{{- else -}}{{ .Values.externalDatabase.host }}{{- end -}}
{{- end -}}
{{- define "signpose.db.port" -}}
{{- if .Values.postgresql.enabled -}}5432{{- else -}}{{ .Values.externalDatabase.port }}{{- end -}}
{{- end -}}
{{- define "signpose.db.name" -}}
{{- if .Values.postgresql.enabled -}}{{ .Values.postgresql.auth.database }}{{- else -}}{{ .Values.externalDatabase.database }}{{- end -}}
{{- end -}}
{{- define "signpose.db.user" -}}
{{- if .Values.postgresql.enabled -}}{{ .Values.postgresql.auth.username }}{{- else -}}{{ .Values.externalDatabase.username }}{{- end -}}
{{- end -}}
{{- define "signpose.db.sslmode" -}}
{{- if .Values.postgresql.enabled -}}disable{{- else -}}{{ .Values.externalDatabase.sslmode }}{{- end -}}
{{- end -}}
{{/*
The CA that signed the external database's certificate, for sslmode verify-ca / verify-full: libpq
otherwise looks for ~/.postgresql/root.crt, which no image has, and every connection fails. Mounted
from externalDatabase.sslRootCert.existingSecret; PGSSLROOTCERT (libpq's environment variable for the
sslrootcert connection parameter, https://www.postgresql.org/docs/current/libpq-envars.html) points
every libpq connection of the pod at it: the init container's psycopg2, the migration's and the
server's SQLAlchemy engines. Empty when there is none.
*/}}
{{- define "signpose.db.rootCertDir" -}}/etc/signpose/db-ca{{- end -}}
{{- define "signpose.db.rootCertPath" -}}
{{- if not .Values.postgresql.enabled -}}
{{- with .Values.externalDatabase.sslRootCert.existingSecret -}}
{{ include "signpose.db.rootCertDir" $ }}/{{ $.Values.externalDatabase.sslRootCert.key }}
{{- else -}}
{{- if hasPrefix "verify-" $.Values.externalDatabase.sslmode -}}
{{- fail (printf "externalDatabase.sslmode=%s needs the CA that signed the database's certificate: set externalDatabase.sslRootCert.existingSecret (a Secret with key %s, e.g. your cloud's CA bundle)" $.Values.externalDatabase.sslmode $.Values.externalDatabase.sslRootCert.key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{/* The pod volume and the container mount of that CA (nothing without one). */}}
{{- define "signpose.db.rootCertVolume" -}}
{{- if include "signpose.db.rootCertPath" . }}
- name: db-ca
  secret:
    secretName: {{ .Values.externalDatabase.sslRootCert.existingSecret }}
    items:
      - key: {{ .Values.externalDatabase.sslRootCert.key }}
        path: {{ .Values.externalDatabase.sslRootCert.key }}
{{- end }}
{{- end -}}
{{- define "signpose.db.rootCertMount" -}}
{{- if include "signpose.db.rootCertPath" . }}
- name: db-ca
  mountPath: {{ include "signpose.db.rootCertDir" . }}
  readOnly: true
{{- end }}
{{- end -}}
{{- define "signpose.db.password" -}}
{{- if .Values.postgresql.enabled -}}
{{- if .Values.postgresql.auth.password -}}{{ .Values.postgresql.auth.password }}
{{- else -}}{{ include "signpose.generated" (dict "ctx" . "secret" (include "signpose.db.secretName" .) "key" "POSTGRES_PASSWORD" "length" 24) }}
{{- end -}}
{{- else -}}{{ .Values.externalDatabase.password }}
{{- end -}}
{{- end -}}

{{/* ---------- S3 ---------- */}}
{{- define "signpose.minio.fullname" -}}{{ include "signpose.fullname" . }}-minio{{- end -}}
{{- define "signpose.s3.secretName" -}}
{{- if .Values.minio.enabled -}}
{{- default (include "signpose.minio.fullname" .) .Values.minio.auth.existingSecret -}}
{{- else -}}
{{- default (printf "%s-external-s3" (include "signpose.fullname" .)) .Values.externalS3.existingSecret -}}
{{- end -}}
{{- end -}}
{{/* True when MLflow reaches S3 with static keys (a Secret); false with externalS3.workloadIdentity,
where the server's ServiceAccount identity (IRSA, GKE/Azure workload identity) signs the requests. */}}
{{- define "signpose.s3.hasStaticKeys" -}}
{{- if or .Values.minio.enabled (not .Values.externalS3.workloadIdentity) -}}true{{- end -}}
{{- end -}}
{{/* True when the chart itself knows the S3 credentials (created from values or generated). */}}
{{- define "signpose.s3.chartOwnsSecret" -}}
{{- if .Values.minio.enabled -}}{{ if not .Values.minio.auth.existingSecret }}true{{ end }}
{{- else -}}{{ if and (not .Values.externalS3.workloadIdentity) (not .Values.externalS3.existingSecret) .Values.externalS3.accessKeyId }}true{{ end }}
{{- end -}}
{{- end -}}
{{- define "signpose.s3.accessKeyId" -}}
{{- if .Values.minio.enabled -}}
{{- if .Values.minio.auth.rootUser -}}{{ .Values.minio.auth.rootUser }}
{{- else -}}{{ include "signpose.generated" (dict "ctx" . "secret" (include "signpose.s3.secretName" .) "key" "AWS_ACCESS_KEY_ID" "length" 16) | lower }}
{{- end -}}
{{- else -}}{{ .Values.externalS3.accessKeyId }}
{{- end -}}
{{- end -}}
{{- define "signpose.s3.secretAccessKey" -}}
{{- if .Values.minio.enabled -}}
{{- if .Values.minio.auth.rootPassword -}}{{ .Values.minio.auth.rootPassword }}
{{- else -}}{{ include "signpose.generated" (dict "ctx" . "secret" (include "signpose.s3.secretName" .) "key" "AWS_SECRET_ACCESS_KEY" "length" 40) }}
{{- end -}}
{{- else -}}{{ .Values.externalS3.secretAccessKey }}
{{- end -}}
{{- end -}}
{{/* In-cluster or external endpoint URL; empty for AWS S3. */}}
{{- define "signpose.s3.endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "http://%s.%s.svc.cluster.local:9000" (include "signpose.minio.fullname" .) .Release.Namespace -}}
{{- else -}}{{ .Values.externalS3.endpoint }}
{{- end -}}
{{- end -}}

{{/* ---------- The MinIO user of the pipelines ---------- */}}
{{- define "signpose.minio.managesPipelineUser" -}}
{{- if and .Values.minio.enabled .Values.minio.pipelineUser.enabled -}}true{{- end -}}
{{- end -}}
{{- define "signpose.minio.pipelineSecretName" -}}
{{- default (printf "%s-pipeline" (include "signpose.minio.fullname" .)) .Values.minio.pipelineUser.existingSecret -}}
{{- end -}}
{{- define "signpose.minio.pipelineAccessKeyId" -}}
{{- include "signpose.generated" (dict "ctx" . "secret" (include "signpose.minio.pipelineSecretName" .) "key" "AWS_ACCESS_KEY_ID" "length" 20) | lower -}}
{{- end -}}
{{- define "signpose.minio.pipelineSecretAccessKey" -}}
{{- include "signpose.generated" (dict "ctx" . "secret" (include "signpose.minio.pipelineSecretName" .) "key" "AWS_SECRET_ACCESS_KEY" "length" 40) -}}
{{- end -}}
{{/*
The pipeline user's policy (IAM policy grammar, which MinIO implements): list and read/write
objects in s3.bucket and minio.pipelineUser.extraBuckets; nothing under MLflow's artifact prefix
(the server proxies artifacts, so the pipelines never need it, and cannot rewrite a registered
model's files behind MLflow's back); no bucket creation or deletion, no admin actions.
*/}}
{{- define "signpose.minio.pipelinePolicy" -}}
{{- $buckets := prepend .Values.minio.pipelineUser.extraBuckets .Values.s3.bucket | uniq -}}
{{- $bucketArns := list -}}
{{- $objectArns := list -}}
{{- range $buckets -}}
{{- $bucketArns = append $bucketArns (printf "arn:aws:s3:::%s" .) -}}
{{- $objectArns = append $objectArns (printf "arn:aws:s3:::%s/*" .) -}}
{{- end -}}
{{- $prefix := trimAll "/" .Values.mlflow.artifactsPrefix -}}
{{- $statements := list
  (dict "Sid" "PipelineBuckets" "Effect" "Allow" "Resource" $bucketArns
        "Action" (list "s3:GetBucketLocation" "s3:ListBucket" "s3:ListBucketMultipartUploads"))
  (dict "Sid" "PipelineObjects" "Effect" "Allow" "Resource" $objectArns
        "Action" (list "s3:GetObject" "s3:PutObject" "s3:DeleteObject" "s3:AbortMultipartUpload" "s3:ListMultipartUploadParts"))
  (dict "Sid" "NotMlflowArtifacts" "Effect" "Deny" "Action" (list "s3:*")
        "Resource" (list (printf "arn:aws:s3:::%s/%s" .Values.s3.bucket $prefix) (printf "arn:aws:s3:::%s/%s/*" .Values.s3.bucket $prefix))) -}}
{{- toPrettyJson (dict "Version" "2012-10-17" "Statement" $statements) -}}
{{- end -}}

{{/*
Where the pipeline Secret's S3 keys come from: "minio-user" (the MinIO pipeline user), "external-user"
(externalS3.pipeline*), "shared" (the same keys as MLflow's, known to the chart), or "" (not known:
the Secret is created by hand).
*/}}
{{- define "signpose.pipeline.s3Source" -}}
{{- if include "signpose.minio.managesPipelineUser" . -}}{{ if not .Values.minio.pipelineUser.existingSecret }}minio-user{{ end }}
{{- else if and (not .Values.minio.enabled) .Values.externalS3.pipelineAccessKeyId -}}external-user
{{- else if include "signpose.s3.chartOwnsSecret" . -}}shared
{{- end -}}
{{- end -}}
{{- define "signpose.pipeline.s3AccessKeyId" -}}
{{- $source := include "signpose.pipeline.s3Source" . -}}
{{- if eq $source "minio-user" -}}{{ include "signpose.minio.pipelineAccessKeyId" . }}
{{- else if eq $source "external-user" -}}{{ .Values.externalS3.pipelineAccessKeyId }}
{{- else -}}{{ include "signpose.s3.accessKeyId" . }}
{{- end -}}
{{- end -}}
{{- define "signpose.pipeline.s3SecretAccessKey" -}}
{{- $source := include "signpose.pipeline.s3Source" . -}}
{{- if eq $source "minio-user" -}}{{ include "signpose.minio.pipelineSecretAccessKey" . }}
{{- else if eq $source "external-user" -}}{{ required "externalS3.pipelineSecretAccessKey is required with externalS3.pipelineAccessKeyId" .Values.externalS3.pipelineSecretAccessKey }}
{{- else -}}{{ include "signpose.s3.secretAccessKey" . }}
{{- end -}}
{{- end -}}
{{/*
Where the pipeline Secret's MLflow login comes from: "pipeline-user" (the chart knows it), "admin"
(no pipeline user, the chart knows the admin's), or "" (not known or auth off).
*/}}
{{- define "signpose.pipeline.mlflowSource" -}}
{{- if .Values.mlflow.auth.enabled -}}
{{- if .Values.mlflow.auth.pipelineUser.enabled -}}
{{- if not .Values.mlflow.auth.pipelineUser.existingSecret -}}pipeline-user{{- end -}}
{{- else if not .Values.mlflow.auth.existingSecret -}}admin
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "signpose.pipelineNamespace" -}}
{{- default .Release.Namespace .Values.pipelineEnv.namespace -}}
{{- end -}}

{{/* The shared security contexts, with per-component overrides merged on top. */}}
{{- define "signpose.podSecurityContext" -}}
{{- $override := .override | default dict -}}
{{- toYaml (mergeOverwrite (deepCopy .ctx.Values.podSecurityContext) $override) -}}
{{- end -}}
{{- define "signpose.securityContext" -}}
{{- $override := .override | default dict -}}
{{- toYaml (mergeOverwrite (deepCopy .ctx.Values.securityContext) $override) -}}
{{- end -}}

{{/* Database + S3 environment shared by MLflow's init and server containers: names, never values. */}}
{{- define "signpose.mlflow.storeEnv" -}}
- name: DB_HOST
  value: {{ include "signpose.db.host" . | quote }}
- name: DB_PORT
  value: {{ include "signpose.db.port" . | quote }}
- name: DB_NAME
  value: {{ include "signpose.db.name" . | quote }}
- name: DB_USER
  value: {{ include "signpose.db.user" . | quote }}
- name: DB_SSLMODE
  value: {{ include "signpose.db.sslmode" . | quote }}
{{- with include "signpose.db.rootCertPath" . }}
- name: PGSSLROOTCERT
  value: {{ . | quote }}
{{- end }}
- name: DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "signpose.db.secretName" . }}
      key: {{ include "signpose.db.secretKey" . }}
{{- if include "signpose.s3.hasStaticKeys" . }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "signpose.s3.secretName" . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "signpose.s3.secretName" . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.s3.region | quote }}
{{- with include "signpose.s3.endpoint" . }}
- name: MLFLOW_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
- name: SIGNPOSE_BUCKET
  value: {{ .Values.s3.bucket | quote }}
- name: HOME
  value: /tmp
{{- end -}}

{{/*
The backend store URI, from the store environment above (Kubernetes expands $(VAR) from earlier
entries). The password is not in it: libpq reads PGPASSWORD (libpq-envars), so a password with
`@ / : % ?` needs no escaping (Kubernetes' $(VAR) cannot percent-encode), and it appears in no URI
that MLflow or its auth config could print. User and database name are percent-encoded here
(urlquery; its `+` for a space would stay a `+` in SQLAlchemy's unquoting, hence %20).
*/}}
{{- define "signpose.mlflow.backendEnv" -}}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "signpose.db.secretName" . }}
      key: {{ include "signpose.db.secretKey" . }}
- name: MLFLOW_BACKEND_STORE_URI
  value: {{ printf "postgresql+psycopg2://%s@$(DB_HOST):$(DB_PORT)/%s?sslmode=$(DB_SSLMODE)" (include "signpose.db.user" . | urlquery | replace "+" "%20") (include "signpose.db.name" . | urlquery | replace "+" "%20") | quote }}
{{- end -}}

{{/* The annotation that keeps a generated credential when the release is uninstalled: the data it
protects (Postgres volume, MLflow users) outlives the release, and a reinstall must find it again. */}}
{{- define "signpose.keepAnnotation" -}}
helm.sh/resource-policy: keep
{{- end -}}

{{/* Pod template labels: the selector labels plus the common ones, each key once. (dict "ctx" $ "component" NAME) */}}
{{- define "signpose.podLabels" -}}
{{ include "signpose.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: signpose
{{- end -}}

{{/*
The retraining hook Job: where it runs and as whom (templates/retraining.yaml).
- kfp.mode standalone: KFP without multi-user isolation; release namespace, the chart's (or a named)
  ServiceAccount, no credentials.
- kfp.mode multiUser, multiUser.jobNamespace profile: in the profile namespace (kfp.namespace) as the
  ServiceAccount Kubeflow's profile controller creates there (default-editor, bound to kubeflow-edit,
  which aggregates kubeflow-pipelines-edit); Kubeflow's `ml-pipeline` NetworkPolicy admits pods of
  namespaces labelled app.kubernetes.io/part-of=kubeflow-profile (kubeflow/manifests
  common/kubeflow-namespace/base/kubeflow/ml-pipeline.yaml, applications/profiles/upstream/base/namespace-labels.yaml).
- kfp.mode multiUser, multiUser.jobNamespace release: in the release namespace as the chart's
  ServiceAccount, with a RoleBinding to kubeflow-pipelines-edit in the profile namespace and a
  NetworkPolicy next to KFP's API server that admits the hook pod (the upstream one admits only
  profile namespaces and istio-system).
*/}}
{{- define "signpose.retraining.fullname" -}}{{ include "signpose.fullname" . }}-retraining{{- end -}}
{{- define "signpose.retraining.inProfile" -}}
{{- if and (eq .Values.retraining.kfp.mode "multiUser") (eq .Values.retraining.kfp.multiUser.jobNamespace "profile") -}}true{{- end -}}
{{- end -}}
{{- define "signpose.retraining.jobNamespace" -}}
{{- if include "signpose.retraining.inProfile" . -}}{{ .Values.retraining.kfp.namespace }}{{- else -}}{{ .Release.Namespace }}{{- end -}}
{{- end -}}
{{- define "signpose.retraining.serviceAccountName" -}}
{{- if include "signpose.retraining.inProfile" . -}}
{{- required "retraining.kfp.multiUser.profileServiceAccount is required with jobNamespace=profile" .Values.retraining.kfp.multiUser.profileServiceAccount -}}
{{- else -}}
{{- default (include "signpose.retraining.fullname" .) .Values.retraining.kfp.serviceAccountName -}}
{{- end -}}
{{- end -}}

{{/* Names: at most 63 characters (DNS labels). */}}
{{- define "tgi-csd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tgi-csd.fullname" -}}
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

{{- define "tgi-csd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tgi-csd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tgi-csd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tgi-csd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tgi-csd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tgi-csd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from {repository, tag, digest}: the digest wins; the tag defaults to the second argument. */}}
{{- define "tgi-csd.imageRef" -}}
{{- $image := index . 0 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default (index . 1) $image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when a cascade config is rendered into a ConfigMap and passed with --speculation-config. */}}
{{- define "tgi-csd.cascadeEnabled" -}}
{{- if and (eq .Values.speculation.strategy "csd") .Values.speculation.cascade }}true{{ end }}
{{- end }}

{{/* The cascade config: the values' map, with target.model defaulting to model.id. */}}
{{- define "tgi-csd.cascadeYaml" -}}
{{- $cascade := deepCopy .Values.speculation.cascade }}
{{- $target := merge (default dict $cascade.target) (dict "model" .Values.model.id) }}
{{- toYaml (set $cascade "target" $target) }}
{{- end }}

{{- define "tgi-csd.cascadePath" -}}
/etc/tgi-csd/cascade.yaml
{{- end }}

{{- define "tgi-csd.modelCacheClaim" -}}
{{- default (printf "%s-model-cache" (include "tgi-csd.fullname" .)) .Values.modelCache.persistence.existingClaim }}
{{- end }}

{{/* The launcher's arguments, as a YAML list (flags in --name=value form). */}}
{{- define "tgi-csd.args" -}}
{{- $v := .Values }}
{{- $args := list (printf "--model-id=%s" $v.model.id) }}
{{- with $v.model.revision }}
{{- $args = append $args (printf "--revision=%s" .) }}
{{- end }}
{{- $args = concat $args (list "--hostname=0.0.0.0" (printf "--port=%d" (int64 $v.server.port))) }}
{{- $args = append $args (printf "--speculate=%d" (int64 $v.speculation.speculate)) }}
{{- $args = append $args (printf "--speculation-strategy=%s" $v.speculation.strategy) }}
{{- if include "tgi-csd.cascadeEnabled" . }}
{{- $args = append $args (printf "--speculation-config=%s" (include "tgi-csd.cascadePath" .)) }}
{{- end }}
{{- range $key, $flag := dict "maxBatchPrefillTokens" "max-batch-prefill-tokens" "maxBatchTotalTokens" "max-batch-total-tokens" "maxBatchSize" "max-batch-size" "maxInputTokens" "max-input-tokens" "maxTotalTokens" "max-total-tokens" }}
{{- with index $v.server $key }}
{{- $args = append $args (printf "--%s=%d" $flag (int64 .)) }}
{{- end }}
{{- end }}
{{- toYaml (concat $args $v.server.extraArgs) }}
{{- end }}

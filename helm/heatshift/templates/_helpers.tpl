{{/* Names and labels shared by every template. */}}

{{- define "heatshift.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* release-chart, or just the release name when it already contains the chart name. */}}
{{- define "heatshift.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "heatshift.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "heatshift.selectorLabels" -}}
app.kubernetes.io/name: {{ include "heatshift.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "heatshift.labels" -}}
helm.sh/chart: {{ include "heatshift.chart" . }}
{{ include "heatshift.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: heatshift
{{- end -}}

{{- define "heatshift.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "heatshift.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "heatshift.webhookServiceName" -}}
{{- printf "%s-webhook" (include "heatshift.fullname" .) -}}
{{- end -}}

{{- define "heatshift.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "heatshift.fullname" .) -}}
{{- end -}}

{{- define "heatshift.meteringSecretNamespace" -}}
{{- default .Release.Namespace .Values.metering.secretNamespace -}}
{{- end -}}

{{- define "heatshift.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The webhook's serving certificate and CA, generated once by Helm and reused on upgrades (looked
up from the existing Secret), so an upgrade does not break admission while pods roll. Returns a
dict with ca, crt, key (PEM). Not used with cert-manager or an external URL.
*/}}
{{- define "heatshift.webhookCerts" -}}
{{- $secretName := include "heatshift.webhookSecretName" . -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName -}}
{{- if and $existing (index $existing.data "ca.crt") (index $existing.data "tls.crt") (index $existing.data "tls.key") -}}
ca: {{ index $existing.data "ca.crt" | b64dec | quote }}
crt: {{ index $existing.data "tls.crt" | b64dec | quote }}
key: {{ index $existing.data "tls.key" | b64dec | quote }}
{{- else -}}
{{- $svc := include "heatshift.webhookServiceName" . -}}
{{- $days := int .Values.webhook.certValidityDays -}}
{{- $ca := genCA (printf "%s-ca" (include "heatshift.fullname" .)) $days -}}
{{- $dns := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc .Release.Namespace) nil $dns $days $ca -}}
ca: {{ $ca.Cert | quote }}
crt: {{ $cert.Cert | quote }}
key: {{ $cert.Key | quote }}
{{- end -}}
{{- end -}}

{{/* Non-empty when the operator pods serve the webhook themselves (not an external URL). */}}
{{- define "heatshift.webhookInCluster" -}}
{{- if and .Values.webhook.enabled (not .Values.webhook.externalURL) -}}true{{- end -}}
{{- end -}}

{{- define "rtcplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rtcplane.fullname" -}}
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

{{- define "rtcplane.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "rtcplane.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "rtcplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rtcplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rtcplane.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "rtcplane.secretName" -}}
{{- if .Values.existingSecret -}}
{{ .Values.existingSecret }}
{{- else -}}
{{ include "rtcplane.fullname" . }}
{{- end -}}
{{- end -}}

{{/* "true" when the database is external (given here or in a Secret): then the migration Job runs. */}}
{{- define "rtcplane.externalDb" -}}
{{- if or .Values.externalDatabase.url .Values.externalDatabase.fromSecret (hasKey .Values.secretEnv "RTCPLANE__STORAGE__URL") -}}
true
{{- end -}}
{{- end -}}

{{/* Environment shared by the server and the migration Job. */}}
{{- define "rtcplane.env" -}}
- name: RTCPLANE__NODE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: RTCPLANE__HTTP__PUBLIC_LISTEN
  value: "0.0.0.0:{{ .Values.service.publicPort }}"
- name: RTCPLANE__HTTP__ADMIN_LISTEN
  value: "0.0.0.0:{{ .Values.service.adminPort }}"
- name: RTCPLANE__TURN__ENABLED
  value: {{ .Values.turn.enabled | quote }}
{{- if .Values.externalDatabase.url }}
- name: RTCPLANE__STORAGE__URL
  value: {{ .Values.externalDatabase.url | quote }}
{{- else if not (include "rtcplane.externalDb" .) }}
- name: RTCPLANE__STORAGE__URL
  value: "sqlite:/var/lib/rtcplane/rtcplane.db"
{{- end }}
{{- if and .Values.migrationJob.enabled (include "rtcplane.externalDb" .) }}
- name: RTCPLANE__STORAGE__MIGRATE_ON_START
  value: "false"
{{- end }}
{{- end -}}

{{- define "rtcplane.envFrom" -}}
{{- if or .Values.existingSecret .Values.secretEnv }}
envFrom:
  - secretRef:
      name: {{ include "rtcplane.secretName" . }}
{{- end }}
{{- end -}}

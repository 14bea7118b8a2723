variable "broker_endpoint" {
  description = "The broker's admin API base URL."
  type        = string
}

variable "cluster_issuer_url" {
  description = "The cluster's service account issuer (kube-apiserver --service-account-issuer)."
  type        = string
}

variable "namespace" {
  description = "Namespace of the workload."
  type        = string
  default     = "payments"
}

variable "service_account" {
  description = "Kubernetes service account of the workload."
  type        = string
  default     = "api"
}

variable "project_id" {
  description = "Google Cloud project."
  type        = string
}

variable "gcp_service_account_email" {
  description = "Google service account the workload impersonates (null: bind roles to the principal directly)."
  type        = string
  default     = null
}

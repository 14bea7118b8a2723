variable "broker_endpoint" {
  description = "The broker's admin API base URL."
  type        = string
}

variable "project_path" {
  description = "The GitLab project (GROUP/PROJECT)."
  type        = string
  default     = "acme/payments"
}

variable "branch" {
  description = "The branch whose pipelines may deploy."
  type        = string
  default     = "main"
}

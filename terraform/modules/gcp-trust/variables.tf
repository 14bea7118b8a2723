variable "broker_url" {
  description = "The broker's issuer URL: its server.public_url, exactly as in the `iss` of the tokens it issues (e.g. data.fedbroker_openid_configuration.this.issuer)."
  type        = string

  validation {
    condition     = startswith(var.broker_url, "https://")
    error_message = "Google only trusts OIDC issuers over https://."
  }
}

variable "project_id" {
  description = "Project of the pool (default: the provider's project)."
  type        = string
  default     = null
}

variable "pool_id" {
  description = "Workload identity pool ID (4 to 32 characters: lowercase letters, digits, hyphens)."
  type        = string
  default     = "fedbroker"

  validation {
    condition     = can(regex("^[a-z0-9-]{4,32}$", var.pool_id)) && !startswith(var.pool_id, "gcp-")
    error_message = "4 to 32 lowercase letters, digits or hyphens, not starting with gcp-."
  }
}

variable "pool_display_name" {
  description = "Display name of the pool (at most 32 characters)."
  type        = string
  default     = "fedbroker"
}

variable "provider_id" {
  description = "Workload identity pool provider ID (4 to 32 characters)."
  type        = string
  default     = "fedbroker"

  validation {
    condition     = can(regex("^[a-z0-9-]{4,32}$", var.provider_id)) && !startswith(var.provider_id, "gcp-")
    error_message = "4 to 32 lowercase letters, digits or hyphens, not starting with gcp-."
  }
}

variable "provider_display_name" {
  description = "Display name of the provider (at most 32 characters)."
  type        = string
  default     = "fedbroker"
}

variable "subjects" {
  description = "The exact `sub` values (the rules' issue.subject, rendered) this trust admits. Each must be at most 127 bytes (google.subject's limit)."
  type        = list(string)

  validation {
    condition     = length(var.subjects) > 0 && alltrue([for s in var.subjects : length(s) > 0 && length(s) <= 127])
    error_message = "Give at least one subject, each 1 to 127 characters."
  }
}

variable "attribute_mapping" {
  description = "Attribute mapping of the provider. google.subject must be mapped."
  type        = map(string)
  default = {
    "google.subject" = "assertion.sub"
  }
}

variable "attribute_condition" {
  description = "CEL condition on the incoming token. Default: assertion.sub is one of var.subjects."
  type        = string
  default     = null
}

variable "allowed_audiences" {
  description = "Accepted `aud` values. Empty: the provider's full resource name (the `audience` output), which is what the broker's rule should issue."
  type        = list(string)
  default     = []
}

variable "service_account_email" {
  description = "A service account the subjects may impersonate (roles/iam.workloadIdentityUser per subject). Null: grant IAM roles to the principals directly (the `principals` output)."
  type        = string
  default     = null
}

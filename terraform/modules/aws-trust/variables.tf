variable "broker_url" {
  description = "The broker's issuer URL: its server.public_url, exactly as in the `iss` of the tokens it issues (e.g. data.fedbroker_openid_configuration.this.issuer). Must be https."
  type        = string

  validation {
    condition     = startswith(var.broker_url, "https://")
    error_message = "AWS only trusts OIDC providers over https://."
  }
}

variable "audience" {
  description = "The `aud` the broker's rule issues (issue.audience) and the OIDC provider's client ID."
  type        = string
  default     = "sts.amazonaws.com"
}

variable "subjects" {
  description = "The exact `sub` values (the rules' issue.subject, rendered) that may assume the role."
  type        = list(string)

  validation {
    condition     = length(var.subjects) > 0 && alltrue([for s in var.subjects : length(s) > 0])
    error_message = "Give at least one non-empty subject: a role that trusts every subject of the broker is never what you want."
  }
}

variable "role_name" {
  description = "Name of the IAM role to create."
  type        = string
}

variable "role_description" {
  description = "Description of the role."
  type        = string
  default     = "Assumed with tokens issued by fedbroker"
}

variable "max_session_duration" {
  description = "Maximum session duration of the role, in seconds (3600 to 43200)."
  type        = number
  default     = 3600
}

variable "policy_arns" {
  description = "Managed policies to attach to the role."
  type        = list(string)
  default     = []
}

variable "allow_session_tags" {
  description = "Also allow sts:TagSession, needed when the rule issues the https://aws.amazon.com/tags claim."
  type        = bool
  default     = true
}

variable "create_oidc_provider" {
  description = "Create the IAM OIDC identity provider for the broker. Set false when the account already has one (one per URL per account) and pass oidc_provider_arn."
  type        = bool
  default     = true
}

variable "oidc_provider_arn" {
  description = "ARN of an existing IAM OIDC provider for broker_url (when create_oidc_provider is false)."
  type        = string
  default     = null
}

variable "thumbprint_list" {
  description = "Server certificate thumbprints for the OIDC provider. Leave null: IAM then fetches the certificate chain itself (or, for well-known CAs, verifies against its trusted root CAs)."
  type        = list(string)
  default     = null
}

variable "tags" {
  description = "Tags for the created resources."
  type        = map(string)
  default     = {}
}

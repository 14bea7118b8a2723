variable "issuer_name" {
  description = "Name of the fedbroker issuer for GitHub Actions (rules refer to it)."
  type        = string
  default     = "github-actions"
}

variable "broker_audiences" {
  description = "The `aud` values GitHub's OIDC tokens must carry to be accepted: what the workflow asks for (`core.getIDToken(audience)`), usually the broker's public URL."
  type        = list(string)
}

variable "issuer_url" {
  description = "The issuer URL. Null: GitHub.com's (https://token.actions.githubusercontent.com); set it for GitHub Enterprise Server."
  type        = string
  default     = null
}

variable "jwks_json" {
  description = "Static signing keys (a JWKS document as JSON) instead of discovery. For air-gapped brokers and tests."
  type        = string
  default     = null
}

variable "danger_allow_insecure" {
  description = "Allow an http:// or loopback issuer URL (development and tests only)."
  type        = bool
  default     = false
}

variable "rules" {
  description = <<-EOT
    Rules by name. Each admits the workflows of one repository (claims.repository) on
    the listed refs (claims.ref) and, when given, GitHub environments
    (claims.environment), to the listed targets:
      audiences      targets the rule grants (the requested audience, e.g. sts.amazonaws.com)
      issue_audience `aud` of the issued token (default: the requested target)
      issue_subject  `sub` of the issued token (a template; default "gha:{claims.repository}")
      lifetime       lifetime of the issued token (default 15m)
      claims_json    extra claims as JSON (jsonencode({...}))
      credentials_json  cloud credentials the issued token is traded for, as JSON
                        (jsonencode({aws = {role_arn = ..., session_name = ...}}))
  EOT
  type = map(object({
    repository       = string
    refs             = optional(list(string), ["refs/heads/main"])
    environments     = optional(list(string))
    audiences        = list(string)
    issue_audience   = optional(string)
    issue_subject    = optional(string, "gha:{claims.repository}")
    lifetime         = optional(string, "15m")
    claims_json      = optional(string)
    credentials_json = optional(string)
  }))

  validation {
    condition     = alltrue([for r in values(var.rules) : can(regex("^[^/]+/[^/]+$", r.repository))])
    error_message = "Each rule's repository is OWNER/NAME."
  }
}

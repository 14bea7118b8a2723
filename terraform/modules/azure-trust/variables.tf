variable "broker_url" {
  description = "The broker's issuer URL, exactly as in the `iss` of the tokens it issues (Entra compares it exactly, trailing slash included)."
  type        = string

  validation {
    condition     = startswith(var.broker_url, "https://")
    error_message = "Entra only trusts issuers over https://."
  }
}

variable "application_display_name" {
  description = "Display name of the app registration to create."
  type        = string
}

variable "subjects" {
  description = "One federated identity credential per fedbroker rule: credential name => the exact `sub` that rule issues (issue.subject, rendered; Entra matches it exactly, so give each rule a fixed issue.subject)."
  type        = map(string)

  validation {
    condition     = length(var.subjects) > 0 && length(var.subjects) <= 20
    error_message = "Give 1 to 20 subjects: Entra allows at most 20 federated identity credentials per application."
  }
}

variable "audience" {
  description = "The `aud` the broker's rules issue (issue.audience)."
  type        = string
  default     = "api://AzureADTokenExchange"
}

variable "owners" {
  description = "Object IDs of the application's owners."
  type        = list(string)
  default     = []
}

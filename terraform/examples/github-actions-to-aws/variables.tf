variable "broker_endpoint" {
  description = "The broker's admin API base URL (its public_url, or admin.listen's address)."
  type        = string
}

variable "repository" {
  description = "The GitHub repository (OWNER/NAME) whose workflows may deploy."
  type        = string
  default     = "acme/api"
}

variable "refs" {
  description = "The git refs whose workflow runs may deploy."
  type        = list(string)
  default     = ["refs/heads/main"]
}

variable "aws_region" {
  description = "AWS region for the provider (IAM is global)."
  type        = string
  default     = "us-east-1"
}

variable "policy_arns" {
  description = "Managed policies for the deploy role."
  type        = list(string)
  default     = []
}
